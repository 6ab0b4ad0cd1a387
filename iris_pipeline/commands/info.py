"""`iris info`: the context every result row carries (code version, GPU, driver, CUDA, torch, ...)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("info")
    def info(
        config: Path | None = typer.Option(None, "--config", "-c", help="pipeline config YAML whose settings to include"),
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    ) -> None:
        """Show the environment and settings that every benchmark result records."""
        from iris_pipeline.config import load_pipeline_config
        from iris_pipeline.metrics import capture_context

        context = capture_context(load_pipeline_config(config) if config is not None else None)
        if as_json:
            typer.echo(json.dumps(context, indent=2, ensure_ascii=False, default=str))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title="iris_pipeline context", show_header=True, header_style="bold")
        table.add_column("key")
        table.add_column("value", overflow="fold")
        for key, value in context.items():
            table.add_row(key, str(value))
        Console().print(table)
