"""HuBERT-base content encoder (`hubert_base`) in the layout of RVC's fairseq checkpoint.

Accepted files (read with `weights_only=True`, never by running pickled code):
  * a fairseq-style dict whose `model` entry is the state dict (e.g. `{'model': state}`);
  * a plain state dict.
RVC's `hubert_base.pt` itself pickles fairseq / omegaconf objects, so `weights_only` refuses it;
convert it once, in an environment where fairseq is installed, with `CONVERT_COMMAND`.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iris_pipeline.errors import CheckpointError
from iris_pipeline.models.hubert.model import FULL, TINY, HubertConfig, HubertModel, conv_output_frames
from iris_pipeline.models.spec import ModelSpec

CONVERT_COMMAND = (
    "python -c \"import torch; c = torch.load('hubert_base.pt', map_location='cpu', weights_only=False); "
    "torch.save({'model': c['model']}, 'hubert_base.weights.pt')\""
)


def extract_state_dict(obj: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        return obj["model"]
    return obj


@dataclass(frozen=True)
class HubertSpec(ModelSpec):
    """Explains how to convert the official fairseq file when `weights_only` refuses it."""

    def load(self, path: Path, size: str = "full") -> torch.nn.Module:
        try:
            return super().load(path, size)
        except CheckpointError as exc:
            if isinstance(exc.__cause__, pickle.UnpicklingError):
                raise CheckpointError(
                    f"{self.name}: {path} pickles fairseq objects (the original fairseq hubert_base.pt), "
                    f"which is not loaded here because unpickling it could run code; convert it once where "
                    f"fairseq is installed: {CONVERT_COMMAND} and pass hubert_base.weights.pt"
                ) from exc
            raise


SPEC = HubertSpec(
    name="hubert_base",
    factory=lambda size: HubertModel(FULL if size == "full" else TINY),
    extract_state_dict=extract_state_dict,
)

__all__ = ["CONVERT_COMMAND", "FULL", "SPEC", "TINY", "HubertConfig", "HubertModel", "conv_output_frames"]
