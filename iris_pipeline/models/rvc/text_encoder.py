"""`enc_p`: the prior encoder of the RVC synthesizer (VITS text encoder over content features + pitch).

A post-norm transformer whose self-attention adds relative-position terms: one learned table of
2*window+1 vectors for keys (`emb_rel_k`) and one for values (`emb_rel_v`), shared by all heads;
offsets beyond the window contribute nothing.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def sequence_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """[B, T] bool: position < length."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of [B, C, T] (parameters named `gamma`, `beta`)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.transpose(1, -1), (x.shape[1],), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


def relative_to_absolute(rel: torch.Tensor, window: int) -> torch.Tensor:
    """[..., T, 2W+1] scores by offset (j - i + W) -> [..., T, T] scores by key position j.

    Offsets outside the window get 0. Row i is shifted right by i with the usual pad-and-reshape
    skew, so no [T, 2T-1] table is built.
    """
    t = rel.shape[-2]
    width = t + 2 * window + 1
    padded = F.pad(rel, (0, width - rel.shape[-1]))  # [..., T, width]
    flat = padded.flatten(-2)[..., : t * (width - 1)]  # drop the tail so rows shift by one
    skewed = flat.unflatten(-1, (t, width - 1))  # skewed[i, c] = rel[i, c - i]
    return skewed[..., window: window + t]


def absolute_to_relative(weights: torch.Tensor, window: int) -> torch.Tensor:
    """[..., T, T] weights by key position j -> [..., T, 2W+1] weights by offset (j - i + W)."""
    t = weights.shape[-1]
    padded = F.pad(weights, (window, window))  # padded[i, c] = w[i, c - W]
    width = t + 2 * window
    flat = F.pad(padded.flatten(-2), (0, t))
    diagonal = flat[..., : t * (width + 1)].unflatten(-1, (t, width + 1))  # [i, o] = padded[i, i + o]
    return diagonal[..., : 2 * window + 1]


class RelativeMultiHeadAttention(nn.Module):
    """Self-attention with 1x1-conv projections and windowed relative-position keys and values."""

    def __init__(self, channels: int, n_heads: int, window_size: int = 10):
        super().__init__()
        if channels % n_heads:
            raise ValueError("channels must be divisible by n_heads")
        self.n_heads = n_heads
        self.head_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        scale = self.head_channels ** -0.5
        self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.head_channels) * scale)
        self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.head_channels) * scale)
        nn.init.xavier_uniform_(self.conv_q.weight)
        nn.init.xavier_uniform_(self.conv_k.weight)
        nn.init.xavier_uniform_(self.conv_v.weight)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        return x.view(b, self.n_heads, self.head_channels, t).transpose(2, 3)  # [B, H, T, d]

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        q = self._heads(self.conv_q(x)) / math.sqrt(self.head_channels)
        k = self._heads(self.conv_k(x))
        v = self._heads(self.conv_v(x))
        scores = q @ k.transpose(-2, -1)
        rel_logits = q @ self.emb_rel_k.transpose(-2, -1).unsqueeze(0)  # [B, H, T, 2W+1]
        scores = scores + relative_to_absolute(rel_logits, self.window_size)
        scores = scores.masked_fill(attn_mask == 0, -1e4)
        weights = torch.softmax(scores, dim=-1)
        out = weights @ v
        out = out + absolute_to_relative(weights, self.window_size) @ self.emb_rel_v.unsqueeze(0)
        out = out.transpose(2, 3).reshape(b, c, t)
        return self.conv_o(out)


class FeedForward(nn.Module):
    """Conv1d(k) -> ReLU -> Conv1d(k), "same" padding, inputs masked before each conv."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int):
        super().__init__()
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_1(F.pad(x * mask, self.pad)))
        return self.conv_2(F.pad(x * mask, self.pad)) * mask


class AttentionEncoder(nn.Module):
    """`enc_p.encoder`: n post-norm blocks of relative self-attention and a conv feed-forward."""

    def __init__(self, channels: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int):
        super().__init__()
        self.attn_layers = nn.ModuleList(RelativeMultiHeadAttention(channels, n_heads) for _ in range(n_layers))
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(FeedForward(channels, filter_channels, kernel_size)
                                        for _ in range(n_layers))
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attn_mask = mask.unsqueeze(2) * mask.unsqueeze(-1)  # [B, 1, T, T]
        x = x * mask
        for attn, norm_1, ffn, norm_2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers,
                                             self.norm_layers_2, strict=True):
            x = norm_1(x + attn(x, attn_mask))
            x = norm_2(x + ffn(x, mask))
        return x * mask


class TextEncoder(nn.Module):
    """Content features [B, T, C] + coarse pitch ids [B, T] -> prior mean / log-std [B, inter, T], mask."""

    def __init__(self, content_channels: int, out_channels: int, hidden_channels: int, filter_channels: int,
                 n_heads: int, n_layers: int, kernel_size: int):
        super().__init__()
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.emb_phone = nn.Linear(content_channels, hidden_channels)
        self.emb_pitch = nn.Embedding(256, hidden_channels)
        self.encoder = AttentionEncoder(hidden_channels, filter_channels, n_heads, n_layers, kernel_size)
        self.proj = nn.Conv1d(hidden_channels, 2 * out_channels, 1)

    def forward(self, features: torch.Tensor, pitch: torch.Tensor, lengths: torch.Tensor):
        x = (self.emb_phone(features) + self.emb_pitch(pitch)) * math.sqrt(self.hidden_channels)
        x = F.leaky_relu(x, 0.1).transpose(1, -1)  # [B, H, T]
        mask = sequence_mask(lengths, x.shape[2]).unsqueeze(1).to(x.dtype)
        x = self.encoder(x * mask, mask)
        stats = self.proj(x) * mask
        mean, log_std = torch.split(stats, self.out_channels, dim=1)
        return mean, log_std, mask
