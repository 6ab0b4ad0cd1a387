"""The FFT blocks of FastPitch (encoder and decoder): post-LN self-attention + 1-D conv feed-forward.

Module and parameter names follow `fastpitch/transformer.py` of the official code so that its
state dict loads strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mask_from_lengths(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """[B, T] bool, True on the first `lengths[b]` positions."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class PositionalEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        # persistent: the official state dict carries it
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0.0, dim, 2.0) / dim)))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        angles = positions[:, None] * self.inv_freq[None, :].to(positions.dtype)
        return torch.cat([angles.sin(), angles.cos()], dim=1)[None]


class PositionwiseConvFF(nn.Module):
    def __init__(self, d_model: int, d_inner: int, kernel_size: int):
        super().__init__()
        pad = kernel_size // 2
        # Sequential indices 0 and 2 match the official names (ReLU at 1, dropout at 3).
        self.CoreNet = nn.Sequential(
            nn.Conv1d(d_model, d_inner, kernel_size, 1, pad),
            nn.ReLU(),
            nn.Conv1d(d_inner, d_model, kernel_size, 1, pad),
            nn.Identity(),
        )
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        core = self.CoreNet(x.transpose(1, 2)).transpose(1, 2)
        return self.layer_norm(x + core).to(x.dtype)


class MultiHeadAttn(nn.Module):
    def __init__(self, n_head: int, d_model: int, d_head: int):
        super().__init__()
        self.n_head, self.d_head = n_head, d_head
        self.qkv_net = nn.Linear(d_model, 3 * n_head * d_head)
        self.o_net = nn.Linear(n_head * d_head, d_model, bias=False)
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, D]; key_mask [B, T] True where the position is real (padding keys are ignored)."""
        b, t, _ = x.shape
        q, k, v = self.qkv_net(x).view(b, t, 3, self.n_head, self.d_head).permute(2, 0, 3, 1, 4)
        # an additive mask in the activations' dtype: a boolean one exports as an fp32
        # Where(mask, 0, -inf) added to half-precision scores, which makes the ONNX graph ill-typed
        bias = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device).masked_fill(~key_mask, float("-inf"))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None, None, :])
        out = self.o_net(attn.transpose(1, 2).reshape(b, t, self.n_head * self.d_head))
        return self.layer_norm(x + out).to(out.dtype)


class TransformerLayer(nn.Module):
    def __init__(self, n_head: int, d_model: int, d_head: int, d_inner: int, kernel_size: int):
        super().__init__()
        self.dec_attn = MultiHeadAttn(n_head, d_model, d_head)
        self.pos_ff = PositionwiseConvFF(d_model, d_inner, kernel_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """mask [B, T, 1] (1 on real positions)."""
        x = self.dec_attn(x, mask[..., 0].bool()) * mask
        return self.pos_ff(x) * mask


class FFTransformer(nn.Module):
    """A stack of FFT blocks; with `n_embed` it embeds symbol ids first (the encoder)."""

    def __init__(self, n_layer: int, n_head: int, d_model: int, d_head: int, d_inner: int,
                 kernel_size: int, n_embed: int | None = None, padding_idx: int = 0):
        super().__init__()
        self.padding_idx = padding_idx
        self.word_emb = nn.Embedding(n_embed, d_model, padding_idx=padding_idx) if n_embed else None
        self.pos_emb = PositionalEmbedding(d_model)
        self.layers = nn.ModuleList(
            TransformerLayer(n_head, d_model, d_head, d_inner, kernel_size) for _ in range(n_layer)
        )

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor | None = None,
                conditioning: torch.Tensor | float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Symbol ids [B, N] (encoder) or features [B, T, D] with `lengths` (decoder) -> (out, mask [B, T, 1])."""
        if self.word_emb is not None:
            x = self.word_emb(inputs)
            mask = (inputs != self.padding_idx).unsqueeze(2)
        else:
            x = inputs
            mask = mask_from_lengths(lengths, inputs.size(1)).unsqueeze(2)
        # positions and angles in fp32, then cast: half precision cannot even count past 2048, and an
        # fp16 `arange` is an op ONNX exporters and TensorRT handle poorly
        positions = torch.arange(x.size(1), device=x.device, dtype=torch.float32)
        x = x + self.pos_emb(positions).to(x.dtype) * mask + conditioning
        for layer in self.layers:
            x = layer(x, mask)
        return x, mask
