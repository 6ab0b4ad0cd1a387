"""Backend settings of a stage: `StageConfig.options["backend"]`, validated here.

A stage passes its `StageConfig` to `backend_options(config, stage_name)`; stages validating their own
options should leave the `backend` key to this model (`without_backend_options(options)` strips it
before their own validation). Unknown keys and bad values raise a
`ConfigError` naming `<stage>.options.backend.<key>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from iris_pipeline.config import StageConfig, parse_options
from iris_pipeline.errors import ConfigError

BACKEND_OPTIONS_KEY = "backend"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Int8Options(_Strict):
    """Explicit INT8 (ModelOpt Q/DQ): calibration set, calibration method, the precision of the
    non-quantised rest of the graph, and the accuracy gate (None = the graph's default threshold)."""

    calibration_samples: int = Field(default=16, ge=1, le=4096)
    held_out_samples: int = Field(default=4, ge=1, le=1024)
    seed: int = 0
    method: Literal["max", "entropy"] = "max"
    high_precision: Literal["fp16", "fp32"] = "fp16"
    quantize_attention: bool = False  # Q/DQ on attention's activation x activation matmuls too
    min_cosine: float | None = Field(default=None, ge=-1.0, le=1.0)
    max_abs_error: float | None = Field(default=None, gt=0.0)


class BackendOptions(_Strict):
    engine_dir: Path | None = None
    onnx_opset: int = Field(default=17, ge=13, le=21)
    # TensorRT
    workspace_gb: float = Field(default=4.0, gt=0.0, le=512.0)
    builder_optimization_level: int | None = Field(default=None, ge=0, le=5)
    strongly_typed: bool | None = None  # None: where the TensorRT in use supports it
    # eager
    autocast: bool = False  # fp16/bf16 by autocast (weights stay fp32) instead of casting the module
    # compile
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = (
        "default"
    )
    compile_dynamic: bool | None = None
    compile_fullgraph: bool = False
    aot: bool = False  # compile ahead of time (AOTInductor package in the engine cache)
    int8: Int8Options = Field(default_factory=Int8Options)


def parse_backend_options(data: Any, stage: str) -> BackendOptions:
    prefix = f"{stage}.options.{BACKEND_OPTIONS_KEY}"
    if data is None:
        return BackendOptions()
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: must be a mapping, got {type(data).__name__}")
    return parse_options(BackendOptions, data, prefix)


def backend_options(config: StageConfig, stage: str) -> BackendOptions:
    """The validated backend settings of one stage's config."""
    return parse_backend_options(config.options.get(BACKEND_OPTIONS_KEY), stage)


def without_backend_options(options: dict[str, Any]) -> dict[str, Any]:
    """A stage's `options` minus the `backend` key, for stages validating their own keys strictly."""
    return {k: v for k, v in options.items() if k != BACKEND_OPTIONS_KEY}
