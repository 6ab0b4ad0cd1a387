"""Measurement core: timers, memory (allocator + NVML), utilisation, statistics, result records.

Definitions of the figures: docs/figures.md.

Names are re-exported lazily, so that `from iris_pipeline.metrics import write_csv` (records and
statistics only) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, tuple[str, ...]] = {
    "context": ("capture_context", "git_info", "gpu_info", "repository_root"),
    "memory": ("BYTES_PER_GB", "reset_torch_peaks", "torch_memory_peaks", "torch_peak_gb"),
    "nvml": ("DEVICE_MINUS_BASELINE", "PER_PROCESS", "NvmlSampler", "NvmlSummary", "device_used_bytes", "load_nvml"),
    "records": ("NA", "append_history", "atomic_open", "columns_of", "format_cell", "parse_number", "read_csv",
                "read_history", "to_csv_text", "write_csv", "write_json"),
    "stats": ("PERCENTILES", "Summary", "bootstrap_median_ci", "min_samples_for_percentile",
              "percentile_lower_bound", "percentile_upper_bound"),
    "timing": ("RegionTimer", "as_device", "synced_timer", "synchronize", "wall_clock"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

