"""What every stage does with its backend settings: refuse the unsupported ones (the prepared graph
itself checks a TensorRT engine's shape profile). The settings are validated with the pipeline
config: `iris_pipeline.stage_options`.
"""

from __future__ import annotations

from iris_pipeline.config import StageConfig
from iris_pipeline.errors import ConfigError


def require_backend(config: StageConfig, stage: str, supported: tuple[str, ...], why: str) -> None:
    """Refuse a backend the stage does not implement, with one line saying why and what to use."""
    if config.backend not in supported:
        raise ConfigError(f"{stage}.backend: {config.backend} is not supported {why}; use {' or '.join(supported)}")
