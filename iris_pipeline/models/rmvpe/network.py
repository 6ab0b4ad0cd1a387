"""RMVPE's network `E2E(4, 1, (2, 2))`: a residual U-Net over the log-mel image, then a BiGRU -> 360 pitch bins."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

N_MELS = 128
N_BINS = 360


@dataclass(frozen=True)
class RMVPEConfig:
    n_blocks: int = 4  # ConvBlockRes per encoder / intermediate / decoder block
    en_de_layers: int = 5
    inter_layers: int = 4
    en_out_channels: int = 16
    gru_hidden: int = 256
    bn_momentum: float = 0.01


FULL = RMVPEConfig()
TINY = RMVPEConfig(n_blocks=1, inter_layers=1, en_out_channels=4, gru_hidden=16)


def _bn(channels: int, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=momentum)


class ConvBlockRes(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, momentum: float):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), _bn(out_channels, momentum), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), _bn(out_channels, momentum), nn.ReLU(),
        )
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + (x if self.shortcut is None else self.shortcut(x))


class ResEncoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, n_blocks: int, momentum: float, pool: bool):
        super().__init__()
        self.conv = nn.ModuleList([ConvBlockRes(in_channels, out_channels, momentum)] +
                                  [ConvBlockRes(out_channels, out_channels, momentum) for _ in range(n_blocks - 1)])
        self.pool = nn.AvgPool2d(2) if pool else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.conv:
            x = block(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: RMVPEConfig):
        super().__init__()
        self.bn = _bn(1, cfg.bn_momentum)
        self.layers = nn.ModuleList()
        in_ch, out_ch = 1, cfg.en_out_channels
        for _ in range(cfg.en_de_layers):
            self.layers.append(ResEncoderBlock(in_ch, out_ch, cfg.n_blocks, cfg.bn_momentum, pool=True))
            in_ch, out_ch = out_ch, out_ch * 2
        self.out_channels = in_ch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        x = self.bn(x)
        for layer in self.layers:
            x = layer(x)
            skips.append(x)
            x = layer.pool(x)
        return x, skips


class Intermediate(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, cfg: RMVPEConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            ResEncoderBlock(in_channels if i == 0 else out_channels, out_channels, cfg.n_blocks, cfg.bn_momentum,
                            pool=False) for i in range(cfg.inter_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ResDecoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, n_blocks: int, momentum: float):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=False),
            _bn(out_channels, momentum), nn.ReLU(),
        )
        self.conv2 = nn.ModuleList([ConvBlockRes(2 * out_channels, out_channels, momentum)] +
                                   [ConvBlockRes(out_channels, out_channels, momentum) for _ in range(n_blocks - 1)])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.conv1(x), skip), dim=1)
        for block in self.conv2:
            x = block(x)
        return x


class Decoder(nn.Module):
    def __init__(self, in_channels: int, cfg: RMVPEConfig):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(cfg.en_de_layers):
            self.layers.append(ResDecoderBlock(in_channels, in_channels // 2, cfg.n_blocks, cfg.bn_momentum))
            in_channels //= 2

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for layer, skip in zip(self.layers, reversed(skips), strict=True):
            x = layer(x, skip)
        return x


class DeepUnet(nn.Module):
    def __init__(self, cfg: RMVPEConfig):
        super().__init__()
        self.encoder = Encoder(cfg)
        deepest = self.encoder.out_channels * 2
        self.intermediate = Intermediate(self.encoder.out_channels, deepest, cfg)
        self.decoder = Decoder(deepest, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.encoder(x)
        return self.decoder(self.intermediate(x), skips)


class BiGRU(nn.Module):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, num_layers=1, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]


class E2E(nn.Module):
    """log-mel [B, 128, T] (T a multiple of 32) -> pitch salience [B, T, 360] in (0, 1)."""

    def __init__(self, cfg: RMVPEConfig = FULL):
        super().__init__()
        self.cfg = cfg
        self.unet = DeepUnet(cfg)
        self.cnn = nn.Conv2d(cfg.en_out_channels, 3, 3, padding=1)
        self.fc = nn.Sequential(BiGRU(3 * N_MELS, cfg.gru_hidden), nn.Linear(2 * cfg.gru_hidden, N_BINS),
                                nn.Dropout(0.25), nn.Sigmoid())

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = mel.transpose(-1, -2).unsqueeze(1)  # [B, 1, T, 128]
        x = self.cnn(self.unet(x)).transpose(1, 2).flatten(-2)  # [B, T, 3 * 128]
        return self.fc(x)
