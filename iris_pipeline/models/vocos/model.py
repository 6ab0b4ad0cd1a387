"""Vocos vocoder on EnCodec codes: codes -> features -> ConvNeXt backbone -> ISTFT -> 24 kHz waveform."""

from __future__ import annotations

import torch
from torch import nn

from iris_pipeline.models.vocos.backbone import VocosBackbone
from iris_pipeline.models.vocos.config import VocosConfig
from iris_pipeline.models.vocos.features import EncodecFeatures
from iris_pipeline.models.vocos.head import ISTFTHead

SIX_KBPS_ID = 2  # index of 6 kbps in (1.5, 3, 6, 12): 8 codebooks, what VALL-E X decodes with


class Vocos(nn.Module):
    def __init__(self, config: VocosConfig):
        super().__init__()
        self.config = config
        self.feature_extractor = EncodecFeatures(config.encodec_size, config.bandwidths)
        self.backbone = VocosBackbone(config.input_channels, config.dim, config.intermediate_dim,
                                      config.num_layers, config.adanorm_num_embeddings)
        self.head = ISTFTHead(config.dim, config.n_fft, config.hop_length)

    @property
    def sample_rate(self) -> int:
        return self.feature_extractor.encodec.sample_rate

    @torch.no_grad()
    def decode(self, features: torch.Tensor, bandwidth_id: int = SIX_KBPS_ID) -> torch.Tensor:
        """features [B, C, F] -> waveform [B, F * hop] (fp32)."""
        self.feature_extractor.check_bandwidth_id(bandwidth_id)
        dtype = self.backbone.embed.weight.dtype
        return self.head(self.backbone(features.to(dtype), bandwidth_id))

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor, bandwidth_id: int = SIX_KBPS_ID) -> torch.Tensor:
        """EnCodec codes [B, K, F] (K = 8 at 6 kbps) -> 24 kHz waveform [B, F * 320] (fp32)."""
        self.feature_extractor.check_bandwidth_id(bandwidth_id)
        return self.decode(self.feature_extractor.codes_to_features(codes), bandwidth_id)

    @torch.no_grad()
    def forward(self, audio: torch.Tensor, bandwidth_id: int = SIX_KBPS_ID) -> torch.Tensor:
        """Copy synthesis: audio [B, N] -> EnCodec codes -> waveform [B, ceil(N / 320) * 320]."""
        return self.decode(self.feature_extractor(audio, bandwidth_id), bandwidth_id)
