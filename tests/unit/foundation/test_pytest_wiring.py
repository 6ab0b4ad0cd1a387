"""The root conftest: gpu tests skip with their reason on a CPU machine; options parse and validate."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]

SAMPLE = '''
import pytest

@pytest.mark.gpu
def test_needs_cuda(device):
    assert device.type == "cuda"

@pytest.mark.gpu
def test_uses_options(clip_lengths, targets, engine_dir):
    assert clip_lengths

def test_cpu_options(clip_lengths, targets, engine_dir):
    assert clip_lengths == [5.0, 10.0, 30.0] or clip_lengths == [2.5, 7.0]
    from iris_pipeline.config import load_targets
    assert targets == load_targets()  # the shipped targets when --targets is not given
    assert engine_dir.is_dir()
'''


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs CUDA\n    slow: slow\n")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without CUDA")
def test_gpu_marker_skips_with_reason_without_cuda(tmp_path: Path):
    proc = _run(tmp_path, "-m", "gpu", "--engine-dir", str(tmp_path / "eng"))
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "2 skipped" in out
    assert "passed" not in out.split("\n")[-2]
    assert "error" not in out.lower()
    assert "needs a CUDA device" in out


def test_options_reach_fixtures(tmp_path: Path):
    proc = _run(tmp_path, "-m", "not gpu", "--clip-lengths", "2.5,7", "--engine-dir", str(tmp_path / "eng"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert (tmp_path / "eng").is_dir()


def test_bad_clip_lengths_is_a_usage_error(tmp_path: Path):
    proc = _run(tmp_path, "--clip-lengths", "5,abc")
    assert proc.returncode != 0
    assert "--clip-lengths" in proc.stdout + proc.stderr
