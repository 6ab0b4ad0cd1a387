"""`audio.wav2lip_mel` against librosa running the official recipe (Rudrabha/Wav2Lip audio.py + hparams.py)
on real speech.

Tolerances (the mel is normalised to [-4, 4]):
- 16 kHz input: max |difference| <= 1e-4 (float32 STFT against librosa's float64);
- 44.1 kHz input: our resampler (scipy polyphase, Kaiser) and librosa's (soxr) differ in the stop band,
  which shows in quiet mel bins: mean |difference| <= 0.01 and 99th percentile <= 0.1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile
import torch

from iris_pipeline.audio import wav2lip_mel

librosa = pytest.importorskip("librosa")

SPEECH = Path(__file__).resolve().parents[2] / "data" / "speech_en_16k.wav"


def official_melspectrogram(wav: np.ndarray) -> np.ndarray:
    """audio.melspectrogram of Wav2Lip with its hparams, written with librosa (pad_mode='reflect' as
    librosa 0.7, the version Wav2Lip pins, padded)."""
    emphasised = scipy.signal.lfilter([1, -0.97], [1], wav)
    spec = librosa.stft(y=emphasised, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect")
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    min_level = np.exp(-100 / 20 * np.log(10))
    db = 20 * np.log10(np.maximum(min_level, np.dot(basis, np.abs(spec)))) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    samples, rate = soundfile.read(str(SPEECH), dtype="float32")
    assert rate == 16000 and samples.ndim == 1 and len(samples) > 2 * rate
    return samples


def test_wav2lip_mel_matches_the_official_recipe_at_16k(speech):
    ours = wav2lip_mel(torch.from_numpy(speech), 16000).double().numpy()
    reference = official_melspectrogram(speech.astype(np.float64))
    assert ours.shape == reference.shape == (80, 1 + len(speech) // 200)
    assert reference.min() < -3.0 and reference.max() > 0.0  # real speech spans the range
    assert np.abs(ours - reference).max() <= 1e-4


def test_wav2lip_mel_of_44k_input_matches_librosa_resampling_then_the_recipe(speech):
    high = scipy.signal.resample_poly(speech.astype(np.float64), 441, 160).astype(np.float32)
    ours = wav2lip_mel(torch.from_numpy(high), 44100).double().numpy()
    reference = official_melspectrogram(librosa.resample(high.astype(np.float64), orig_sr=44100, target_sr=16000))
    frames = min(ours.shape[1], reference.shape[1])
    assert abs(ours.shape[1] - reference.shape[1]) <= 1
    diff = np.abs(ours[:, :frames] - reference[:, :frames])
    assert diff.mean() <= 0.01
    assert np.percentile(diff, 99) <= 0.1
