"""The `iris` command: every sub-command is listed, and bad usage is one line with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

from iris_pipeline.cli import COMMAND_MODULES

EXPECTED = {"render", "bench", "report", "engines", "avatar", "finetune", "finetune-bench", "info", "config", "serve",
            "loadtest"}


def _iris(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iris_pipeline", *args], capture_output=True, text=True,
                          timeout=300, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_help_lists_every_command():
    proc = _iris("--help")
    assert proc.returncode == 0, proc.stderr
    listed = {line.strip("│ ").split()[0] for line in proc.stdout.splitlines()
              if line.startswith("│ ") and line.strip("│ ").strip()}
    assert EXPECTED <= listed, EXPECTED - listed
    assert set(COMMAND_MODULES) <= {"render", "info", "config", "avatar", "engines", "report", "bench", "finetune",
                                    "serve", "loadtest"}


def test_unknown_command_is_a_usage_error():
    proc = _iris("renderr")
    assert proc.returncode == 2
    assert "No such command" in proc.stderr
