"""Waveforms: reading, checking, resampling, and the Wav2Lip mel front end.

The Wav2Lip mel is the one its generator was trained on (Rudrabha/Wav2Lip `audio.py` with
`hparams.py`): 16 kHz (other rates resampled by soxr HQ, librosa's default resampler), pre-emphasis 0.97, |STFT| with n_fft 800 / hop 200 / Hann window 800
(centred, reflect padding, as librosa 0.7 did), 80 Slaney mels over 55-7600 Hz, amplitude to dB,
minus 20 dB reference level, then a symmetric normalisation to [-4, 4]. 80 frames per second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from iris_pipeline.dsp import mel_filterbank, resample
from iris_pipeline.errors import InputError
from iris_pipeline.timebase import MEL_BINS, MEL_HOP, MEL_RATE, MEL_STFT_WINDOW, resampled_length


@dataclass(frozen=True)
class Waveform:
    """Mono audio: `samples` is a 1-D float tensor in [-1, 1] at `sample_rate` Hz."""

    samples: torch.Tensor
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.samples.shape[-1] / self.sample_rate

    def to(self, device: torch.device | str) -> Waveform:
        return Waveform(self.samples.to(device), self.sample_rate)


def read_audio(path: str | Path, name: str = "audio") -> Waveform:
    """Read a sound file as mono float32; a non-audio or corrupt file is an `InputError`."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{name} {path}: no such file")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise InputError(f"{name} {path}: not a readable audio file ({str(exc).splitlines()[0]})") from exc
    samples = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    return Waveform(samples, int(rate))


def check_waveform(wave: Waveform, name: str = "audio", min_seconds: float = 0.0,
                   max_seconds: float | None = None) -> None:
    """Refuse NaN/inf, silence, and durations outside the allowed range, with one clear line."""
    x = wave.samples
    if x.ndim != 1:
        raise InputError(f"{name}: expected mono audio (1-D samples), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise InputError(f"{name}: audio is empty")
    if not torch.isfinite(x).all():
        raise InputError(f"{name}: audio contains NaN or infinite samples")
    if float(x.abs().max()) < 1e-4:
        raise InputError(f"{name}: audio is silent (peak below -80 dBFS)")
    if wave.seconds < min_seconds:
        raise InputError(f"{name}: audio is {wave.seconds:.2f} s long, shorter than the minimum {min_seconds:g} s")
    if max_seconds is not None and wave.seconds > max_seconds:
        raise InputError(f"{name}: audio is {wave.seconds:.2f} s long, longer than the maximum {max_seconds:g} s")


def resample_soxr_hq(samples: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """1-D samples resampled as `librosa.resample` does by default (what `librosa.load(sr=...)` uses):
    soxr at "HQ" quality on float32, the length fixed to ceil(n * new / orig) (zero-padded or cut)."""
    if orig_rate == new_rate:
        return samples.float()
    import soxr

    x = np.ascontiguousarray(samples.detach().cpu().float().numpy())
    y = soxr.resample(x, int(orig_rate), int(new_rate), quality="HQ")
    length = resampled_length(x.shape[0], int(orig_rate), int(new_rate))
    y = np.pad(y, (0, max(0, length - y.shape[0])))[:length]
    return torch.from_numpy(np.ascontiguousarray(y)).to(samples.device)


def resample_waveform(wave: Waveform, new_rate: int) -> Waveform:
    return Waveform(resample(wave.samples, wave.sample_rate, new_rate), new_rate)


# --- the Wav2Lip mel ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Wav2LipMelParams:
    sample_rate: int = MEL_RATE
    n_fft: int = MEL_STFT_WINDOW
    hop_length: int = MEL_HOP
    win_length: int = MEL_STFT_WINDOW
    n_mels: int = MEL_BINS
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = 4.0

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


WAV2LIP_MEL = Wav2LipMelParams()


@lru_cache(maxsize=8)
def _wav2lip_basis(params: Wav2LipMelParams) -> torch.Tensor:
    fb = mel_filterbank(params.sample_rate, params.n_fft, params.n_mels, params.fmin, params.fmax)
    return torch.from_numpy(fb.astype(np.float32))


def wav2lip_mel_basis(params: Wav2LipMelParams = WAV2LIP_MEL) -> torch.Tensor:
    """The [80, n_fft/2+1] Slaney mel filterbank of Wav2Lip (float32, CPU)."""
    return _wav2lip_basis(params)


def linear_magnitude_to_wav2lip_mel(magnitude: torch.Tensor,
                                    params: Wav2LipMelParams = WAV2LIP_MEL) -> torch.Tensor:
    """Mel-domain linear magnitude [..., 80, T] -> Wav2Lip's dB, normalised to +/-max_abs."""
    min_level = math.exp(params.min_level_db / 20.0 * math.log(10.0))
    db = 20.0 * torch.log10(torch.clamp(magnitude, min=min_level)) - params.ref_level_db
    scaled = 2.0 * params.max_abs_value * (db - params.min_level_db) / (-params.min_level_db)
    return torch.clamp(scaled - params.max_abs_value, -params.max_abs_value, params.max_abs_value)


def wav2lip_mel(samples: torch.Tensor, sample_rate: int,
                params: Wav2LipMelParams = WAV2LIP_MEL) -> torch.Tensor:
    """The Wav2Lip mel [80, T] (T = `timebase.mel_column_count`) of mono `samples` at any rate.

    Other rates are brought to 16 kHz as the official `audio.load_wav` does (librosa's default
    resampler, soxr HQ; see `resample_soxr_hq`).
    """
    x = resample_soxr_hq(samples, sample_rate, params.sample_rate)
    # pre-emphasis: y[n] = x[n] - 0.97 x[n-1] (scipy.signal.lfilter([1, -k], [1], x))
    x = torch.cat([x[..., :1], x[..., 1:] - params.preemphasis * x[..., :-1]], dim=-1)
    window = torch.hann_window(params.win_length, periodic=True, device=x.device)
    spec = torch.stft(x, n_fft=params.n_fft, hop_length=params.hop_length, win_length=params.win_length,
                      window=window, center=True, pad_mode="reflect", return_complex=True)
    mel = wav2lip_mel_basis(params).to(x.device) @ spec.abs()
    return linear_magnitude_to_wav2lip_mel(mel, params)
