"""FastPitch's mel front end (`TacotronSTFT.mel_spectrogram` of the official code).

22.05 kHz audio in [-1, 1], |STFT| with n_fft 1024 / hop 256 / periodic Hann 1024, reflect padding
of n_fft/2 on both sides (T = 1 + n // 256 frames), 80 Slaney mels over 0-8000 Hz (librosa's
filterbank), natural log of the magnitude clamped at 1e-5.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from iris_pipeline.dsp import mel_filterbank, resample


@dataclass(frozen=True)
class FastPitchMelParams:
    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    clip: float = 1e-5

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop_length


FASTPITCH_MEL = FastPitchMelParams()


@lru_cache(maxsize=4)
def fastpitch_mel_basis(params: FastPitchMelParams = FASTPITCH_MEL) -> torch.Tensor:
    """[80, 513] Slaney mel filterbank (float32, CPU)."""
    fb = mel_filterbank(params.sample_rate, params.n_fft, params.n_mels, params.fmin, params.fmax)
    return torch.from_numpy(fb.astype(np.float32))


def fastpitch_mel(samples: torch.Tensor, sample_rate: int,
                  params: FastPitchMelParams = FASTPITCH_MEL) -> torch.Tensor:
    """Log-mel [..., 80, 1 + n22k // 256] of mono `samples` at any rate (resampled to 22.05 kHz)."""
    x = samples.float()
    if sample_rate != params.sample_rate:
        x = resample(x, sample_rate, params.sample_rate)
    window = torch.hann_window(params.win_length, periodic=True, device=x.device)
    spec = torch.stft(x, n_fft=params.n_fft, hop_length=params.hop_length, win_length=params.win_length,
                      window=window, center=True, pad_mode="reflect", return_complex=True)
    mel = fastpitch_mel_basis(params).to(x.device) @ spec.abs()
    return torch.log(torch.clamp(mel, min=params.clip))
