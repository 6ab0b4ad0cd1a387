"""EnCodec 24 kHz: waveform <-> residual-VQ codes at 75 frames/s."""

from __future__ import annotations

import torch
from torch import nn

from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.models.encodec.config import EncodecConfig
from iris_pipeline.models.encodec.quantizer import ResidualVectorQuantizer
from iris_pipeline.models.encodec.seanet import SEANetDecoder, SEANetEncoder


class EncodecModel(nn.Module):
    """`encode(wav [B, 1, N]) -> codes [B, n_q, ceil(N / 320)]`, `decode(codes) -> [B, 1, F * 320]`.

    The number of codebooks follows the target bandwidth (6 kbps -> 8 by default, as VALL-E X sets
    it). No audio normalisation and no segmenting: the 24 kHz model uses neither.
    """

    def __init__(self, config: EncodecConfig):
        super().__init__()
        self.config = config
        self.encoder = SEANetEncoder(config)
        self.quantizer = ResidualVectorQuantizer(config.dimension, config.n_q, config.bins)
        self.decoder = SEANetDecoder(config)
        self.bandwidth = config.default_bandwidth

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def frame_rate(self) -> int:
        return self.config.frame_rate

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.model[0].conv.conv.weight_v.dtype

    @property
    def num_codebooks(self) -> int:
        """Codebooks `encode` emits at the current bandwidth."""
        return self.config.codebooks_for_bandwidth(self.bandwidth)

    def set_target_bandwidth(self, kbps: float) -> None:
        if kbps not in self.config.target_bandwidths:
            allowed = ", ".join(f"{b:g}" for b in self.config.target_bandwidths)
            raise ConfigError(f"encodec bandwidth {kbps!r} kbps is not supported; allowed: {allowed}")
        self.bandwidth = float(kbps)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 3 or wav.shape[1] != self.config.channels or wav.shape[-1] == 0:
            raise InputError(
                f"encodec input must be a waveform [B, {self.config.channels}, N>0], got {list(wav.shape)}"
            )
        if not wav.is_floating_point():
            raise InputError(f"encodec input must be a float waveform, got dtype {wav.dtype}")
        # the model may run in fp16 while callers hand in fp32 audio
        latent = self.encoder(wav.to(self.dtype))
        codes = self.quantizer.encode(latent, self.num_codebooks)
        return codes.transpose(0, 1).contiguous()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        check_codes(codes, self.config.n_q, self.config.bins, "encodec codes")
        latent = self.quantizer.decode(codes.long().transpose(0, 1))
        return self.decoder(latent)


def check_codes(codes: torch.Tensor, max_codebooks: int, bins: int, name: str) -> None:
    """InputError unless `codes` is an integer [B, K, F] with 1 <= K <= max_codebooks, F >= 1, values < bins."""
    if codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise InputError(f"{name} must be an integer tensor, got dtype {codes.dtype}")
    if codes.dim() != 3 or not 1 <= codes.shape[1] <= max_codebooks or codes.shape[2] == 0:
        raise InputError(f"{name} must be [B, K<={max_codebooks}, F>0], got {list(codes.shape)}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= bins):
        raise InputError(f"{name} must lie in [0, {bins}), got values in [{int(codes.min())}, {int(codes.max())}]")
