"""`iris config check|show`: validate a pipeline config or targets file, or print the effective one."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from iris_pipeline.config import load_pipeline_config, load_targets


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Validate and show configuration files.", no_args_is_help=True)

    @group.command("check")
    def check(
        path: Path = typer.Argument(..., help="pipeline config YAML to validate"),
        targets: bool = typer.Option(False, "--targets", help="the file is a targets file"),
    ) -> None:
        """Validate a config file; one line naming the bad key and a non-zero exit when it is invalid.

        A pipeline config's stage options are checked by the same validators `iris render` uses.
        """
        if targets:
            load_targets(path)
        else:
            from iris_pipeline.stages import check_stage_options

            check_stage_options(load_pipeline_config(path))
        typer.echo(f"{path}: ok")

    @group.command("show")
    def show(
        path: Path | None = typer.Argument(None, help="pipeline config YAML (default: built-in defaults)"),
        targets: bool = typer.Option(False, "--targets", help="show the targets instead"),
    ) -> None:
        """Print the effective configuration (defaults filled in) as YAML."""
        model = load_targets(path) if targets else load_pipeline_config(path)
        typer.echo(yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False))

    app.add_typer(group, name="config")
