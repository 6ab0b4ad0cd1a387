"""IRIS_REQUIRE_GPU=1: a session collecting gpu tests without a usable CUDA device fails at collection
with one line (the GPU perf workflow sets it, so a gate that did not run on a GPU never passes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from iris_pipeline.metrics import repository_root


def _pytest(*args: str, require: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "IRIS_REQUIRE_GPU"}
    if require is not None:
        env["IRIS_REQUIRE_GPU"] = require
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
                          cwd=repository_root(), env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the refusal cannot be shown here")
def test_required_gpu_missing_fails_collection_with_one_line():
    proc = _pytest("-m", "gpu", "--collect-only", "tests/perf/test_codecs_gpu.py", require="1")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ERROR: IRIS_REQUIRE_GPU=1 but"), proc.stderr
    assert "torch.cuda.is_available() is False" in lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_the_requirement_gpu_tests_are_skipped():
    proc = _pytest("-m", "gpu", "tests/perf/test_codecs_gpu.py", require=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipped" in proc.stdout, proc.stdout + proc.stderr
