"""scripts/gpu-check.sh: on a machine without a usable NVIDIA GPU it refuses with one line on stderr
and a non-zero exit, writing nothing; without OUTDIR it prints its usage line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "gpu-check.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: gpu-check.sh would run")
def test_refuses_on_a_cpu_machine_with_one_line(tmp_path):
    out = tmp_path / "gpu-check"
    result = _run(str(out))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gpu-check: no usable NVIDIA GPU here"), result.stderr
    assert not out.exists()  # nothing written


def test_without_outdir_it_prints_its_usage():
    result = _run()
    assert result.returncode == 2
    assert result.stderr.strip() == "gpu-check: usage: scripts/gpu-check.sh OUTDIR"
