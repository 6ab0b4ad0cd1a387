"""Hyper-parameters of VALL-E X (Plachtaa/VALL-E-X `macros.py`, `models/macros.py`) and a tiny variant."""

from __future__ import annotations

from dataclasses import dataclass

NUM_TEXT_TOKENS = 2048  # rows of each text embedding; the front end only produces ids 0..69
NUM_AUDIO_TOKENS = 1024  # EnCodec codebook size
EOS_ID = NUM_AUDIO_TOKENS  # AR output class 1024 ends the stream (also the official "pad")
BOS_ID = NUM_AUDIO_TOKENS + 1  # input-only token that starts the AR audio stream
NUM_QUANTIZERS = 8  # EnCodec 24 kHz at 6 kbps
SAMPLE_RATE = 24_000
FRAME_RATE = 75  # EnCodec frames per second (hop 320 samples)
HOP_LENGTH = SAMPLE_RATE // FRAME_RATE
MAX_NEW_FRAMES_PER_TEXT_TOKEN = 16  # official AR cap: 16 x (prompt + target text tokens)

# Language indices of the model's language embeddings (VALLE.language_ID).
LANGUAGE_IDS: dict[str, int] = {"en": 0, "zh": 1, "ja": 2}
# The different mapping the official prompt `.npz` files store (`macros.lang2code`).
PROMPT_LANG_CODES: dict[str, int] = {"zh": 0, "ja": 1, "en": 2}


@dataclass(frozen=True)
class VallexConfig:
    d_model: int = 1024
    nhead: int = 16
    num_layers: int = 12
    dim_feedforward: int = 4096
    num_text_tokens: int = NUM_TEXT_TOKENS
    num_audio_tokens: int = NUM_AUDIO_TOKENS
    num_quantizers: int = NUM_QUANTIZERS
    num_languages: int = len(LANGUAGE_IDS)
    layer_norm_eps: float = 1e-5
    positional_table: int = 4000  # initial sinusoid rows; grows on demand

    @property
    def head_dim(self) -> int:
        return self.d_model // self.nhead


FULL = VallexConfig()
# Same code, few channels and layers: CPU tests run in milliseconds. Token counts and the FFN ratio
# stay official (it is the official VALLE(64, 4, 2)), so ids (text 0..69, codes 0..1023, EOS 1024,
# BOS 1025) mean the same in both sizes.
TINY = VallexConfig(d_model=64, nhead=4, num_layers=2, dim_feedforward=256)

CONFIGS: dict[str, VallexConfig] = {"full": FULL, "tiny": TINY}
