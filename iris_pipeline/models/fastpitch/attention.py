"""FastPitch 1.1's aligner: the convolutional attention between mel frames and text embeddings.

As `fastpitch/attention.py` (`ConvAttention` with `align_query_enc_type='3xconv'`): keys are the
symbol embeddings through two convolutions, queries the mel frames through three; the score of
(frame, symbol) is -0.0005 * squared distance, log-softmaxed over symbols, plus the log of the
beta-binomial prior, then softmaxed over symbols again: the soft attention, which the official
`binarize_attention` turns into durations with `torch.log` and MAS.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvNorm(nn.Module):
    """A 1-D convolution with 'same' padding, wrapped as `.conv` like the official class."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2)
        nn.init.xavier_uniform_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvAttention(nn.Module):
    def __init__(self, n_mel_channels: int = 80, n_text_channels: int = 384, n_att_channels: int = 80):
        super().__init__()
        # Registration order matters for the state-dict order: the official class first assigns
        # `query_proj` (later replaced in place), then `attn_proj`, then `key_proj`.
        self.query_proj = nn.Sequential(
            ConvNorm(n_mel_channels, n_mel_channels * 2, kernel_size=3),
            nn.ReLU(),
            ConvNorm(n_mel_channels * 2, n_mel_channels, kernel_size=1),
            nn.ReLU(),
            ConvNorm(n_mel_channels, n_att_channels, kernel_size=1),
        )
        # Present in the official module and its checkpoint, unused by its forward pass.
        self.attn_proj = nn.Conv2d(n_att_channels, 1, kernel_size=1)
        self.key_proj = nn.Sequential(
            ConvNorm(n_text_channels, n_text_channels * 2, kernel_size=3),
            nn.ReLU(),
            ConvNorm(n_text_channels * 2, n_att_channels, kernel_size=1),
        )

    def forward(self, mel: torch.Tensor, text_emb: torch.Tensor, text_mask: torch.Tensor | None = None,
                prior: torch.Tensor | None = None) -> torch.Tensor:
        """Soft alignment [B, T_mel, N_text]: probabilities over symbols (softmax), as the official returns.

        mel [B, n_mel, T]; text_emb [B, C_text, N]; text_mask [B, N] True on real symbols;
        prior [B, T, N] (beta-binomial) or None.
        """
        keys = self.key_proj(text_emb).float()  # B x A x N
        queries = self.query_proj(mel).float()  # B x A x T
        # squared distance via the expansion, so memory is T x N and not A x T x N
        dist = (
            queries.pow(2).sum(1)[:, :, None]
            - 2.0 * torch.bmm(queries.transpose(1, 2), keys)
            + keys.pow(2).sum(1)[:, None, :]
        ).clamp_min(0.0)
        scores = -0.0005 * dist
        if prior is not None:
            scores = torch.log_softmax(scores, dim=2) + torch.log(prior.float() + 1e-8)
        if text_mask is not None:
            scores = scores.masked_fill(~text_mask[:, None, :], float("-inf"))
        return torch.softmax(scores, dim=2)
