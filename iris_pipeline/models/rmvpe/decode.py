"""Salience over RMVPE's 360 pitch bins (20 cents each) -> f0 in Hz, as RVC decodes it."""

from __future__ import annotations

import torch

N_BINS = 360
CENTS_PER_BIN = 20.0
CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 relative to 10 Hz (~31.7 Hz)
LOCAL_RADIUS = 4  # weighted average over the 9 bins around the peak
DEFAULT_THRESHOLD = 0.03  # RVC's voicing threshold


def bin_cents(device: torch.device | None = None) -> torch.Tensor:
    return CENTS_PER_BIN * torch.arange(N_BINS, dtype=torch.float64, device=device) + CENTS_OFFSET


def salience_to_cents(salience: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """[..., 360] -> cents [...]: salience-weighted mean of the 9 bins around the argmax (bins past
    either end count as zero); 0 where the peak salience is <= threshold (unvoiced)."""
    center = salience.argmax(dim=-1, keepdim=True)
    offsets = torch.arange(-LOCAL_RADIUS, LOCAL_RADIUS + 1, device=salience.device)
    idx = center + offsets  # [..., 9]
    inside = (idx >= 0) & (idx < N_BINS)
    idx = idx.clamp(0, N_BINS - 1)
    weights = torch.gather(salience, -1, idx) * inside
    weights = weights.double()  # official sums the weights in fp32; float64 here (differences ~1e-7)
    cents = (weights * bin_cents(salience.device)[idx]).sum(-1) / weights.sum(-1)
    peak = salience.max(dim=-1).values
    return torch.where(peak > threshold, cents, torch.zeros_like(cents))


def cents_to_hz(cents: torch.Tensor) -> torch.Tensor:
    """f0 = 10 * 2^(cents / 1200), with 0 cents (unvoiced) -> 0 Hz."""
    f0 = 10.0 * torch.pow(2.0, cents / 1200.0)
    return torch.where(f0 == 10.0, torch.zeros_like(f0), f0)


def decode_f0(salience: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Salience [..., 360] -> f0 in Hz [...] (float64), 0 for unvoiced frames."""
    return cents_to_hz(salience_to_cents(salience.float(), threshold))
