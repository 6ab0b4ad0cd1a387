"""RMVPE pitch estimator (`rmvpe`): `E2E(4, 1, (2, 2))` plus its mel front end and RVC's decoding.

The checkpoint `rmvpe.pt` is a plain state dict; files without BatchNorm's `num_batches_tracked`
entries are accepted (they carry no information at inference).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.nn import functional as F

from iris_pipeline.models.rmvpe.decode import DEFAULT_THRESHOLD, decode_f0
from iris_pipeline.models.rmvpe.frontend import HOP_LENGTH, log_mel
from iris_pipeline.models.rmvpe.network import E2E, FULL, TINY, RMVPEConfig
from iris_pipeline.models.spec import ModelSpec

_FRAME_MULTIPLE = 32  # five 2x poolings in time


def extract_state_dict(obj: Any) -> Mapping[str, torch.Tensor]:
    """The plain state dict, with any missing `num_batches_tracked` filled in (as BatchNorm itself would)."""
    if not isinstance(obj, Mapping):
        return obj
    state = dict(obj)
    for key in list(state):
        if key.endswith(".running_mean"):
            tracked = key[: -len("running_mean")] + "num_batches_tracked"
            state.setdefault(tracked, torch.tensor(0, dtype=torch.long))
    return state


@torch.no_grad()
def salience(model: E2E, audio16k: torch.Tensor) -> torch.Tensor:
    """audio [B, N] at 16 kHz -> salience [B, N // 160 + 1, 360] (model dtype).

    Mel frames are padded on the right with zeros to a multiple of 32, as the official `mel2hidden`
    does. The padding is not cosmetic: the bidirectional GRU carries it back through the whole clip.
    """
    mel = log_mel(audio16k)
    n_frames = mel.shape[-1]
    mel = F.pad(mel, (0, -n_frames % _FRAME_MULTIPLE))
    dtype = next(model.parameters()).dtype
    return model(mel.to(dtype))[:, :n_frames]


@torch.no_grad()
def estimate_f0(model: E2E, audio16k: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """audio [B, N] at 16 kHz -> f0 in Hz [B, N // 160 + 1] (float32; 0 = unvoiced), one value per 10 ms."""
    return decode_f0(salience(model, audio16k).float(), threshold).float()


SPEC = ModelSpec(
    name="rmvpe",
    factory=lambda size: E2E(FULL if size == "full" else TINY),
    extract_state_dict=extract_state_dict,
)

__all__ = ["DEFAULT_THRESHOLD", "E2E", "FULL", "HOP_LENGTH", "SPEC", "TINY", "RMVPEConfig", "decode_f0",
           "estimate_f0", "salience"]
