"""`dec`: the NSF-HiFiGAN decoder. A sine excitation at the frame f0 is injected at every upsampling stage."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from iris_pipeline.models.rvc.weight_norm import WNConv1d, WNConvTranspose1d

LRELU_SLOPE = 0.1


class SineGenerator(nn.Module):
    """Frame f0 (Hz, 0 = unvoiced) -> sine excitation at the output rate plus noise (no parameters).

    Phase is accumulated per sample; the wrap points come from the frame-level running phase
    interpolated to samples, as the official SineGen does (keeps the sum bounded in fp32).
    """

    def __init__(self, sampling_rate: int, sine_amp: float = 0.1, noise_std: float = 0.003):
        super().__init__()
        self.sampling_rate = sampling_rate
        self.sine_amp = sine_amp
        self.noise_std = noise_std

    def forward(self, f0: torch.Tensor, upp: int, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            f0 = f0.float()
            # The official draws a random initial phase per harmonic and zeroes the fundamental's; with
            # no overtones that draw is unused, but it is made so a seeded run gets the official noise.
            torch.rand(f0.shape[0], 1, generator=generator, device=f0.device)
            rad = (f0 / self.sampling_rate) % 1  # [B, T] cycles per sample
            wraps = torch.cumsum(rad, dim=1) * upp
            wraps = F.interpolate(wraps[:, None], scale_factor=float(upp), mode="linear",
                                  align_corners=True)[:, 0] % 1
            rad = torch.repeat_interleave(rad, upp, dim=1)
            shift = torch.zeros_like(rad)
            shift[:, 1:] = -((wraps[:, 1:] - wraps[:, :-1]) < 0).float()
            sine = torch.sin(torch.cumsum(rad + shift, dim=1) * 2 * math.pi) * self.sine_amp
            uv = torch.repeat_interleave((f0 > 0).float(), upp, dim=1)
            noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
            noise = noise_amp * torch.randn(sine.shape, generator=generator, device=sine.device)
            return sine * uv + noise  # [B, T * upp]


class SourceModuleHnNSF(nn.Module):
    """`m_source`: sine generator followed by Linear(1 -> 1) and tanh."""

    def __init__(self, sampling_rate: int):
        super().__init__()
        self.l_sin_gen = SineGenerator(sampling_rate)
        self.l_linear = nn.Linear(1, 1)

    def forward(self, f0: torch.Tensor, upp: int, generator: torch.Generator | None = None) -> torch.Tensor:
        sine = self.l_sin_gen(f0, upp, generator).to(self.l_linear.weight.dtype)
        return torch.tanh(self.l_linear(sine.unsqueeze(-1))).transpose(1, 2)  # [B, 1, T * upp]


class ResBlock1(nn.Module):
    """HiFi-GAN ResBlock1: three (dilated conv, conv) pairs with residual adds."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            WNConv1d(channels, channels, kernel_size, dilation=d, padding=(kernel_size * d - d) // 2)
            for d in dilations)
        self.convs2 = nn.ModuleList(
            WNConv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2) for _ in dilations)
        for conv in [*self.convs1, *self.convs2]:
            nn.init.normal_(conv.weight_v, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            y = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
            x = x + y
        return x


class GeneratorNSF(nn.Module):
    def __init__(self, in_channels: int, resblock_kernel_sizes, resblock_dilation_sizes, upsample_rates,
                 upsample_initial_channel: int, upsample_kernel_sizes, gin_channels: int, sr: int):
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.upp = math.prod(upsample_rates)
        self.m_source = SourceModuleHnNSF(sr)
        self.noise_convs = nn.ModuleList()
        self.conv_pre = nn.Conv1d(in_channels, upsample_initial_channel, 7, 1, padding=3)
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes, strict=True)):
            c_out = upsample_initial_channel // (2 ** (i + 1))
            self.ups.append(WNConvTranspose1d(upsample_initial_channel // (2 ** i), c_out, k, u,
                                              padding=(k - u) // 2))
            nn.init.normal_(self.ups[-1].weight_v, 0.0, 0.01)
            if i + 1 < len(upsample_rates):
                # bring the excitation from the output rate down to this stage's rate
                stride = math.prod(upsample_rates[i + 1:])
                self.noise_convs.append(nn.Conv1d(1, c_out, kernel_size=2 * stride, stride=stride,
                                                  padding=stride // 2))
            else:
                self.noise_convs.append(nn.Conv1d(1, c_out, kernel_size=1))
        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            ch = upsample_initial_channel // (2 ** (i + 1))
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes, strict=True):
                self.resblocks.append(ResBlock1(ch, k, tuple(d)))
        self.conv_post = nn.Conv1d(ch, 1, 7, 1, padding=3, bias=False)
        self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1)

    def forward(self, x: torch.Tensor, f0: torch.Tensor, g: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        source = self.m_source(f0, self.upp, generator)
        x = self.conv_pre(x) + self.cond(g)
        for i, (up, noise_conv) in enumerate(zip(self.ups, self.noise_convs, strict=True)):
            x = up(F.leaky_relu(x, LRELU_SLOPE)) + noise_conv(source)
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        x = self.conv_post(F.leaky_relu(x))  # default slope 0.01 here, as official
        return torch.tanh(x)
