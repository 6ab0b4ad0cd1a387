"""S3FD face detector, official-checkpoint compatible (`s3fd`).

The official `s3fd.pth` (face-alignment's `s3fd-619a316812.pth`, used by Wav2Lip) is a plain
state dict saved with `torch.save(model.state_dict())`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from iris_pipeline.errors import CheckpointError
from iris_pipeline.models.s3fd.detection import (
    INPUT_MEAN,
    best_face_box,
    decode_candidates,
    detect_faces,
    faces_from_outputs,
    nms,
    preprocess,
)
from iris_pipeline.models.s3fd.network import FULL, HEAD_STRIDES, S3FD, TINY, S3FDWidths, build_network
from iris_pipeline.models.spec import ModelSpec


def extract_state_dict(obj: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]  # tolerate a wrapped copy
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"s3fd: checkpoint holds a {type(obj).__name__}, expected a state dict")
    return obj


SPEC = ModelSpec(name="s3fd", factory=build_network, extract_state_dict=extract_state_dict)

__all__ = ["FULL", "HEAD_STRIDES", "INPUT_MEAN", "S3FD", "SPEC", "TINY", "S3FDWidths", "best_face_box",
           "decode_candidates", "detect_faces", "faces_from_outputs", "nms", "preprocess"]
