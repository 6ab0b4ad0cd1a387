"""Peaks of the torch caching allocator, per CUDA device.

These only see what torch allocates: CUDA contexts, cuBLAS/cuDNN workspaces and TensorRT engines
are invisible here, so memory gates use the NVML figure (`nvml.NvmlSampler`); these peaks are
reported beside it (`torch_peak_reserved_gb`). In this project "GB" means GiB (2**30 bytes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from iris_pipeline.metrics.timing import DeviceLike, as_device

BYTES_PER_GB = 2**30


def _cuda_devices(devices: DeviceLike | Iterable[DeviceLike]) -> list[torch.device]:
    """The CUDA devices among `devices`; None = every device, but only once CUDA is initialised
    (reading allocator statistics must not create a CUDA context as a side effect)."""
    if devices is None:
        if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
            return []
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    if isinstance(devices, (torch.device, str, int)):
        devices = [devices]
    found: list[torch.device] = []
    for device in devices:
        device = as_device(device)
        if device.type == "cuda" and device not in found:
            found.append(device)
    return found


def torch_memory_peaks(devices: DeviceLike | Iterable[DeviceLike] = None) -> dict[str, dict[str, float]]:
    """{"cuda:N": {"allocated_gb", "reserved_gb"}} since the last reset, per CUDA device."""
    return {
        str(d): {
            "allocated_gb": torch.cuda.max_memory_allocated(d) / BYTES_PER_GB,
            "reserved_gb": torch.cuda.max_memory_reserved(d) / BYTES_PER_GB,
        }
        for d in _cuda_devices(devices)
    }


def torch_peak_gb(kind: str = "reserved", devices: DeviceLike | Iterable[DeviceLike] = None) -> float:
    """Max over devices of the allocator's peak `kind` ("reserved" or "allocated"); NaN without CUDA."""
    if kind not in ("reserved", "allocated"):
        raise ValueError(f"kind must be 'reserved' or 'allocated', got {kind!r}")
    peaks = [p[f"{kind}_gb"] for p in torch_memory_peaks(devices).values()]
    return max(peaks) if peaks else math.nan


def reset_torch_peaks(devices: DeviceLike | Iterable[DeviceLike] = None) -> None:
    """Start a new peak window on each CUDA device (e.g. after warm-up)."""
    for d in _cuda_devices(devices):
        torch.cuda.reset_peak_memory_stats(d)
