"""The Wav2Lip generator (`models/wav2lip.py:Wav2Lip` of Rudrabha/Wav2Lip).

A face encoder (96x96, 6 channels: masked target crop + reference crop) and an audio encoder
(mel window [1, 80, 16]) meet at a 1x1 bottleneck; a U-Net style decoder with skip connections
to every face-encoder level renders the 96x96 RGB crop through a sigmoid. The GAN checkpoint's
generator is this same class.

`Wav2LipWidths` holds every channel count; the official values are the defaults, and the tiny
config scales them down for CPU tests without changing the structure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from iris_pipeline.models.wav2lip.layers import ConvBlock, TransposedConvBlock

FACE_SIZE = 96
MEL_BINS = 80
MEL_STEP = 16  # mel frames per window (0.2 s at 80 frames/s)


@dataclass(frozen=True)
class Wav2LipWidths:
    face: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 512)  # face-encoder levels, 96x96 -> 1x1
    audio: tuple[int, ...] = (32, 64, 128, 256, 512)  # audio-encoder stages; last = embedding
    decoder: tuple[int, ...] = (512, 512, 512, 384, 256, 128, 64)  # decoder levels, 1x1 -> 96x96
    output_hidden: int = 32

    def scaled(self, divisor: int) -> Wav2LipWidths:
        def div(values: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(max(2, v // divisor) for v in values)

        return Wav2LipWidths(div(self.face), div(self.audio), div(self.decoder),
                             max(2, self.output_hidden // divisor))


FULL = Wav2LipWidths()
TINY = FULL.scaled(8)


def _face_encoder(w: tuple[int, ...]) -> nn.ModuleList:
    """Seven levels: 96 -> 96 -> 48 -> 24 -> 12 -> 6 -> 3 -> 1 pixels; residual blocks per level."""
    residual_blocks = (0, 2, 3, 2, 2, 1)  # after the strided conv of levels 1..6
    levels = [nn.Sequential(ConvBlock(6, w[0], kernel_size=7, stride=1, padding=3))]
    for level in range(1, 6):
        blocks = [ConvBlock(w[level - 1], w[level], kernel_size=3, stride=2, padding=1)]
        blocks += [ConvBlock(w[level], w[level], kernel_size=3, stride=1, padding=1, residual=True)
                   for _ in range(residual_blocks[level])]
        levels.append(nn.Sequential(*blocks))
    levels.append(nn.Sequential(
        ConvBlock(w[5], w[6], kernel_size=3, stride=1, padding=0),  # 3x3 -> 1x1
        ConvBlock(w[6], w[6], kernel_size=1, stride=1, padding=0),
    ))
    return nn.ModuleList(levels)


def _audio_encoder(w: tuple[int, ...]) -> nn.Sequential:
    """[1, 80, 16] -> [C, 1, 1]: strides (3,1), 3, (3,2) bring 80x16 to 3x3, a valid 3x3 conv to 1x1."""
    c0, c1, c2, c3, c4 = w
    return nn.Sequential(
        ConvBlock(1, c0, kernel_size=3, stride=1, padding=1),
        ConvBlock(c0, c0, kernel_size=3, stride=1, padding=1, residual=True),
        ConvBlock(c0, c0, kernel_size=3, stride=1, padding=1, residual=True),
        ConvBlock(c0, c1, kernel_size=3, stride=(3, 1), padding=1),
        ConvBlock(c1, c1, kernel_size=3, stride=1, padding=1, residual=True),
        ConvBlock(c1, c1, kernel_size=3, stride=1, padding=1, residual=True),
        ConvBlock(c1, c2, kernel_size=3, stride=3, padding=1),
        ConvBlock(c2, c2, kernel_size=3, stride=1, padding=1, residual=True),
        ConvBlock(c2, c2, kernel_size=3, stride=1, padding=1, residual=True),
        ConvBlock(c2, c3, kernel_size=3, stride=(3, 2), padding=1),
        ConvBlock(c3, c3, kernel_size=3, stride=1, padding=1, residual=True),
        ConvBlock(c3, c4, kernel_size=3, stride=1, padding=0),
        ConvBlock(c4, c4, kernel_size=1, stride=1, padding=0),
    )


def _face_decoder(face: tuple[int, ...], audio_dim: int, w: tuple[int, ...]) -> nn.ModuleList:
    """Each level upsamples and refines; its output is concatenated with the mirrored encoder level."""
    residual_blocks = (0, 1, 2, 2, 2, 2, 2)
    levels = [nn.Sequential(ConvBlock(audio_dim, w[0], kernel_size=1, stride=1, padding=0))]
    for level in range(1, 7):
        cin = w[level - 1] + face[7 - level]  # previous output + skip from the encoder
        if level == 1:  # 1x1 -> 3x3
            up = TransposedConvBlock(cin, w[level], kernel_size=3, stride=1, padding=0)
        else:  # x2
            up = TransposedConvBlock(cin, w[level], kernel_size=3, stride=2, padding=1, output_padding=1)
        blocks = [up] + [ConvBlock(w[level], w[level], kernel_size=3, stride=1, padding=1, residual=True)
                         for _ in range(residual_blocks[level])]
        levels.append(nn.Sequential(*blocks))
    return nn.ModuleList(levels)


class Wav2Lip(nn.Module):
    """`forward(mel [B, 1, 80, 16], faces [B, 6, 96, 96] in [0, 1]) -> crops [B, 3, 96, 96] in [0, 1]`.

    Channel order of faces and output is the one the model was trained on (BGR, from OpenCV).
    The official 5-D form ([B, T, 1, 80, 16] with [B, 6, T, 96, 96]) is accepted too.
    """

    def __init__(self, widths: Wav2LipWidths = FULL):
        super().__init__()
        self.widths = widths
        self.face_encoder_blocks = _face_encoder(widths.face)
        self.audio_encoder = _audio_encoder(widths.audio)
        self.face_decoder_blocks = _face_decoder(widths.face, widths.audio[-1], widths.decoder)
        last = widths.decoder[-1] + widths.face[0]
        self.output_block = nn.Sequential(
            ConvBlock(last, widths.output_hidden, kernel_size=3, stride=1, padding=1),
            nn.Conv2d(widths.output_hidden, 3, kernel_size=1, stride=1, padding=0),
            nn.Sigmoid(),
        )

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        if faces.dim() == 5:  # [B, 6, T, H, W] with mel [B, T, 1, 80, 16]: fold T into the batch
            batch, steps = faces.shape[0], faces.shape[2]
            out = self._forward_2d(mel.reshape(batch * steps, *mel.shape[2:]),
                                   faces.permute(0, 2, 1, 3, 4).reshape(batch * steps, *faces.shape[1:2],
                                                                        *faces.shape[3:]))
            return out.reshape(batch, steps, *out.shape[1:]).permute(0, 2, 1, 3, 4)
        return self._forward_2d(mel, faces)

    def _forward_2d(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        skips = []
        x = faces
        for level in self.face_encoder_blocks:
            x = level(x)
            skips.append(x)
        x = self.audio_encoder(mel)
        for level in self.face_decoder_blocks:
            x = torch.cat((level(x), skips.pop()), dim=1)
        return self.output_block(x)


def build_generator(size: str) -> Wav2Lip:
    return Wav2Lip(FULL if size == "full" else TINY)
