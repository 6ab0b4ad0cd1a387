"""ISTFT head: hidden frames -> complex spectrum (log-magnitude, phase) -> waveform by inverse STFT."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ISTFT(nn.Module):
    """Inverse STFT with "same" padding: T frames -> exactly T * hop samples.

    torch.istft only trims with center=True, so the overlap-add is done here: inverse FFT per frame,
    Hann window, fold (overlap-add), trim (win - hop) / 2 on each side, divide by the summed squared
    window. Always computed in fp32: cuFFT has no fp16 transform of size 1280 (not a power of two).
    """

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        if (n_fft - hop_length) % 2:
            raise ValueError(f"ISTFT 'same' padding needs n_fft - hop even, got {n_fft} and {hop_length}")
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.register_buffer("window", torch.hann_window(n_fft))

    def _overlap_add(self, frames: torch.Tensor, num_frames: int) -> torch.Tensor:
        """frames [B, n_fft, T] -> [B, (T - 1) * hop + n_fft] with the padding trimmed."""
        pad = (self.n_fft - self.hop_length) // 2
        length = (num_frames - 1) * self.hop_length + self.n_fft
        summed = F.fold(frames, output_size=(1, length), kernel_size=(1, self.n_fft),
                        stride=(1, self.hop_length))
        return summed[:, 0, 0, pad: length - pad]

    def forward(self, spectrum: torch.Tensor) -> torch.Tensor:
        """spectrum: complex [B, n_fft // 2 + 1, T] -> waveform [B, T * hop] (fp32)."""
        num_frames = spectrum.shape[-1]
        window = self.window.float()
        frames = torch.fft.irfft(spectrum, self.n_fft, dim=1, norm="backward") * window[None, :, None]
        audio = self._overlap_add(frames, num_frames)
        envelope = self._overlap_add(window.square()[None, :, None].expand(1, -1, num_frames), num_frames)
        return audio / envelope


class ISTFTHead(nn.Module):
    def __init__(self, dim: int, n_fft: int, hop_length: int):
        super().__init__()
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = ISTFT(n_fft, hop_length)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, T, dim] -> waveform [B, T * hop] (fp32)."""
        x = self.out(hidden).transpose(1, 2).float()
        log_magnitude, phase = x.chunk(2, dim=1)
        magnitude = torch.exp(log_magnitude).clamp(max=1e2)  # the official guard against huge values
        spectrum = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        return self.istft(spectrum)
