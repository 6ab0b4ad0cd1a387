"""Hyper-parameters of Vocos trained on EnCodec codes (charactr/vocos-encodec-24khz).

`full` is checked against gemelo-ai/vocos `configs/vocos-encodec.yaml` (commit c859e3b): EncodecFeatures
(encodec_24khz, bandwidths 1.5/3/6/12, frozen codebooks), VocosBackbone (128 -> 384, 1152, 8 layers,
AdaLayerNorm over 4 bandwidth ids), ISTFTHead (n_fft 1280, hop 320, "same" padding).
"""

from __future__ import annotations

from dataclasses import dataclass

from iris_pipeline.errors import ConfigError


@dataclass(frozen=True)
class VocosConfig:
    encodec_size: str = "full"
    bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0)
    input_channels: int = 128  # EnCodec latent dimension
    dim: int = 384
    intermediate_dim: int = 1152
    num_layers: int = 8
    n_fft: int = 1280
    hop_length: int = 320

    @property
    def adanorm_num_embeddings(self) -> int:
        return len(self.bandwidths)


CONFIGS = {
    "full": VocosConfig(),
    # same hop, FFT size and code range as full, so shapes and lengths of outputs agree
    "tiny": VocosConfig(encodec_size="tiny", input_channels=32, dim=32, intermediate_dim=96, num_layers=2),
}


def vocos_config(size: str) -> VocosConfig:
    if size not in CONFIGS:
        raise ConfigError(f"vocos_encodec_24khz: size must be one of {sorted(CONFIGS)}, got {size!r}")
    return CONFIGS[size]
