"""`python -m iris_pipeline.benchmark_runner [OPTIONS]`: the benchmark, same options as `iris bench`."""

from __future__ import annotations

import sys

import typer

from iris_pipeline.commands.bench import bench_command
from iris_pipeline.errors import IrisError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(bench_command)


def main() -> None:
    try:
        app(standalone_mode=False)
    except IrisError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
