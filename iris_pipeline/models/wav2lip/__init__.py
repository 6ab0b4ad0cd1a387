"""Wav2Lip generator, official-checkpoint compatible (`wav2lip`).

Official files (`wav2lip.pth`, `wav2lip_gan.pth`) are `torch.save({"state_dict": ..., ...})` of a
DataParallel model, so every name starts with `module.`; other top-level keys (optimizer state,
global step, epoch) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from iris_pipeline.errors import CheckpointError
from iris_pipeline.models.checkpoint import strip_prefix
from iris_pipeline.models.spec import ModelSpec
from iris_pipeline.models.wav2lip.generator import (
    FACE_SIZE,
    FULL,
    MEL_BINS,
    MEL_STEP,
    TINY,
    Wav2Lip,
    Wav2LipWidths,
    build_generator,
)


def extract_state_dict(obj: Any) -> Mapping[str, torch.Tensor]:
    """{'state_dict': {'module.x': ...}} (the official layout) or a plain state dict -> plain names."""
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"wav2lip: checkpoint holds a {type(obj).__name__}, expected a dict with 'state_dict'")
    return strip_prefix(obj, "module.")


SPEC = ModelSpec(name="wav2lip", factory=build_generator, extract_state_dict=extract_state_dict)

__all__ = ["FACE_SIZE", "FULL", "MEL_BINS", "MEL_STEP", "SPEC", "TINY", "Wav2Lip", "Wav2LipWidths",
           "extract_state_dict"]
