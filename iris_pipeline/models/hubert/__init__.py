"""HuBERT-base content encoder (`hubert_base`) in the layout of RVC's fairseq checkpoint.

Accepted files (read with `weights_only=True`, never by running pickled code):
  * a fairseq-style dict whose `model` entry is the state dict (e.g. `{'model': state}`);
  * a plain state dict.
RVC's `hubert_base.pt` itself pickles fairseq / omegaconf objects, so `weights_only` refuses it,
as it refuses any file whose loading would run code.
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


def extract_state_dict(obj: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        return obj["model"]
    return obj


@dataclass(frozen=True)
class HubertSpec(ModelSpec):
    """Says what a refused file may be, without advice that would run its code."""

    def load(self, path: Path, size: str = "full") -> torch.nn.Module:
        try:
            return super().load(path, size)
        except CheckpointError as exc:
            if isinstance(exc.__cause__, pickle.UnpicklingError):
                raise CheckpointError(
                    f"{self.name}: refused to load {path}: it pickles objects beyond plain weights (as the "
                    f"fairseq original does, and as a malicious file may); it is not loaded, since unpickling "
                    f"it could run code: give the HuBERT-base weights as a plain state dict"
                ) from exc
            raise


SPEC = HubertSpec(
    name="hubert_base",
    factory=lambda size: HubertModel(FULL if size == "full" else TINY),
    extract_state_dict=extract_state_dict,
)

__all__ = ["FULL", "SPEC", "TINY", "HubertConfig", "HubertModel", "conv_output_frames"]
