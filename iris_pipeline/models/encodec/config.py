"""Hyper-parameters of the EnCodec 24 kHz model: the official `full` one and a `tiny` one for tests."""

from __future__ import annotations

import math
from dataclasses import dataclass

from iris_pipeline.errors import ConfigError


@dataclass(frozen=True)
class EncodecConfig:
    sample_rate: int = 24_000
    channels: int = 1
    n_filters: int = 32
    dimension: int = 128
    ratios: tuple[int, ...] = (8, 5, 4, 2)  # decoder order; the encoder uses them reversed
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    compress: int = 2
    lstm_layers: int = 2
    bins: int = 1024
    target_bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0, 24.0)
    default_bandwidth: float = 6.0  # what VALL-E X sets: 8 codebooks

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> int:
        return math.ceil(self.sample_rate / self.hop_length)

    @property
    def bandwidth_per_codebook(self) -> float:
        """bit/s one codebook costs: log2(bins) bits per frame."""
        return math.log2(self.bins) * self.frame_rate

    @property
    def n_q(self) -> int:
        """Codebooks the model holds: as many as the largest target bandwidth needs (official formula)."""
        return int(1000 * self.target_bandwidths[-1] // (self.frame_rate * 10))

    def codebooks_for_bandwidth(self, kbps: float) -> int:
        return int(max(1, math.floor(kbps * 1000 / self.bandwidth_per_codebook)))


# Tiny keeps the hop (320), the codebook size (1024, so VALL-E X codes stay valid) and the
# bandwidth -> codebook rule (6 kbps = 8); it shrinks channels and keeps 16 codebooks (12 kbps),
# which is what Vocos needs for its codebook copy.
CONFIGS = {
    "full": EncodecConfig(),
    "tiny": EncodecConfig(n_filters=4, dimension=32, target_bandwidths=(1.5, 3.0, 6.0, 12.0)),
}


def encodec_config(size: str) -> EncodecConfig:
    if size not in CONFIGS:
        raise ConfigError(f"encodec_24khz: size must be one of {sorted(CONFIGS)}, got {size!r}")
    return CONFIGS[size]
