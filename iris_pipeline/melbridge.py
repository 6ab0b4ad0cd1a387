"""MelBridge: FastPitch's mel -> the mel Wav2Lip was trained on.

FastPitch: ln(mel magnitude), 22.05 kHz, |STFT| n_fft 1024 / hop 256, 80 Slaney mels over 0-8000 Hz.
Wav2Lip: 16 kHz, pre-emphasis 0.97, |STFT| n_fft 800 / hop 200 (80 frames/s), 80 Slaney mels over
55-7600 Hz, dB, normalised to +/-4 (`audio.linear_magnitude_to_wav2lip_mel`).

Both mels are linear in the STFT magnitude, so the bridge is one fixed non-negative [80, 80] matrix
on exp(FastPitch mel), precomputed once:
  1. each FastPitch band -> the mean magnitude per STFT bin under it (band value / filter area);
  2. those means, placed at the band centres, are interpolated linearly in frequency onto the
     Wav2Lip STFT grid (401 bins at 16 kHz; both grids are in Hz, so no resampling question);
  3. times the pre-emphasis gain |1 - 0.97 e^{-jw}| at each Wav2Lip bin (Wav2Lip filters before its
     STFT; for a spectrum that is smooth over a bin this is a per-bin gain);
  4. times the STFT scale ratio: a mean per-bin magnitude scales as sr/(4 BW) * line amplitude for
     resolved harmonics and as sqrt(sum(w^2) * sr) for noise; 16000/22050 = 0.726 and
     sqrt(300 * 16000 / (384 * 22050)) = 0.753 agree to 0.3 dB, we take their geometric mean;
  5. summed by Wav2Lip's filterbank.
Time: FastPitch frame i is centred at i*256/22050 s and Wav2Lip frame j at j/80 s; the log
magnitudes are interpolated linearly at the Wav2Lip frame times (held at the ends), giving exactly
`timebase.mel_column_count` frames, the count `audio.wav2lip_mel` gives for that audio.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from iris_pipeline.audio import WAV2LIP_MEL, Wav2LipMelParams, linear_magnitude_to_wav2lip_mel
from iris_pipeline.dsp import mel_filterbank
from iris_pipeline.models.fastpitch.mel import FASTPITCH_MEL, FastPitchMelParams
from iris_pipeline.timebase import mel_column_count


@lru_cache(maxsize=4)
def bridge_matrix(fp: FastPitchMelParams = FASTPITCH_MEL, w2l: Wav2LipMelParams = WAV2LIP_MEL) -> torch.Tensor:
    """[80 Wav2Lip bands, 80 FastPitch bands] non-negative map between linear mel magnitudes."""
    fp_bank = mel_filterbank(fp.sample_rate, fp.n_fft, fp.n_mels, fp.fmin, fp.fmax)  # [80, 513]
    fp_freqs = np.linspace(0.0, fp.sample_rate / 2, fp.n_fft // 2 + 1)
    area = fp_bank.sum(axis=1)
    centres = (fp_bank * fp_freqs).sum(axis=1) / area  # centre of mass of each band
    # 1: band value -> mean magnitude per bin
    to_mean = np.diag(1.0 / area)
    # 2: linear interpolation in frequency, held flat beyond the outer centres
    w2l_freqs = np.linspace(0.0, w2l.sample_rate / 2, w2l.n_fft // 2 + 1)
    interp = np.zeros((len(w2l_freqs), fp.n_mels))
    pos = np.clip(np.interp(w2l_freqs, centres, np.arange(fp.n_mels)), 0, fp.n_mels - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, fp.n_mels - 1)
    frac = pos - lo
    interp[np.arange(len(w2l_freqs)), lo] += 1.0 - frac
    interp[np.arange(len(w2l_freqs)), hi] += frac
    # 3: pre-emphasis gain per Wav2Lip bin
    omega = 2 * np.pi * w2l_freqs / w2l.sample_rate
    preemph = np.abs(1.0 - w2l.preemphasis * np.exp(-1j * omega))
    # 4: STFT scale ratio (harmonic lines vs noise, geometric mean)
    line = w2l.sample_rate / fp.sample_rate
    noise = math.sqrt((3 * w2l.win_length / 8 * w2l.sample_rate) / (3 * fp.win_length / 8 * fp.sample_rate))
    scale = math.sqrt(line * noise)
    # 5: Wav2Lip's filterbank
    w2l_bank = mel_filterbank(w2l.sample_rate, w2l.n_fft, w2l.n_mels, w2l.fmin, w2l.fmax)
    matrix = w2l_bank @ (scale * preemph[:, None] * interp) @ to_mean
    return torch.from_numpy(matrix.astype(np.float32))


class MelBridge:
    """Maps FastPitch log-mels [..., 80, T_fp] to Wav2Lip mels [..., 80, M] covering N samples of audio."""

    def __init__(self, fp: FastPitchMelParams = FASTPITCH_MEL, w2l: Wav2LipMelParams = WAV2LIP_MEL):
        self.fp, self.w2l = fp, w2l
        self.matrix = bridge_matrix(fp, w2l)

    def resample_time(self, log_mel: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Linear interpolation of [..., C, T_fp] at Wav2Lip frame times -> [..., C, num_frames]."""
        t_out = torch.arange(num_frames, device=log_mel.device, dtype=torch.float64) / self.w2l.frames_per_second
        pos = (t_out * self.fp.frames_per_second).clamp(0, log_mel.shape[-1] - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp_max(log_mel.shape[-1] - 1)
        frac = (pos - lo).to(log_mel.dtype)
        return log_mel[..., lo] * (1 - frac) + log_mel[..., hi] * frac

    def __call__(self, fastpitch_mel: torch.Tensor, num_samples: int, sample_rate: int) -> torch.Tensor:
        x = fastpitch_mel.float()
        magnitude = self.matrix.to(x.device) @ torch.exp(x)  # linear Wav2Lip mel magnitudes
        log_mag = torch.log(magnitude.clamp_min(1e-10))
        resampled = self.resample_time(log_mag, mel_column_count(num_samples, sample_rate))
        return linear_magnitude_to_wav2lip_mel(torch.exp(resampled), self.w2l)
