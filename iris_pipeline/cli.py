"""The `iris` command. Each sub-command lives in `iris_pipeline.commands.<name>` and registers itself.

Errors caused by the user's input (`IrisError`) end the program with one line on stderr and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import errno
import importlib
import sys

import typer

from iris_pipeline.errors import IrisError

app = typer.Typer(
    name="iris",
    help="iris_pipeline: RVC -> VALL-E X -> FastPitch -> Wav2Lip talking-avatar inference and its perf suite.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Modules of iris_pipeline.commands, each with register(app). Order = order in `iris --help`.
COMMAND_MODULES: tuple[str, ...] = ("render", "info", "config", "avatar", "engines", "bench", "report", "finetune",
                                     "serve", "loadtest")

for _name in COMMAND_MODULES:
    importlib.import_module(f"iris_pipeline.commands.{_name}").register(app)


def main() -> None:
    # Standalone mode: click prints usage errors (exit 2) and turns Ctrl-C into "Aborted!" (exit 1);
    # our own input errors get one line and their exit code.
    try:
        app()
    except IrisError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a full disk is the environment, not a bug: one line, whatever wrote
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        typer.echo(f"error: no space left on the device{where}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
