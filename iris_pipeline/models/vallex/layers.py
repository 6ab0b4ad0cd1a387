"""Building blocks of VALL-E X with the official parameter names.

Semantics follow Plachtaa/VALL-E-X `modules/embedding.py`, `modules/transformer.py` and
`modules/activation.py`; dropouts are left out (inference only, none of them owns a parameter).
Attention masks here are boolean with True = "may attend" (the convention of
`F.scaled_dot_product_attention`); the official code uses the inverse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TokenEmbedding(nn.Module):
    """A lookup table stored as `word_embeddings.weight`."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim)

    @property
    def weight(self) -> nn.Parameter:
        return self.word_embeddings.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(ids)


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """table[p, 2i] = sin(p / 10000^(2i/dim)), table[p, 2i+1] = cos(...), built in float32."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


class SinePositionalEmbedding(nn.Module):
    """x + alpha * sinusoid[position]; `alpha` is the only state-dict entry (the table is rebuilt)."""

    def __init__(self, dim: int, trainable_alpha: bool, initial_length: int = 4000):
        super().__init__()
        self.dim = dim
        self.alpha = nn.Parameter(torch.ones(1), requires_grad=trainable_alpha)
        self.register_buffer("table", sinusoid_table(initial_length, dim), persistent=False)

    def ensure_length(self, length: int) -> None:
        """Grow the table to `length` rows (never inside a captured CUDA graph)."""
        if self.table.shape[0] < length:
            grown = sinusoid_table(length, self.dim)
            self.table = grown.to(device=self.table.device, dtype=self.table.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Positions 0..T-1 along dim 1 of x [B, T, D]."""
        self.ensure_length(x.shape[1])
        return x + self.alpha * self.table[: x.shape[1]]

    def at(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x [..., D] plus the encoding of `positions` (same leading shape as x without D)."""
        return x + self.alpha * self.table[positions]


class SelfAttention(nn.Module):
    """Multi-head self-attention with the packed q/k/v projection of `nn.MultiheadAttention`."""

    def __init__(self, dim: int, nhead: int):
        super().__init__()
        self.nhead = nhead
        self.head_dim = dim // nhead
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v each [B, H, T, head_dim] from x [B, T, D]."""
        b, t, _ = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(b, t, 3, self.nhead, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               allowed: torch.Tensor | None) -> torch.Tensor:
        """Scaled dot-product attention (scale 1/sqrt(head_dim)), heads merged, output projection."""
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        b, _, t, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(b, t, -1))


class AdaptiveLayerNorm(nn.Module):
    """gamma(s) * LayerNorm(x) + beta(s), with [gamma, beta] = project_layer(stage vector s)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.project_layer = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dim = dim

    def forward(self, x: torch.Tensor, stage: torch.Tensor) -> torch.Tensor:
        gamma, beta = torch.split(self.project_layer(stage), self.dim, dim=-1)
        return gamma * self.norm(x) + beta


class DecoderLayer(nn.Module):
    """Pre-norm layer: h = x + Attn(norm1(x)); out = h + linear2(relu(linear1(norm2(h))))."""

    def __init__(self, dim: int, nhead: int, dim_feedforward: int, eps: float, adaptive: bool):
        super().__init__()
        self.self_attn = SelfAttention(dim, nhead)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        norm = (lambda: AdaptiveLayerNorm(dim, eps)) if adaptive else (lambda: nn.LayerNorm(dim, eps=eps))
        self.norm1 = norm()
        self.norm2 = norm()
        self.adaptive = adaptive

    def _norm(self, norm: nn.Module, x: torch.Tensor, stage: torch.Tensor | None) -> torch.Tensor:
        return norm(x, stage) if self.adaptive else norm(x)

    def feed_forward(self, h: torch.Tensor, stage: torch.Tensor | None = None) -> torch.Tensor:
        return h + self.linear2(F.relu(self.linear1(self._norm(self.norm2, h, stage))))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None,
                stage: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer output and this layer's keys and values ([B, H, T, head_dim], for a KV cache)."""
        q, k, v = self.self_attn.project(self._norm(self.norm1, x, stage))
        h = x + self.self_attn.attend(q, k, v, allowed)
        return self.feed_forward(h, stage), k, v


class Decoder(nn.Module):
    """`layers` then a final `norm` (LayerNorm for the AR, adaptive LayerNorm for the NAR)."""

    def __init__(self, dim: int, nhead: int, dim_feedforward: int, num_layers: int, eps: float,
                 adaptive: bool):
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(dim, nhead, dim_feedforward, eps, adaptive) for _ in range(num_layers)
        )
        self.norm = AdaptiveLayerNorm(dim, eps) if adaptive else nn.LayerNorm(dim, eps=eps)
        self.adaptive = adaptive

    def final_norm(self, x: torch.Tensor, stage: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(x, stage) if self.adaptive else self.norm(x)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None,
                stage: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x, _, _ = layer(x, allowed, stage)
        return self.final_norm(x, stage)
