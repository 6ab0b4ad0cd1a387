"""RVC's pitch encoding: f0 in Hz -> coarse ids 1..255 on a mel scale between 50 and 1100 Hz."""

from __future__ import annotations

import math

import torch

F0_MIN = 50.0
F0_MAX = 1100.0
_MEL_MIN = 1127.0 * math.log(1.0 + F0_MIN / 700.0)
_MEL_MAX = 1127.0 * math.log(1.0 + F0_MAX / 700.0)


def coarse_pitch(f0: torch.Tensor) -> torch.Tensor:
    """Coarse pitch ids (int64, 1..255) of `f0` (Hz; 0 = unvoiced -> 1), computed in float64.

    mel = 1127 ln(1 + f0/700); voiced values are mapped linearly so that 50 Hz -> 1 and
    1100 Hz -> 255, clipped to [1, 255] and rounded half to even (numpy's rint, as official).
    """
    mel = 1127.0 * torch.log(1.0 + f0.double() / 700.0)
    voiced = mel > 0
    mel = torch.where(voiced, (mel - _MEL_MIN) * 254.0 / (_MEL_MAX - _MEL_MIN) + 1.0, mel)
    mel = mel.clamp(min=1.0, max=255.0)
    return torch.round(mel).long()
