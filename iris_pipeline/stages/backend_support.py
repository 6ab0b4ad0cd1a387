"""What every stage does with its backend settings: validate them and refuse the unsupported ones
(the prepared graph itself checks a TensorRT engine's shape profile).

A stage's `options` carry its own keys plus `backend` (the `BackendOptions` of
`iris_pipeline.backends`); `parse_stage_options` validates both halves, each with one-line errors.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from iris_pipeline.backends import BackendOptions, backend_options, without_backend_options
from iris_pipeline.config import StageConfig
from iris_pipeline.config import parse_options as config_options
from iris_pipeline.errors import ConfigError

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
