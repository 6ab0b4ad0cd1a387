"""Seeded weights that the parity fixtures and the parity tests both build, so no weights are stored.

`seeded_weights(template, seed)` fills a state dict with values that depend only on each entry's
name, shape and the seed (not on the order of the entries or on the code that owns them): the
official class (in tools/parity) and our class (in the tests) get the same numbers whenever their
state dicts have the same names and shapes, which a strict load guarantees. Values are scaled like
a trained network's (weights ~ 1/sqrt(fan-in), BatchNorm variances near 1) so activations stay finite.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import torch


def seeded_weights(template: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    out = {}
    for name, ref in template.items():
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        if not ref.dtype.is_floating_point:
            out[name] = torch.zeros_like(ref)
            continue
        noise = torch.randn(ref.shape, generator=gen, dtype=torch.float32)
        if name.endswith("running_var"):
            value = 1.0 + 0.25 * noise.tanh()
        elif name.endswith("running_mean") or name.endswith("bias") or ref.dim() == 0:
            value = 0.1 * noise
        elif ref.dim() == 1:  # norm scales
            value = 1.0 + 0.1 * noise
        else:
            fan_in = max(1, ref[0].numel())
            value = noise / fan_in ** 0.5
        out[name] = value.to(ref.dtype)
    return out


def with_seeded_weights(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """`model` holding `seeded_weights(its state dict, seed)` (loaded strictly), in eval mode."""
    model.load_state_dict(seeded_weights(model.state_dict(), seed))
    return model.eval()
