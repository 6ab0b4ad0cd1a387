"""The S3FD face detector network (`face_detection/detection/sfd/net_s3fd.py:s3fd`, as used by Wav2Lip).

A VGG16 trunk with extra layers, L2-normalised taps at conv3_3 / conv4_3 / conv5_3 and six
detection heads (strides 4 ... 128). The first head predicts 3 background scores and one face
score; the background scores are maxed out ("max-out background label") so every head returns
[B, 2, H, W] class logits and [B, 4, H, W] box offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class L2Norm(nn.Module):
    """Per-position L2 normalisation over channels with a learned per-channel scale."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.eps = 1e-10
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


@dataclass(frozen=True)
class S3FDWidths:
    c1: int = 64
    c2: int = 128
    c3: int = 256
    c4: int = 512
    c5: int = 512
    fc: int = 1024
    c6: tuple[int, int] = (256, 512)
    c7: tuple[int, int] = (128, 256)

    def scaled(self, divisor: int) -> S3FDWidths:
        d = divisor
        return S3FDWidths(self.c1 // d, self.c2 // d, self.c3 // d, self.c4 // d, self.c5 // d, self.fc // d,
                          (self.c6[0] // d, self.c6[1] // d), (self.c7[0] // d, self.c7[1] // d))


FULL = S3FDWidths()
TINY = FULL.scaled(16)

# Strides of the six detection heads, in output order.
HEAD_STRIDES = (4, 8, 16, 32, 64, 128)


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1)


class S3FD(nn.Module):
    """`forward(image [B, 3, H, W] = RGB minus `INPUT_MEAN`) -> [cls1, reg1, ..., cls6, reg6]` (logits)."""

    def __init__(self, widths: S3FDWidths = FULL):
        super().__init__()
        w = widths
        self.conv1_1, self.conv1_2 = _conv3(3, w.c1), _conv3(w.c1, w.c1)
        self.conv2_1, self.conv2_2 = _conv3(w.c1, w.c2), _conv3(w.c2, w.c2)
        self.conv3_1, self.conv3_2, self.conv3_3 = _conv3(w.c2, w.c3), _conv3(w.c3, w.c3), _conv3(w.c3, w.c3)
        self.conv4_1, self.conv4_2, self.conv4_3 = _conv3(w.c3, w.c4), _conv3(w.c4, w.c4), _conv3(w.c4, w.c4)
        self.conv5_1, self.conv5_2, self.conv5_3 = _conv3(w.c4, w.c5), _conv3(w.c5, w.c5), _conv3(w.c5, w.c5)

        self.fc6 = nn.Conv2d(w.c5, w.fc, kernel_size=3, stride=1, padding=3)
        self.fc7 = nn.Conv2d(w.fc, w.fc, kernel_size=1, stride=1, padding=0)

        self.conv6_1 = nn.Conv2d(w.fc, w.c6[0], kernel_size=1, stride=1, padding=0)
        self.conv6_2 = nn.Conv2d(w.c6[0], w.c6[1], kernel_size=3, stride=2, padding=1)
        self.conv7_1 = nn.Conv2d(w.c6[1], w.c7[0], kernel_size=1, stride=1, padding=0)
        self.conv7_2 = nn.Conv2d(w.c7[0], w.c7[1], kernel_size=3, stride=2, padding=1)

        self.conv3_3_norm = L2Norm(w.c3, scale=10)
        self.conv4_3_norm = L2Norm(w.c4, scale=8)
        self.conv5_3_norm = L2Norm(w.c5, scale=5)

        self.conv3_3_norm_mbox_conf = _conv3(w.c3, 4)  # 3 background scores + face
        self.conv3_3_norm_mbox_loc = _conv3(w.c3, 4)
        self.conv4_3_norm_mbox_conf = _conv3(w.c4, 2)
        self.conv4_3_norm_mbox_loc = _conv3(w.c4, 4)
        self.conv5_3_norm_mbox_conf = _conv3(w.c5, 2)
        self.conv5_3_norm_mbox_loc = _conv3(w.c5, 4)
        self.fc7_mbox_conf = _conv3(w.fc, 2)
        self.fc7_mbox_loc = _conv3(w.fc, 4)
        self.conv6_2_mbox_conf = _conv3(w.c6[1], 2)
        self.conv6_2_mbox_loc = _conv3(w.c6[1], 4)
        self.conv7_2_mbox_conf = _conv3(w.c7[1], 2)
        self.conv7_2_mbox_loc = _conv3(w.c7[1], 4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = F.relu(self.conv1_2(F.relu(self.conv1_1(x))))
        h = F.max_pool2d(h, 2, 2)
        h = F.relu(self.conv2_2(F.relu(self.conv2_1(h))))
        h = F.max_pool2d(h, 2, 2)
        f3_3 = F.relu(self.conv3_3(F.relu(self.conv3_2(F.relu(self.conv3_1(h))))))
        h = F.max_pool2d(f3_3, 2, 2)
        f4_3 = F.relu(self.conv4_3(F.relu(self.conv4_2(F.relu(self.conv4_1(h))))))
        h = F.max_pool2d(f4_3, 2, 2)
        f5_3 = F.relu(self.conv5_3(F.relu(self.conv5_2(F.relu(self.conv5_1(h))))))
        h = F.max_pool2d(f5_3, 2, 2)
        ffc7 = F.relu(self.fc7(F.relu(self.fc6(h))))
        f6_2 = F.relu(self.conv6_2(F.relu(self.conv6_1(ffc7))))
        f7_2 = F.relu(self.conv7_2(F.relu(self.conv7_1(f6_2))))

        f3_3 = self.conv3_3_norm(f3_3)
        f4_3 = self.conv4_3_norm(f4_3)
        f5_3 = self.conv5_3_norm(f5_3)

        cls1 = self.conv3_3_norm_mbox_conf(f3_3)
        background = cls1[:, 0:3].max(dim=1, keepdim=True).values
        cls1 = torch.cat([background, cls1[:, 3:4]], dim=1)
        return [
            cls1, self.conv3_3_norm_mbox_loc(f3_3),
            self.conv4_3_norm_mbox_conf(f4_3), self.conv4_3_norm_mbox_loc(f4_3),
            self.conv5_3_norm_mbox_conf(f5_3), self.conv5_3_norm_mbox_loc(f5_3),
            self.fc7_mbox_conf(ffc7), self.fc7_mbox_loc(ffc7),
            self.conv6_2_mbox_conf(f6_2), self.conv6_2_mbox_loc(f6_2),
            self.conv7_2_mbox_conf(f7_2), self.conv7_2_mbox_loc(f7_2),
        ]


def build_network(size: str) -> S3FD:
    return S3FD(FULL if size == "full" else TINY)
