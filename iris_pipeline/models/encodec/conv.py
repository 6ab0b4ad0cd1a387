"""Weight-normalised 1-D convolutions with EnCodec's causal padding rules.

The official checkpoint stores every conv as `bias`, `weight_g`, `weight_v` (the naming of the old
`torch.nn.utils.weight_norm`). Newer torch versions name a weight-norm parametrisation differently,
so the norm is done here by hand: g and v are the parameters and the weight is rebuilt in `forward`.

Module nesting mirrors the official one (padding wrapper -> norm wrapper -> conv), which is what
gives the state-dict names `...conv.conv.weight_g` and `...convtr.convtr.weight_g`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _weight_from_norm(weight_g: torch.Tensor, weight_v: torch.Tensor) -> torch.Tensor:
    """g * v / ||v||, the norm taken over every dim but 0.

    `torch._weight_norm` is the op both torch weight-norm APIs call (its CUDA kernel accumulates
    fp16 in fp32), so the weight is bit-identical to the official model's.
    """
    return torch._weight_norm(weight_v, weight_g, 0)


class _WeightNormed(nn.Module):
    """Holds `weight_g` [dim0, 1, 1], `weight_v` (full weight shape) and `bias` of one conv."""

    def __init__(self, reference: nn.Module):
        super().__init__()
        # Start from torch's default conv init, then split it the way weight_norm does (g = ||w||).
        weight = reference.weight.detach()
        self.weight_g = nn.Parameter(weight.pow(2).sum(dim=(1, 2), keepdim=True).sqrt())
        self.weight_v = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(reference.bias.detach().clone())

    def weight(self) -> torch.Tensor:
        return _weight_from_norm(self.weight_g, self.weight_v)


class WeightNormConv1d(_WeightNormed):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1):
        super().__init__(nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation))
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight(), self.bias, self.stride, 0, self.dilation)


class WeightNormConvTranspose1d(_WeightNormed):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride))
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.weight(), self.bias, self.stride)


class NormConv1d(nn.Module):
    """Naming level of the official code (its `norm` is an Identity for weight norm)."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.conv = WeightNormConv1d(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class NormConvTranspose1d(nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        self.convtr = WeightNormConvTranspose1d(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convtr(x)


def extra_right_padding(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Right padding that makes the last window complete, so no input sample is dropped."""
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return ideal_length - length


def reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect padding that also works when the signal is not longer than the padding.

    Such a signal is first zero-extended on the right just enough to reflect, and that zero tail
    is cut off again afterwards (the official rule).
    """
    length = x.shape[-1]
    widest = max(left, right)
    zeros = widest - length + 1 if length <= widest else 0
    if zeros:
        x = F.pad(x, (0, zeros))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., : padded.shape[-1] - zeros]


class CausalConv1d(nn.Module):
    """Conv1d padded on the left (reflect) so output frame t sees only input up to t; out = ceil(L / stride)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1):
        super().__init__()
        self.conv = NormConv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation)
        self.effective_kernel = (kernel_size - 1) * dilation + 1
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding_total = self.effective_kernel - self.stride
        extra = extra_right_padding(x.shape[-1], self.effective_kernel, self.stride, padding_total)
        return self.conv(reflect_pad(x, padding_total, extra))


class CausalConvTranspose1d(nn.Module):
    """ConvTranspose1d whose surplus (kernel - stride) samples are trimmed on the right; out = L * stride."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.convtr = NormConvTranspose1d(in_channels, out_channels, kernel_size, stride)
        self.trim = kernel_size - stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convtr(x)
        return y[..., : y.shape[-1] - self.trim]
