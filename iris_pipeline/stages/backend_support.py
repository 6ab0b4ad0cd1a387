"""What every stage does with its backend settings: validate them, refuse the unsupported ones, and
check that a TensorRT engine's shape profile covers the inputs it is handed.

A stage's `options` carry its own keys plus `backend` (the `BackendOptions` of
`iris_pipeline.backends`); `parse_stage_options` validates both halves, each with one-line errors.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from pydantic import BaseModel

from iris_pipeline.backends import BackendOptions, GraphSpec, backend_options, without_backend_options
from iris_pipeline.config import StageConfig
from iris_pipeline.config import parse_options as config_options
from iris_pipeline.errors import ConfigError, InputError

OptionsModel = TypeVar("OptionsModel", bound=BaseModel)


def parse_own_options(options: dict[str, Any], model: type[OptionsModel], stage: str) -> OptionsModel:
    """The stage's own keys of `options` (the `backend` sub-mapping is validated apart)."""
    return config_options(options=without_backend_options(options), model=model, prefix=f"{stage}.options")


def parse_stage_options(
    config: StageConfig, model: type[OptionsModel], stage: str
) -> tuple[OptionsModel, BackendOptions]:
    """(the stage's own options, its backend options), both validated."""
    return parse_own_options(config.options, model, stage), backend_options(config, stage)


def require_backend(config: StageConfig, stage: str, supported: tuple[str, ...], why: str) -> None:
    """Refuse a backend the stage does not implement, with one line saying why and what to use."""
    if config.backend not in supported:
        raise ConfigError(f"{stage}.backend: {config.backend} is not supported {why}; use {' or '.join(supported)}")


def check_profile(spec: GraphSpec, inputs: tuple[torch.Tensor, ...], stage: str) -> None:
    """A TensorRT engine only runs shapes inside the profile it was built for: say so before it fails."""
    for tensor_spec, tensor in zip(spec.inputs, inputs, strict=True):
        for dim, size in zip(tensor_spec.dims, tensor.shape, strict=True):
            if isinstance(dim, str):
                lo, _, hi = spec.profile.ranges[dim]
                if not lo <= size <= hi:
                    raise InputError(f"{stage}: {tensor_spec.name} has {dim}={size}, outside the {lo}..{hi} the "
                                     f"tensorrt engine {spec.name} was built for")
