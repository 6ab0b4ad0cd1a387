"""RMVPE's log-mel front end (not part of the checkpoint): 16 kHz, n_fft 1024, hop 160, 128 HTK mels 30-8000 Hz."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from iris_pipeline.dsp import mel_filterbank

SAMPLE_RATE = 16000
N_FFT = 1024
HOP_LENGTH = 160
N_MELS = 128
FMIN = 30.0
FMAX = 8000.0
CLAMP = 1e-5


@lru_cache(maxsize=8)
def mel_basis(device: str = "cpu") -> torch.Tensor:
    """[128, 513] HTK-scale triangles with Slaney area normalisation (librosa's `htk=True` filterbank)."""
    fb = mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS, FMIN, FMAX, htk=True, slaney_norm=True)
    return torch.from_numpy(fb.astype(np.float32)).to(device)


def log_mel(audio: torch.Tensor) -> torch.Tensor:
    """audio [B, N] at 16 kHz -> natural-log mel magnitude [B, 128, N // 160 + 1] (fp32)."""
    x = audio.float()
    window = torch.hann_window(N_FFT, periodic=True, device=x.device)
    spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=N_FFT, window=window, center=True,
                      pad_mode="reflect", return_complex=True)
    magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2))
    mel = mel_basis(str(x.device)) @ magnitude
    return torch.log(torch.clamp(mel, min=CLAMP))
