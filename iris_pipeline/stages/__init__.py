"""Stages: one per model of the chain, each with `prepare()` once and `run(...)` per chunk."""

from __future__ import annotations

import importlib
from typing import Any

import torch

from iris_pipeline.config import PipelineConfig
from iris_pipeline.stages.base import Stage

# stage name -> (module, class); imported lazily so that one stage never loads another's models
STAGE_CLASSES: dict[str, tuple[str, str]] = {
    "rvc": ("iris_pipeline.stages.rvc", "RVCStage"),
    "vallex": ("iris_pipeline.stages.vallex", "VallexStage"),
    "fastpitch": ("iris_pipeline.stages.fastpitch", "FastPitchStage"),
    "wav2lip": ("iris_pipeline.stages.wav2lip", "Wav2LipStage"),
}


def stage_class(name: str) -> type[Stage]:
    module, cls = STAGE_CLASSES[name]
    return getattr(importlib.import_module(module), cls)


def build_stage(name: str, config: PipelineConfig, device: torch.device | str) -> Stage:
    """The stage `name` configured by the pipeline config, on `device` (not yet prepared)."""
    extra: dict[str, Any] = {}
    if name == "fastpitch":
        extra["lipsync_features"] = config.lipsync_features
    return stage_class(name)(config.stage(name), size=config.size, device=device, seed=config.seed, **extra)


def check_stage_options(config: PipelineConfig) -> None:
    """Check what only a stage knows (the backends it supports, its lip-sync mode) exactly as building
    the stage for a render does: by building it. Building loads no model; a refusal is a ConfigError.
    (The option values themselves were validated when the config was loaded.)"""
    for name in config.stages:
        build_stage(name, config, "cpu")


__all__ = ["STAGE_CLASSES", "Stage", "build_stage", "check_stage_options", "stage_class"]
