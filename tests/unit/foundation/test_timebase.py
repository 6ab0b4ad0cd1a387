"""The time base against the real Wav2Lip mel, for every length in a range.

Computing `audio.wav2lip_mel` for every length would take minutes, so the count is checked in two
steps: (1) the mel's length rule, taken from its parts (the resampler returns ceil(N * 16000 / sr)
samples; a centred torch STFT with n_fft 800, hop 200 returns 1 + (L + 2 * 400 - 800) // 200
columns), is checked against the real `wav2lip_mel` on a dense random sample of lengths and on
every hop boundary near them; (2) `timebase.mel_column_count` is checked against that rule for every
length 1..20000 and a sample of longer ones, at 16, 22.05 and 24 kHz.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iris_pipeline.audio import wav2lip_mel
from iris_pipeline.timebase import (
    CODEC_FRAME_RATE,
    CODEC_HOP,
    CODEC_RATE,
    MEL_COLUMN_RATE,
    mel_column_count,
    pad_columns,
    place_chunk_mel,
)

RATES = (16000, 22050, 24000)
WAV2LIP_RATE, N_FFT, HOP = 16000, 800, 200  # Wav2Lip's hparams


def rule_columns(lengths: np.ndarray, rate: int) -> np.ndarray:
    """Columns of `wav2lip_mel` for N samples at `rate`, from the resampler's and the STFT's length rules."""
    resampled = -(-lengths * WAV2LIP_RATE // rate)
    return 1 + (resampled + 2 * (N_FFT // 2) - N_FFT) // HOP


def _lengths(rate: int) -> np.ndarray:
    """Every length 1..20000 and 2000 seeded lengths up to 10 minutes of audio."""
    longer = np.random.default_rng(rate).integers(20001, 600 * rate, size=2000)
    return np.concatenate([np.arange(1, 20001), longer]).astype(np.int64)


def _real_mel_lengths(rate: int) -> list[int]:
    """Lengths for the real mel: seeded random ones, each with its neighbours on both sides of the
    nearest hop boundary (the resampled length crossing a multiple of 200), and the issue's 1199."""
    rng = np.random.default_rng(1000 + rate)
    shortest = -(-(N_FFT // 2 + 1) * rate // WAV2LIP_RATE)  # the centred STFT needs > 400 samples at 16 kHz
    picks = set(rng.integers(shortest, 20000, size=40).tolist())
    for n in list(picks):
        boundary = (-(-n * WAV2LIP_RATE // rate) // HOP) * HOP * rate // WAV2LIP_RATE
        picks.update(m for m in range(boundary - 1, boundary + 2) if m >= shortest)
    picks.add(1199)
    return sorted(picks)


@pytest.mark.parametrize("rate", RATES)
def test_length_rule_is_that_of_the_real_wav2lip_mel(rate: int) -> None:
    lengths = _real_mel_lengths(rate)
    generator = torch.Generator().manual_seed(rate)
    real = [wav2lip_mel(torch.rand(n, generator=generator) - 0.5, rate).shape[1] for n in lengths]
    assert real == rule_columns(np.array(lengths), rate).tolist()


@pytest.mark.parametrize("rate", RATES)
def test_column_count_is_the_real_count_for_every_length(rate: int) -> None:
    lengths = _lengths(rate)
    ours = np.array([mel_column_count(int(n), rate) for n in lengths])
    wrong = lengths[ours != rule_columns(lengths, rate)]
    assert wrong.size == 0, f"{wrong.size} lengths at {rate} Hz disagree, e.g. {wrong[:5].tolist()}"


def test_the_issues_example_has_five_columns() -> None:
    # 1199 samples at 24 kHz: 799.33 samples at 16 kHz, which the resampler returns as 800
    assert mel_column_count(1199, 24000) == 5


def test_codec_rates_are_consistent() -> None:
    assert (CODEC_RATE, CODEC_HOP, CODEC_FRAME_RATE) == (24000, 320, 75)
    assert CODEC_HOP * CODEC_FRAME_RATE == CODEC_RATE
    assert MEL_COLUMN_RATE == 80


@pytest.mark.parametrize("rate", RATES)
def test_placed_chunk_mels_tile_the_global_grid(rate: int) -> None:
    """Chunks of any lengths own consecutive global columns, each once; padding reaches the real count."""
    rng = np.random.default_rng(rate)
    lengths = rng.integers(1, 3 * rate, size=12).tolist()
    placed, start = [], 0
    for n in lengths:
        # a chunk's own mel whose column j holds the chunk-local time j / 80 (in seconds)
        columns = mel_column_count(n, rate)
        times = torch.arange(columns, dtype=torch.float64)[None] / MEL_COLUMN_RATE
        mel = place_chunk_mel(times + start / rate, start, n, rate)  # value = global time of the column
        placed.append(mel)
        start += n
    whole = torch.cat(placed, dim=1)
    grid = torch.arange(whole.shape[1], dtype=torch.float64) / MEL_COLUMN_RATE
    assert whole.shape[1] == -(-start * MEL_COLUMN_RATE // rate)  # every column before the end, once
    # each global column takes the chunk column nearest in time: within half a column, or (past a
    # chunk's last column, which can fall up to one column before its span's end) within one
    assert float((whole[0] - grid).abs().max()) <= 1 / MEL_COLUMN_RATE + 1e-12
    total = mel_column_count(start, rate)
    padded = pad_columns(whole, total)
    assert padded.shape[1] == total
    assert torch.equal(padded[:, whole.shape[1]:], whole[:, -1:].expand(-1, total - whole.shape[1]))
