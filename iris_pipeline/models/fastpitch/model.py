"""FastPitch 1.1 (NVIDIA DeepLearningExamples): encoder, predictors, decoder, and the aligner.

Parameter names and shapes follow `fastpitch/model.py` so the released checkpoint loads strictly.
Inference here is the official `infer` (pitch and energy predicted from the text) plus the two
things our chain needs: `align` (the aligner's soft attention, which MAS turns into durations) and forced
durations (`dur_tgt`), with which the decoder renders exactly sum(durations) frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from iris_pipeline.models.fastpitch.attention import ConvAttention
from iris_pipeline.models.fastpitch.config import FastPitchConfig
from iris_pipeline.models.fastpitch.transformer import FFTransformer


class ConvReLUNorm(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv(x))
        return self.norm(out.transpose(1, 2)).transpose(1, 2).to(x.dtype)


class TemporalPredictor(nn.Module):
    """One (or `n_predictions`) value per symbol: convs + LayerNorm, then a linear head."""

    def __init__(self, input_size: int, filter_size: int, kernel_size: int, n_layers: int = 2,
                 n_predictions: int = 1):
        super().__init__()
        self.layers = nn.Sequential(*[
            ConvReLUNorm(input_size if i == 0 else filter_size, filter_size, kernel_size)
            for i in range(n_layers)
        ])
        self.fc = nn.Linear(filter_size, n_predictions, bias=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.layers((x * mask).transpose(1, 2)).transpose(1, 2)
        return self.fc(out) * mask


def regulate_length(durations: torch.Tensor, enc_out: torch.Tensor, pace: float = 1.0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat each symbol's encoding `round(duration / pace)` times -> ([B, T_max, D], lengths [B]).

    Same rounding as the official `regulate_len`; built with a gather instead of its T x N matrix.
    """
    reps = (durations.float() / pace + 0.5).long().clamp_min(0)
    lengths = reps.sum(dim=1)
    max_len = max(int(lengths.max()), 1)
    ends = torch.cumsum(reps, dim=1)  # [B, N]
    frames = torch.arange(max_len, device=enc_out.device).expand(reps.size(0), max_len).contiguous()
    index = torch.searchsorted(ends, frames, right=True).clamp_max(enc_out.size(1) - 1)
    out = torch.gather(enc_out, 1, index[..., None].expand(-1, -1, enc_out.size(2)))
    valid = frames < lengths[:, None]
    return out * valid[..., None].to(out.dtype), lengths


@dataclass
class FastPitchOutput:
    mel: torch.Tensor  # [B, n_mel, T] log-mel
    mel_lengths: torch.Tensor  # [B]
    dur_pred: torch.Tensor  # [B, N]
    pitch_pred: torch.Tensor  # [B, formants, N]
    energy_pred: torch.Tensor | None  # [B, N]


