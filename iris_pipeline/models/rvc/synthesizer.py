"""`SynthesizerTrnMs768NSFsid` as RVC exports it for inference (no posterior encoder `enc_q`)."""

from __future__ import annotations

import torch
from torch import nn

from iris_pipeline.models.rvc.config import SynthesizerConfig
from iris_pipeline.models.rvc.flow import ResidualCouplingBlock
from iris_pipeline.models.rvc.nsf import GeneratorNSF
from iris_pipeline.models.rvc.text_encoder import TextEncoder
from iris_pipeline.models.rvc.weight_norm import fold_weight_norms

# Scale of the prior's noise at inference (official constant).
PRIOR_NOISE_SCALE = 0.66666


class SynthesizerTrnMs768NSFsid(nn.Module):
    """Content features + pitch + speaker id -> waveform at `config.sr` (`config.hop_length` samples per frame)."""

    def __init__(self, config: SynthesizerConfig):
        super().__init__()
        if config.resblock != "1":
            raise ValueError(f"only ResBlock1 (resblock '1') is used by RVC v2, got {config.resblock!r}")
        self.config = config
        c = config
        # registration order follows the official state dict (the 768-d enc_p is created last there)
        self.dec = GeneratorNSF(c.inter_channels, c.resblock_kernel_sizes, c.resblock_dilation_sizes,
                                c.upsample_rates, c.upsample_initial_channel, c.upsample_kernel_sizes,
                                c.gin_channels, c.sr)
        self.flow = ResidualCouplingBlock(c.inter_channels, c.hidden_channels, c.flow_kernel_size, 1,
                                          c.flow_n_layers, c.flow_n_flows, c.gin_channels)
        self.emb_g = nn.Embedding(c.spk_embed_dim, c.gin_channels)
        self.enc_p = TextEncoder(c.content_channels, c.inter_channels, c.hidden_channels, c.filter_channels,
                                 c.n_heads, c.n_layers, c.kernel_size)

    @property
    def sample_rate(self) -> int:
        return self.config.sr

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def fold_weight_norms(self) -> SynthesizerTrnMs768NSFsid:
        """Fold weight norm for faster inference (as RVC's realtime path does); outputs are unchanged."""
        return fold_weight_norms(self)

    @torch.no_grad()
    def infer(self, features: torch.Tensor, lengths: torch.Tensor, pitch: torch.Tensor, f0: torch.Tensor,
              speaker: torch.Tensor, noise_scale: float = PRIOR_NOISE_SCALE,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """features [B, T, C] (100 frames/s), lengths [B], pitch ids [B, T] (1..255), f0 [B, T] Hz, speaker [B].

        Returns audio [B, 1, T * hop_length] in [-1, 1].
        """
        g = self.emb_g(speaker).unsqueeze(-1)
        mean, log_std, mask = self.enc_p(features, pitch, lengths)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z_p = (mean + torch.exp(log_std) * eps * noise_scale) * mask
        z = self.flow(z_p, mask, g, reverse=True)
        return self.dec(z * mask, f0, g, generator=generator)
