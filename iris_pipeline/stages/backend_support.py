"""What every stage does with its backend settings: refuse the unsupported ones, and check that a
TensorRT engine's shape profile covers the inputs it is handed. (The settings themselves are
validated with the pipeline config: `iris_pipeline.stage_options`.)
"""

from __future__ import annotations

import torch

from iris_pipeline.backends import GraphSpec
from iris_pipeline.config import StageConfig
from iris_pipeline.errors import ConfigError, InputError


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
