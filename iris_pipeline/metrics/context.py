"""The context every result carries: code version, hardware, software, and the pipeline settings.

`capture_context()` returns a flat dict of strings/numbers/bools (so it fits CSV columns as well as
JSON). Whatever cannot be found is "n/a" (git metadata outside a checkout: "unknown"). It never
creates a CUDA context: GPU facts come from NVML, or from torch only once CUDA is in use.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import iris_pipeline
from iris_pipeline.metrics.nvml import load_nvml, nvml_handle

if TYPE_CHECKING:
    from iris_pipeline.config import PipelineConfig

NA = "n/a"
UNKNOWN = "unknown"
_GIT_TIMEOUT_S = 10


def repository_root() -> Path:
    """Directory that holds the `iris_pipeline` package (the repository root in a checkout)."""
    # this file is iris_pipeline/metrics/context.py (the package's own __file__ can be None when an
    # editable install resolves it as a namespace package)
    return Path(__file__).resolve().parents[2]


def iris_version() -> str:
    version = getattr(iris_pipeline, "__version__", None)
    if version:
        return str(version)
    try:
        return importlib.metadata.version("iris_pipeline")
    except importlib.metadata.PackageNotFoundError:
        return NA


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_info(root: Path | None = None) -> dict[str, Any]:
    """{"git_commit": sha or "unknown", "git_dirty": bool or "unknown"} of the checkout at `root`.

    Only a checkout whose top level is `root` counts: an installed package inside some other
    repository (or a virtualenv in one) must not report that repository's commit.
    """
    root = (root or repository_root()).resolve()
    top = _git("rev-parse", "--show-toplevel", cwd=root)
    if top is None or Path(top).resolve() != root:
        return {"git_commit": UNKNOWN, "git_dirty": UNKNOWN}
    commit = _git("rev-parse", "HEAD", cwd=root)
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=root)
    return {
        "git_commit": commit or UNKNOWN,
        "git_dirty": bool(status) if status is not None else UNKNOWN,
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cuda_version_text(number: int) -> str:
    """NVML's CUDA driver version 12040 -> "12.4"."""
    return f"{number // 1000}.{(number % 1000) // 10}"


def gpu_info() -> dict[str, Any]:
    """GPU name(s), count, driver and the driver's CUDA version via NVML (torch as a fallback)."""
    info: dict[str, Any] = {
        "gpu_name": NA, "gpu_count": 0, "gpu_names": NA, "gpu_memory_gb": NA,
        "driver_version": NA, "cuda_driver_version": NA, "gpu_compute_capability": NA,
    }
    nvml, _ = load_nvml()
    if nvml is not None:
        try:
            nvml.nvmlInit()
        except nvml.NVMLError:
            nvml = None
    if nvml is not None:
        try:
            # the GPUs this process can use (CUDA_VISIBLE_DEVICES), in torch's numbering
            visible = torch.cuda.device_count()
            if visible:
                handles = [nvml_handle(nvml, i) for i in range(visible)]
            else:
                handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
            count = len(handles)
            names = [_text(nvml.nvmlDeviceGetName(h)) for h in handles]
            info["gpu_count"] = count
            if names:
                info["gpu_name"] = names[0]
                info["gpu_names"] = "; ".join(names)
                info["gpu_memory_gb"] = round(nvml.nvmlDeviceGetMemoryInfo(handles[0]).total / 2**30, 2)
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handles[0])
                info["gpu_compute_capability"] = f"{major}.{minor}"
            info["driver_version"] = _text(nvml.nvmlSystemGetDriverVersion())
            info["cuda_driver_version"] = _cuda_version_text(int(nvml.nvmlSystemGetCudaDriverVersion()))
        except nvml.NVMLError:
            pass
        finally:
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError:
                pass
    if info["gpu_name"] == NA and torch.cuda.is_available() and torch.cuda.is_initialized():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if names:
            major, minor = torch.cuda.get_device_capability(0)
            info.update(gpu_name=names[0], gpu_names="; ".join(names), gpu_count=len(names),
                        gpu_compute_capability=f"{major}.{minor}")
    return info


def _package_version(module: str, distributions: tuple[str, ...]) -> str:
    """Version of an optional package without importing it where metadata says it."""
    for dist in distributions:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    if importlib.util.find_spec(module) is None:
        return NA
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:
        return NA


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or NA


def software_info() -> dict[str, Any]:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "iris_version": iris_version(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "cuda_runtime_version": torch.version.cuda or NA,
        "cudnn_version": str(cudnn) if cudnn else NA,
        "tensorrt_version": _package_version("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu11")),
        "numpy_version": _package_version("numpy", ("numpy",)),
    }


def host_info() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or NA,
    }


def config_info(config: PipelineConfig | None) -> dict[str, Any]:
    """Config hash, size, device, and precision/backend/device of each stage ("n/a" without one)."""
    from iris_pipeline.config import STAGE_ORDER

    info: dict[str, Any] = {"config_hash": NA, "size": NA, "device": NA, "stages": NA}
    for stage in STAGE_ORDER:
        info.update({f"{stage}_precision": NA, f"{stage}_backend": NA, f"{stage}_device": NA})
    if config is None:
        return info
    info.update(config_hash=config.config_hash(), size=config.size, device=config.device,
                stages=",".join(config.stages))
    for stage in config.stages:
        settings = config.stage(stage)
        info[f"{stage}_precision"] = settings.precision
        info[f"{stage}_backend"] = settings.backend
        info[f"{stage}_device"] = settings.device or config.device
    return info


def capture_context(config: PipelineConfig | None = None) -> dict[str, Any]:
    """Everything a result needs to be comparable with another: see the module docstring."""
    context: dict[str, Any] = {"timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    context.update(git_info())
    context.update(gpu_info())
    context.update(software_info())
    context.update(host_info())
    context.update(config_info(config))
    context["python_executable"] = sys.executable
    return context
