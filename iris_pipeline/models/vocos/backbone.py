"""Vocos backbone: ConvNeXt blocks over the feature sequence, conditioned on the bandwidth id."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AdaLayerNorm(nn.Module):
    """LayerNorm without own affine; scale and shift are looked up per bandwidth id."""

    def __init__(self, num_embeddings: int, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.scale = nn.Embedding(num_embeddings, dim)
        self.shift = nn.Embedding(num_embeddings, dim)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, bandwidth_id: int) -> torch.Tensor:
        """x [B, T, dim]; one id for the whole batch, as the official decode uses it."""
        x = F.layer_norm(x, (self.dim,), eps=self.eps)
        return x * self.scale.weight[bandwidth_id] + self.shift.weight[bandwidth_id]


class ConvNeXtBlock(nn.Module):
    """x + gamma * MLP(AdaLN(depthwise conv k7 (x))), on [B, C, T]."""

    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float, num_bandwidths: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = AdaLayerNorm(num_bandwidths, dim)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor, bandwidth_id: int) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y, bandwidth_id))))
        return x + (self.gamma * y).transpose(1, 2)


class VocosBackbone(nn.Module):
    """features [B, C_in, T] -> hidden [B, T, dim]."""

    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int,
                 num_bandwidths: int):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.norm = AdaLayerNorm(num_bandwidths, dim)
        self.convnext = nn.ModuleList(
            ConvNeXtBlock(dim, intermediate_dim, 1.0 / num_layers, num_bandwidths) for _ in range(num_layers)
        )
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, features: torch.Tensor, bandwidth_id: int) -> torch.Tensor:
        x = self.embed(features)
        x = self.norm(x.transpose(1, 2), bandwidth_id).transpose(1, 2)
        for block in self.convnext:
            x = block(x, bandwidth_id)
        return self.final_layer_norm(x.transpose(1, 2))
