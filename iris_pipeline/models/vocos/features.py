"""EncodecFeatures: EnCodec codes -> the 128-d latent Vocos is conditioned on.

Holds a full EnCodec model (`encodec`, needed only to turn audio into codes) and a frozen copy of
its first codebooks (`codebook_weights`, one [bins, dim] block per codebook, stacked). Decoding codes
uses only `codebook_weights`: codebook k's index i is row k * bins + i, and the rows are summed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from iris_pipeline.errors import CheckpointError, InputError
from iris_pipeline.models.encodec import EncodecModel, encodec_config
from iris_pipeline.models.encodec.model import check_codes


class EncodecFeatures(nn.Module):
    def __init__(self, encodec_size: str, bandwidths: tuple[float, ...]):
        super().__init__()
        self.encodec = EncodecModel(encodec_config(encodec_size))
        self.bandwidths = tuple(bandwidths)
        self.num_q = self.encodec.config.codebooks_for_bandwidth(max(bandwidths))
        stacked = torch.cat([layer.codebook for layer in self.encodec.quantizer.vq.layers[: self.num_q]])
        self.codebook_weights = nn.Parameter(stacked, requires_grad=False)
        # False when a checkpoint in the released layout (no EnCodec weights) was loaded without an
        # EnCodec file: codes still decode, audio cannot be encoded.
        self.encodec_weights_loaded = True

    @property
    def bins(self) -> int:
        return self.encodec.config.bins

    def check_bandwidth_id(self, bandwidth_id: int) -> None:
        if not isinstance(bandwidth_id, int) or not 0 <= bandwidth_id < len(self.bandwidths):
            raise InputError(
                f"vocos bandwidth_id must be an int in [0, {len(self.bandwidths) - 1}] "
                f"(for {', '.join(f'{b:g}' for b in self.bandwidths)} kbps), got {bandwidth_id!r}"
            )

    def codes_to_features(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, F] -> features [B, dim, F]: sum over k of codebook_weights[k * bins + code]."""
        check_codes(codes, self.num_q, self.bins, "vocos codes")
        offsets = torch.arange(codes.shape[1], device=codes.device) * self.bins
        rows = codes.long() + offsets.view(1, -1, 1)
        return F.embedding(rows, self.codebook_weights).sum(dim=1).transpose(1, 2)

    def forward(self, audio: torch.Tensor, bandwidth_id: int) -> torch.Tensor:
        """audio [B, N] at 24 kHz -> features [B, dim, ceil(N / 320)], codes at that bandwidth."""
        self.check_bandwidth_id(bandwidth_id)
        if not self.encodec_weights_loaded:
            raise CheckpointError(
                "vocos_encodec_24khz: the EnCodec weights were not loaded (released layout without them); "
                "load with an EnCodec checkpoint to encode audio"
            )
        if audio.dim() != 2:
            raise InputError(f"vocos audio input must be [B, N], got {list(audio.shape)}")
        n_q = self.encodec.config.codebooks_for_bandwidth(self.bandwidths[bandwidth_id])
        with torch.no_grad():
            latent = self.encodec.encoder(audio.unsqueeze(1).to(self.encodec.dtype))
            codes = self.encodec.quantizer.encode(latent, n_q)
        return self.codes_to_features(codes.transpose(0, 1))