class FastPitch(nn.Module):
    def __init__(self, config: FastPitchConfig):
        super().__init__()
        c = self.config = config
        d = c.symbols_embedding_dim
        self.encoder = FFTransformer(c.in_fft_n_layers, c.in_fft_n_heads, d, c.in_fft_d_head,
                                     c.in_fft_conv1d_filter_size, c.in_fft_conv1d_kernel_size,
                                     n_embed=c.n_symbols, padding_idx=c.padding_idx)
        self.speaker_emb = nn.Embedding(c.n_speakers, d) if c.n_speakers > 1 else None
        self.duration_predictor = TemporalPredictor(c.in_fft_output_size, c.dur_predictor_filter_size,
                                                    c.dur_predictor_kernel_size, c.dur_predictor_n_layers)
        self.decoder = FFTransformer(c.out_fft_n_layers, c.out_fft_n_heads, d, c.out_fft_d_head,
                                     c.out_fft_conv1d_filter_size, c.out_fft_conv1d_kernel_size)
        self.pitch_predictor = TemporalPredictor(c.in_fft_output_size, c.pitch_predictor_filter_size,
                                                 c.pitch_predictor_kernel_size, c.pitch_predictor_n_layers,
                                                 n_predictions=c.pitch_conditioning_formants)
        self.pitch_emb = nn.Conv1d(c.pitch_conditioning_formants, d, c.pitch_embedding_kernel_size,
                                   padding=(c.pitch_embedding_kernel_size - 1) // 2)
        # Training-set pitch statistics stored in the checkpoint.
        self.register_buffer("pitch_mean", torch.zeros(1))
        self.register_buffer("pitch_std", torch.zeros(1))
        if c.energy_conditioning:
            self.energy_predictor = TemporalPredictor(c.in_fft_output_size, c.energy_predictor_filter_size,
                                                      c.energy_predictor_kernel_size,
                                                      c.energy_predictor_n_layers)
            self.energy_emb = nn.Conv1d(1, d, c.energy_embedding_kernel_size,
                                        padding=(c.energy_embedding_kernel_size - 1) // 2)
        else:
            self.energy_predictor = None
            self.energy_emb = None
        self.proj = nn.Linear(c.out_fft_output_size, c.n_mel_channels, bias=True)
        self.attention = ConvAttention(c.n_mel_channels, d, c.attention_channels)

    # --- pieces ---------------------------------------------------------------------------------

    def _speaker_conditioning(self, batch: int, speaker: int, device: torch.device) -> torch.Tensor | float:
        if self.speaker_emb is None:
            return 0.0
        ids = torch.full((batch,), int(speaker), dtype=torch.long, device=device)
        return self.speaker_emb(ids).unsqueeze(1) * self.config.speaker_emb_weight

    def align(self, symbols: torch.Tensor, mel: torch.Tensor, prior: torch.Tensor | None = None
              ) -> torch.Tensor:
        """Soft alignment [B, T, N] of mel frames [B, 80, T] to symbol ids [B, N] (fp32 probabilities).

        The aligner sees the plain symbol embeddings (no positions, no encoder), as in training.
        """
        text_emb = self.encoder.word_emb(symbols).transpose(1, 2)
        text_mask = symbols != self.config.padding_idx
        return self.attention(mel.to(text_emb.dtype), text_emb, text_mask, prior)

    def infer(self, symbols: torch.Tensor, durations: torch.Tensor | None = None, pace: float = 1.0,
              pitch: torch.Tensor | None = None, energy: torch.Tensor | None = None,
              max_duration: float = 75.0, speaker: int = 0) -> FastPitchOutput:
        """Render a log-mel from symbol ids [B, N].

        `durations` [B, N] (frames per symbol) forces the length (the official `dur_tgt`): the
        output then has exactly sum(durations) frames at pace 1.0. `pitch` [B, 1, N] and `energy`
        [B, 1, N] replace the predicted ones when given (normalised as the model was trained).
        """
        cond = self._speaker_conditioning(symbols.size(0), speaker, symbols.device)
        enc_out, enc_mask = self.encoder(symbols, conditioning=cond)
        log_dur = self.duration_predictor(enc_out, enc_mask).squeeze(-1)
        dur_pred = torch.clamp(torch.exp(log_dur) - 1, 0, max_duration)
        pitch_pred = self.pitch_predictor(enc_out, enc_mask).permute(0, 2, 1)
        pitch_in = pitch_pred if pitch is None else pitch.to(enc_out.dtype)
        enc_out = enc_out + self.pitch_emb(pitch_in).transpose(1, 2)
        energy_pred = None
        if self.energy_predictor is not None:
            energy_pred = self.energy_predictor(enc_out, enc_mask).squeeze(-1)
            energy_in = energy_pred.unsqueeze(1) if energy is None else energy.to(enc_out.dtype)
            enc_out = enc_out + self.energy_emb(energy_in).transpose(1, 2)
        regulated, lengths = regulate_length(dur_pred if durations is None else durations, enc_out, pace)
        dec_out, _ = self.decoder(regulated, lengths)
        # As the official: the decoder output is masked, the projection is not, so padded frames hold its bias.
        mel = self.proj(dec_out)
        return FastPitchOutput(mel.transpose(1, 2), lengths, dur_pred, pitch_pred, energy_pred)

    def forward(self, symbols: torch.Tensor, durations: torch.Tensor | None = None,
                pace: float = 1.0) -> torch.Tensor:
        """The log-mel [B, 80, T] (what an exported engine computes)."""
        return self.infer(symbols, durations=durations, pace=pace).mel
