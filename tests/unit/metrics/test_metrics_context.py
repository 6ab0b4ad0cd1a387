"""Context capture (what every result row carries) and the `iris info` command."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from iris_pipeline.config import STAGE_ORDER, PipelineConfig, VallexConfig, Wav2LipConfig
from iris_pipeline.metrics import capture_context, git_info, repository_root

REQUIRED = [
    "git_commit", "git_dirty", "gpu_name", "driver_version", "cuda_driver_version", "cuda_runtime_version",
    "torch_version", "tensorrt_version", "config_hash", "host", "timestamp_utc", "python_version", "cpu_model",
    *[f"{stage}_{what}" for stage in STAGE_ORDER for what in ("precision", "backend")],
]


def _git_head(root: Path) -> str | None:
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def test_context_has_every_key_and_the_checkout_commit() -> None:
    was_initialised = torch.cuda.is_initialized()
    context = capture_context()
    missing = [k for k in REQUIRED if k not in context]
    assert not missing, f"context lacks {missing}"
    assert all(v is not None and v != "" for v in context.values())
    head = _git_head(repository_root())
    assert context["git_commit"] == (head or "unknown")
    if head:
        assert isinstance(context["git_dirty"], bool)
    assert context["torch_version"] == torch.__version__
    assert context["cuda_runtime_version"] == (torch.version.cuda or "n/a")
    stamp = datetime.fromisoformat(context["timestamp_utc"])
    assert stamp.utcoffset() == timezone.utc.utcoffset(None)
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 120
    assert context["config_hash"] == "n/a"
    assert context["vallex_backend"] == "n/a"
    assert torch.cuda.is_initialized() == was_initialised  # capturing never creates a CUDA context
    json.dumps(context)  # fits a JSON record as is


def test_context_carries_the_pipeline_settings() -> None:
    config = PipelineConfig(size="tiny", device="cpu", vallex=VallexConfig(precision="bf16", backend="compile"),
                            wav2lip=Wav2LipConfig(precision="int8", backend="tensorrt", device="cuda:1"))
    context = capture_context(config)
    assert context["config_hash"] == config.config_hash()
    assert (context["vallex_precision"], context["vallex_backend"]) == ("bf16", "compile")
    assert (context["wav2lip_precision"], context["wav2lip_backend"]) == ("int8", "tensorrt")
    assert context["wav2lip_device"] == "cuda:1"
    assert context["rvc_device"] == "cpu"
    assert context["size"] == "tiny"
    assert context["stages"] == "rvc,vallex,fastpitch,wav2lip"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_git_info_outside_a_checkout_or_below_its_top_is_unknown(tmp_path: Path) -> None:
    assert git_info(tmp_path) == {"git_commit": "unknown", "git_dirty": "unknown"}
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "site-packages").mkdir()
    # a package installed somewhere inside another repository must not claim its commit
    assert git_info(tmp_path / "site-packages")["git_commit"] == "unknown"


def test_iris_info_prints_a_table_and_json() -> None:
    from iris_pipeline.cli import app

    runner = CliRunner()
    as_json = runner.invoke(app, ["info", "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert set(REQUIRED) <= set(data)
    table = runner.invoke(app, ["info"])
    assert table.exit_code == 0, table.output
    assert "git_commit" in table.output
    assert data["torch_version"] in table.output


def test_iris_info_with_a_config_file(tmp_path: Path) -> None:
    from iris_pipeline.cli import app

    config = tmp_path / "pipeline.yaml"
    config.write_text("size: tiny\nvallex:\n  precision: bf16\n")
    result = CliRunner().invoke(app, ["info", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["vallex_precision"] == "bf16"
    assert data["size"] == "tiny"
    assert data["config_hash"] != "n/a"


def test_gpu_facts_come_from_nvml_where_it_works(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import iris_pipeline.metrics.context as context_module

    class Error(Exception):
        pass

    fake = SimpleNamespace(
        NVMLError=Error,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"][h],
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=80 * 2**30),
        nvmlDeviceGetCudaComputeCapability=lambda h: (9, 0),
        nvmlSystemGetDriverVersion=lambda: b"550.54.15",
        nvmlSystemGetCudaDriverVersion=lambda: 12040,
    )
    monkeypatch.setattr(context_module, "load_nvml", lambda: (fake, None))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    info = context_module.gpu_info()
    assert info["gpu_name"] == "NVIDIA H100 80GB HBM3"
    assert info["gpu_count"] == 2
    assert info["driver_version"] == "550.54.15"
    assert info["cuda_driver_version"] == "12.4"
    assert info["gpu_compute_capability"] == "9.0"
    assert info["gpu_memory_gb"] == 80.0
