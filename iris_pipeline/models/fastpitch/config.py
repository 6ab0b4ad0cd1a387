"""FastPitch 1.1 hyper-parameters: the released LJSpeech checkpoint's config and a tiny one for tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from iris_pipeline.text.fastpitch_en import N_SYMBOLS, PAD_ID


@dataclass(frozen=True)
class FastPitchConfig:
    """Names follow the official `get_model_config` keys (dropouts are inference no-ops, left out)."""

    n_mel_channels: int = 80
    n_symbols: int = N_SYMBOLS  # english_basic: 148
    padding_idx: int = PAD_ID
    symbols_embedding_dim: int = 384
    in_fft_n_layers: int = 6
    in_fft_n_heads: int = 1
    in_fft_d_head: int = 64
    in_fft_conv1d_kernel_size: int = 3
    in_fft_conv1d_filter_size: int = 1536
    in_fft_output_size: int = 384
    out_fft_n_layers: int = 6
    out_fft_n_heads: int = 1
    out_fft_d_head: int = 64
    out_fft_conv1d_kernel_size: int = 3
    out_fft_conv1d_filter_size: int = 1536
    out_fft_output_size: int = 384
    dur_predictor_kernel_size: int = 3
    dur_predictor_filter_size: int = 256
    dur_predictor_n_layers: int = 2
    pitch_predictor_kernel_size: int = 3
    pitch_predictor_filter_size: int = 256
    pitch_predictor_n_layers: int = 2
    pitch_embedding_kernel_size: int = 3
    energy_conditioning: bool = True  # scripts/train.sh: ENERGY=true for the released model
    energy_predictor_kernel_size: int = 3
    energy_predictor_filter_size: int = 256
    energy_predictor_n_layers: int = 2
    energy_embedding_kernel_size: int = 3
    n_speakers: int = 1
    speaker_emb_weight: float = 1.0
    pitch_conditioning_formants: int = 1
    # ConvAttention(n_mel_channels, 0, symbols_embedding_dim): its n_att_channels default.
    attention_channels: int = 80

    def as_dict(self) -> dict:
        return asdict(self)


FULL = FastPitchConfig()

# Same code, few channels and layers: the symbol set and the 80-band mel stay, the rest shrinks.
TINY = replace(
    FULL,
    symbols_embedding_dim=32,
    in_fft_n_layers=2, in_fft_d_head=16, in_fft_conv1d_filter_size=64, in_fft_output_size=32,
    out_fft_n_layers=2, out_fft_d_head=16, out_fft_conv1d_filter_size=64, out_fft_output_size=32,
    dur_predictor_filter_size=32, pitch_predictor_filter_size=32, energy_predictor_filter_size=32,
)

CONFIGS = {"full": FULL, "tiny": TINY}
