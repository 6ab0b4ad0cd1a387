"""SEANet encoder and decoder of EnCodec (causal, reflect padding, weight norm, LSTM with skip).

`model` is an `nn.Sequential` whose indices match the official ones (ELUs included), because the
state-dict names carry those indices.
"""

from __future__ import annotations

import torch
from torch import nn

from iris_pipeline.models.encodec.config import EncodecConfig
from iris_pipeline.models.encodec.conv import CausalConv1d, CausalConvTranspose1d


class ResidualUnit(nn.Module):
    """shortcut(x) + [ELU, conv k3 C->C/2, ELU, conv k1 C/2->C](x); the shortcut is a 1x1 conv."""

    def __init__(self, channels: int, kernel_size: int, compress: int):
        super().__init__()
        hidden = channels // compress
        self.block = nn.Sequential(
            nn.ELU(),
            CausalConv1d(channels, hidden, kernel_size),
            nn.ELU(),
            CausalConv1d(hidden, channels, 1),
        )
        self.shortcut = CausalConv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class LSTMWithSkip(nn.Module):
    """Unidirectional LSTM over time from a zero state, added to its input; [B, C, T] in and out."""

    def __init__(self, channels: int, num_layers: int):
        super().__init__()
        self.lstm = nn.LSTM(channels, channels, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)
        y, _ = self.lstm(x)
        return (y + x).permute(1, 2, 0)


class SEANetEncoder(nn.Module):
    """[B, 1, N] waveform -> [B, dimension, ceil(N / hop)] latent."""

    def __init__(self, config: EncodecConfig):
        super().__init__()
        width = config.n_filters
        layers: list[nn.Module] = [CausalConv1d(config.channels, width, config.kernel_size)]
        for ratio in reversed(config.ratios):
            layers += [
                ResidualUnit(width, config.residual_kernel_size, config.compress),
                nn.ELU(),
                CausalConv1d(width, width * 2, kernel_size=2 * ratio, stride=ratio),
            ]
            width *= 2
        layers += [
            LSTMWithSkip(width, config.lstm_layers),
            nn.ELU(),
            CausalConv1d(width, config.dimension, config.last_kernel_size),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.model(wav)


class SEANetDecoder(nn.Module):
    """[B, dimension, F] latent -> [B, 1, F * hop] waveform (no output activation)."""

    def __init__(self, config: EncodecConfig):
        super().__init__()
        width = config.n_filters * 2 ** len(config.ratios)
        layers: list[nn.Module] = [
            CausalConv1d(config.dimension, width, config.kernel_size),
            LSTMWithSkip(width, config.lstm_layers),
        ]
        for ratio in config.ratios:
            layers += [
                nn.ELU(),
                CausalConvTranspose1d(width, width // 2, kernel_size=2 * ratio, stride=ratio),
                ResidualUnit(width // 2, config.residual_kernel_size, config.compress),
            ]
            width //= 2
        layers += [nn.ELU(), CausalConv1d(width, config.channels, config.last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model(latent)
