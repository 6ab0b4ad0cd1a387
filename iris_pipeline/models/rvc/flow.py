"""`flow`: the VITS residual-coupling flow (mean-only couplings + channel flips), run in reverse at inference."""

from __future__ import annotations

import torch
from torch import nn

from iris_pipeline.models.rvc.weight_norm import WNConv1d


class WaveNet(nn.Module):
    """WN: gated dilated convs with speaker conditioning; returns the sum of the skip outputs."""

    def __init__(self, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int,
                 gin_channels: int):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        self.cond_layer = WNConv1d(gin_channels, 2 * hidden_channels * n_layers, 1)
        for i in range(n_layers):
            dilation = dilation_rate ** i
            self.in_layers.append(WNConv1d(hidden_channels, 2 * hidden_channels, kernel_size, dilation=dilation,
                                           padding=(kernel_size * dilation - dilation) // 2))
            # the last layer has no residual half: all of its output is skip
            out = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(WNConv1d(hidden_channels, out, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        h = self.hidden_channels
        cond = self.cond_layer(g)
        output = torch.zeros_like(x)
        for i, (in_layer, res_skip_layer) in enumerate(zip(self.in_layers, self.res_skip_layers, strict=True)):
            z = in_layer(x) + cond[:, 2 * h * i: 2 * h * (i + 1)]
            acts = torch.tanh(z[:, :h]) * torch.sigmoid(z[:, h:])
            res_skip = res_skip_layer(acts)
            if i < self.n_layers - 1:
                x = (x + res_skip[:, :h]) * mask
                output = output + res_skip[:, h:]
            else:
                output = output + res_skip
        return output * mask


class ResidualCouplingLayer(nn.Module):
    """Mean-only affine coupling: the second half of the channels is shifted by a function of the first."""

    def __init__(self, channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int,
                 n_layers: int, gin_channels: int):
        super().__init__()
        self.half_channels = channels // 2
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = WaveNet(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels)
        self.post = nn.Conv1d(hidden_channels, self.half_channels, 1)
        nn.init.zeros_(self.post.weight)
        nn.init.zeros_(self.post.bias)

    def shift(self, x0: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.post(self.enc(self.pre(x0) * mask, mask, g)) * mask

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor, reverse: bool = False):
        x0, x1 = torch.split(x, [self.half_channels] * 2, dim=1)
        m = self.shift(x0, mask, g)
        x1 = (x1 - m) * mask if reverse else m + x1 * mask
        return torch.cat([x0, x1], dim=1)


class Flip(nn.Module):
    """Reverse the channel order (no parameters)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor, reverse: bool = False):
        return torch.flip(x, [1])


class ResidualCouplingBlock(nn.Module):
    def __init__(self, channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int,
                 n_layers: int, n_flows: int, gin_channels: int):
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(ResidualCouplingLayer(channels, hidden_channels, kernel_size, dilation_rate,
                                                    n_layers, gin_channels))
            self.flows.append(Flip())

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor, reverse: bool = False):
        flows = reversed(self.flows) if reverse else self.flows
        for flow in flows:
            x = flow(x, mask, g, reverse=reverse)
        return x
