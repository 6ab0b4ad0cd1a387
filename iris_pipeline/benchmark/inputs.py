"""The benchmark's inputs: scripts sized for L seconds, a seeded synthetic reference voice, and the
bundled avatar photo, so the main job needs no user files (--avatar / --reference override them)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from iris_pipeline import chunking
from iris_pipeline.audio import Waveform, check_waveform, read_audio

REFERENCE_SECONDS = 3.0
REFERENCE_RATE = 16000
AVATAR_FILE = "benchmark_avatar.jpg"


def default_avatar_path() -> Path:
    """The bundled avatar (a public-domain NASA portrait; see iris_pipeline/data/README.md)."""
    return Path(__file__).resolve().parents[1] / "data" / AVATAR_FILE


def synthetic_reference(seed: int = 0, seconds: float = REFERENCE_SECONDS, sample_rate: int = REFERENCE_RATE) -> Waveform:
    """A voiced, speech-like signal: a glottal pulse train (f0 gliding around 100-180 Hz) shaped by
    three formant resonances that move per syllable (~4 per second), with syllable envelopes and a
    little breath noise. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = 140 + 25 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 2 * np.pi)) + 10 * np.cumsum(
        rng.normal(0, 1, n)) / math.sqrt(n)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    source = np.zeros(n)
    for h in range(1, 30):  # harmonics with a -12 dB/octave glottal tilt
        source += np.sin(h * phase) / h**2
    syllables = max(1, int(seconds * 4))
    edges = np.linspace(0, n, syllables + 1).astype(int)
    voiced = np.zeros(n)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        formants = (rng.uniform(300, 800), rng.uniform(900, 2200), rng.uniform(2400, 3200))
        segment = _resonate(source[a:b], formants, sample_rate)
        voiced[a:b] = segment * np.hanning(b - a) ** 0.5
    signal = voiced + 0.01 * rng.normal(0, 1, n)
    signal = 0.5 * signal / np.max(np.abs(signal))
    wave = Waveform(torch.from_numpy(signal.astype(np.float32)), sample_rate)
    check_waveform(wave, name="synthetic reference", min_seconds=1.0)
    return wave


def _resonate(x: np.ndarray, formants: tuple[float, ...], sample_rate: int, bandwidth: float = 120.0) -> np.ndarray:
    """Sum of second-order resonators (one per formant), by scipy's IIR filter."""
    from scipy.signal import lfilter

    out = np.zeros_like(x)
    for f in formants:
        r = math.exp(-math.pi * bandwidth / sample_rate)
        theta = 2 * math.pi * f / sample_rate
        out += lfilter([1 - r], [1, -2 * r * math.cos(theta), r * r], x)
    return out


def load_reference(path: Path | None, seed: int) -> Waveform:
    return read_audio(path, name="reference") if path is not None else synthetic_reference(seed)


def reference_transcript(language: str) -> str:
    """A transcript sized for the reference's length (the synthetic voice says nothing real)."""
    return chunking.benchmark_script(REFERENCE_SECONDS, language)


def script_for(clip_seconds: float, language: str) -> str:
    """A script whose expected duration is L seconds; the job also imposes exactly L * 75 codec frames."""
    return chunking.benchmark_script(clip_seconds, language)
