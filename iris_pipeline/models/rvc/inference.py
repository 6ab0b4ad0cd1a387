"""RVC's offline conversion path (classic WebUI `Pipeline.pipeline` / `vc`), on 16 kHz audio.

high-pass (Butterworth 5, 48 Hz, zero phase) -> split points for long audio -> reflect padding ->
RMVPE f0 over the whole padded audio, transposed, coarse ids -> per chunk: HuBERT features,
optional index retrieval, 2x frame repetition, protect rule for unvoiced frames, synthesizer ->
padding trimmed -> chunks joined -> loudness envelope mixed with the input's (`rms_mix_rate`) ->
peak-limited. Unvoiced frames keep f0 = 0 (classic behaviour); the 2026 code interpolates them
(`interpolate_unvoiced=True`), which makes `protect` inert.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.signal
import torch

from iris_pipeline.models.rmvpe import DEFAULT_THRESHOLD, estimate_f0
from iris_pipeline.models.rvc.pitch import coarse_pitch
from iris_pipeline.models.rvc.retrieval import FeatureIndex
from iris_pipeline.models.rvc.synthesizer import PRIOR_NOISE_SCALE, SynthesizerTrnMs768NSFsid

SAMPLE_RATE = 16000  # HuBERT and RMVPE input rate
WINDOW = 160  # samples per f0 frame (10 ms)
HIGH_PASS_HZ = 48.0
INPUT_PEAK = 0.95  # inputs louder than this are scaled down to it
OUTPUT_PEAK = 0.99
RMS_MIX_RATE = 0.25  # the WebUI's default: the output keeps 25 % of its own loudness envelope
RMS_FLOOR = 1e-6  # the output's RMS is floored here before dividing by it


@dataclass(frozen=True)
class ChunkConstants:
    """Seconds of reflect padding per side, split search radius, split spacing, length without splits."""

    x_pad: int
    x_query: int
    x_center: int
    x_max: int

    def __post_init__(self):
        if not (self.x_pad >= 1 and 0 < self.x_query < self.x_center < self.x_max):
            raise ValueError("chunk constants need x_pad >= 1 and 0 < x_query < x_center < x_max")


# `configs/config.py`: half precision on a GPU / full precision.
CHUNKS_HALF = ChunkConstants(x_pad=3, x_query=10, x_center=60, x_max=65)
CHUNKS_FULL = ChunkConstants(x_pad=1, x_query=6, x_center=38, x_max=41)


@lru_cache(maxsize=1)
def _high_pass() -> tuple[np.ndarray, np.ndarray]:
    return scipy.signal.butter(N=5, Wn=HIGH_PASS_HZ, btype="high", fs=SAMPLE_RATE)


def prepare_input(audio16k: np.ndarray) -> np.ndarray:
    """Peak-limit to 0.95 and high-pass (zero phase), float64, as RVC's loader and pipeline do."""
    audio = np.asarray(audio16k, dtype=np.float64)
    peak = np.abs(audio).max() / INPUT_PEAK
    if peak > 1:
        audio = audio / peak
    b, a = _high_pass()
    return scipy.signal.filtfilt(b, a, audio)


def fill_unvoiced(f0: torch.Tensor) -> torch.Tensor:
    """[B, T] f0 with unvoiced (0) frames linearly interpolated between voiced ones, constant at the ends."""
    filled = f0.clone()
    for row in filled:
        voiced = torch.nonzero(row > 0).flatten()
        if 0 < voiced.numel() < row.numel():
            frames = np.arange(row.numel())
            values = np.interp(frames, voiced.cpu().numpy(), row[voiced].cpu().double().numpy())
            row.copy_(torch.from_numpy(values))
    return filled


def protect_unvoiced(feats: torch.Tensor, raw: torch.Tensor, f0: torch.Tensor, protect: float) -> torch.Tensor:
    """Protect rule: on unvoiced frames (f0 < 1; consonants, breaths) the features are
    protect * feats + (1 - protect) * raw (before retrieval); voiced frames keep feats."""
    weight = torch.where(f0 < 1, protect, 1.0).unsqueeze(-1).to(feats.dtype)
    return feats * weight + raw * (1 - weight)


