"""Signal primitives the models themselves are written on: band-limited resampling and mel
filterbanks (as librosa defines them). Nothing here knows a model's rates; `timebase` owns those.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch


def resample(samples: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited polyphase resampling (scipy `resample_poly`, Kaiser window) along the last axis.

    Output length is ceil(n * new_rate / orig_rate), as `resample_poly` defines it.
    """
    if orig_rate == new_rate:
        return samples
    import scipy.signal  # imported here: it costs ~0.8 s, and most CLI runs never resample

    ratio = Fraction(int(new_rate), int(orig_rate))
    device, dtype = samples.device, samples.dtype
    y = scipy.signal.resample_poly(
        samples.detach().cpu().double().numpy(), ratio.numerator, ratio.denominator, axis=-1
    )
    return torch.from_numpy(np.ascontiguousarray(y)).to(device=device, dtype=dtype)


def hz_to_mel(freqs: np.ndarray, htk: bool = False) -> np.ndarray:
    """Slaney (linear below 1 kHz, log above) or HTK mel scale, as librosa defines them."""
    freqs = np.asanyarray(freqs, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + freqs / 700.0)
    f_sp = 200.0 / 3
    mels = freqs / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    log_region = freqs >= min_log_hz
    mels = np.where(log_region, min_log_mel + np.log(np.maximum(freqs, min_log_hz) / min_log_hz) / logstep, mels)
    return mels


def mel_to_hz(mels: np.ndarray, htk: bool = False) -> np.ndarray:
    mels = np.asanyarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None,
                   htk: bool = False, slaney_norm: bool = True) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters, equal to `librosa.filters.mel` (float64)."""
    fmax = sample_rate / 2.0 if fmax is None else fmax
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_pts = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if slaney_norm:
        weights *= (2.0 / (mel_pts[2: n_mels + 2] - mel_pts[:n_mels]))[:, None]
    return weights