def split_points(audio: np.ndarray, chunks: ChunkConstants) -> list[int]:
    """Split positions (samples, before padding) at the quietest 10 ms near every multiple of x_center."""
    t_query, t_center = SAMPLE_RATE * chunks.x_query, SAMPLE_RATE * chunks.x_center
    padded = np.pad(audio, (WINDOW // 2, WINDOW // 2), mode="reflect")
    if padded.shape[0] <= SAMPLE_RATE * chunks.x_max:
        return []
    moving_sum = np.zeros_like(audio)
    for i in range(WINDOW):  # moving sum of |x|, summed in the official order
        moving_sum += np.abs(padded[i: i - WINDOW])
    return [t - t_query + int(np.argmin(moving_sum[t - t_query: t + t_query]))
            for t in range(t_center, audio.shape[0], t_center)]


def half_second_rms(samples: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """RMS of frames of ~1 s every 0.5 s (frame sr//2*2, hop sr//2, centred with zero padding),
    in float32, as `librosa.feature.rms` computes it for RVC's loudness matching."""
    hop = sample_rate // 2
    frame = 2 * hop
    padded = torch.nn.functional.pad(samples.float(), (frame // 2, frame // 2))
    return padded.unfold(0, frame, hop).pow(2).mean(dim=-1).sqrt()


def mix_loudness(source: torch.Tensor, source_rate: int, converted: torch.Tensor, converted_rate: int,
                 rate: float) -> torch.Tensor:
    """Give `converted` the loudness envelope rms_src^(1-rate) * rms_out^rate (official `change_rms`).

    Both half-second RMS tracks are stretched linearly (align_corners=False) to the output's length;
    rate 1 leaves the output as it is, rate 0 imposes the input's envelope.
    """
    n = converted.shape[0]

    def stretched(rms: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(rms[None, None], size=n, mode="linear")[0, 0]

    source_rms = stretched(half_second_rms(source.to(converted.device), source_rate))
    converted_rms = stretched(half_second_rms(converted, converted_rate)).clamp(min=RMS_FLOOR)
    gain = source_rms.pow(1 - rate) * converted_rms.pow(rate - 1)
    return (converted.float() * gain).to(converted.dtype)


class VoiceConverter:
    """Converts 16 kHz audio to the voice of `synthesizer` (models already on their device and dtype)."""

    def __init__(self, hubert: torch.nn.Module, rmvpe: torch.nn.Module, synthesizer: SynthesizerTrnMs768NSFsid,
                 chunks: ChunkConstants, index: FeatureIndex | None = None, index_rate: float = 0.75,
                 protect: float = 0.33, speaker: int = 0, f0_threshold: float = DEFAULT_THRESHOLD,
                 noise_scale: float = PRIOR_NOISE_SCALE, interpolate_unvoiced: bool = False,
                 rms_mix_rate: float = RMS_MIX_RATE):
        self.hubert, self.rmvpe, self.synthesizer = hubert, rmvpe, synthesizer
        self.chunks = chunks
        self.index = index if index_rate > 0 else None
        self.index_rate = index_rate
        self.protect = protect
        self.speaker = speaker
        self.f0_threshold = f0_threshold
        self.noise_scale = noise_scale
        self.interpolate_unvoiced = interpolate_unvoiced
        self.rms_mix_rate = rms_mix_rate
        self.device = next(synthesizer.parameters()).device

    @property
    def sample_rate(self) -> int:
        return self.synthesizer.sample_rate

    @torch.no_grad()
    def convert(self, audio16k: np.ndarray, pitch_shift: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """16 kHz mono samples -> converted samples [n] (float32) at `sample_rate`, on the models' device."""
        audio = prepare_input(audio16k)
        points = split_points(audio, self.chunks)
        t_pad = SAMPLE_RATE * self.chunks.x_pad
        t_pad_out = self.sample_rate * self.chunks.x_pad
        padded = np.pad(audio, (t_pad, t_pad), mode="reflect")
        n_frames = padded.shape[0] // WINDOW
        padded_t = torch.from_numpy(padded.astype(np.float32)).to(self.device)

        f0 = estimate_f0(self.rmvpe, padded_t[None], self.f0_threshold)[:, :n_frames].double()
        if self.interpolate_unvoiced:
            f0 = fill_unvoiced(f0)
        f0 = f0 * 2 ** (pitch_shift / 12)
        pitch = coarse_pitch(f0)
        f0 = f0.float()

        pieces, start, t = [], 0, None
        for t in points:
            t = t // WINDOW * WINDOW
            end = t + 2 * t_pad
            pieces.append(self._convert_segment(padded_t[start: end + WINDOW], pitch[:, start // WINDOW: end // WINDOW],
                                                f0[:, start // WINDOW: end // WINDOW], t_pad_out, generator))
            start = t
        first = 0 if t is None else t
        pieces.append(self._convert_segment(padded_t[first:], pitch[:, first // WINDOW:], f0[:, first // WINDOW:],
                                            t_pad_out, generator))
        out = torch.cat(pieces)
        if self.rms_mix_rate != 1:
            source = torch.from_numpy(np.ascontiguousarray(audio))
            out = mix_loudness(source, SAMPLE_RATE, out, self.sample_rate, self.rms_mix_rate)
        peak = float(out.abs().max()) if out.numel() else 0.0
        if peak > OUTPUT_PEAK:
            out = out * (OUTPUT_PEAK / peak)
        return out

    def _convert_segment(self, segment: torch.Tensor, pitch: torch.Tensor, f0: torch.Tensor, trim: int,
                         generator: torch.Generator | None) -> torch.Tensor:
        hubert_dtype = next(self.hubert.parameters()).dtype
        feats = self.hubert.extract_features(segment[None].to(hubert_dtype))  # [1, F, C], 50 frames/s
        raw = feats.clone() if self.protect < 0.5 else None
        if self.index is not None:
            retrieved = torch.from_numpy(self.index.retrieve(feats[0].float().cpu().numpy()))
            retrieved = retrieved.to(device=feats.device, dtype=feats.dtype)[None]
            feats = self.index_rate * retrieved + (1 - self.index_rate) * feats
        feats = feats.repeat_interleave(2, dim=1)  # 100 frames/s, like the f0
        frames = min(segment.shape[0] // WINDOW, feats.shape[1], pitch.shape[1])
        feats, pitch, f0 = feats[:, :frames], pitch[:, :frames], f0[:, :frames]
        if raw is not None:
            feats = protect_unvoiced(feats, raw.repeat_interleave(2, dim=1)[:, :frames], f0, self.protect)
        synth_dtype = next(self.synthesizer.parameters()).dtype
        lengths = torch.tensor([frames], device=self.device)
        speaker = torch.tensor([self.speaker], device=self.device)
        audio = self.synthesizer.infer(feats.to(synth_dtype), lengths, pitch, f0, speaker,
                                       noise_scale=self.noise_scale, generator=generator)[0, 0].float()
        return audio[trim: audio.shape[0] - trim]
