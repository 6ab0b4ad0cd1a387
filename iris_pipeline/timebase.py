"""The time base: rates, and every conversion between audio samples, Wav2Lip mel columns and frames.

Every other module asks this one; no rate, hop or window length is written out anywhere else.

Rates (all exact integers):

- Speech (VALL-E X / EnCodec): `CODEC_RATE` = 24000 samples/s, one codec frame every `CODEC_HOP` =
  320 samples, so `CODEC_FRAME_RATE` = 75 codec frames/s. These are facts of the checkpoints, so
  they are read from the VALL-E X model's configuration.
- Wav2Lip mel: audio at `MEL_RATE` = 16 kHz (other rates resampled), centred |STFT| with window
  `MEL_STFT_WINDOW` = 800 and hop `MEL_HOP` = 200: `MEL_COLUMN_RATE` = 80 columns/s of `MEL_BINS` =
  80 bands. The generator reads windows of `MEL_WINDOW` = 16 columns (0.2 s); bins and window are
  facts of the Wav2Lip checkpoint, read from its model.

Definitions:

- Columns of N samples at rate sr (`mel_column_count`): the resampler returns
  `ceil(N * 16000 / sr)` samples (N at 16 kHz), the centred STFT one column per hop plus one:
  `M = 1 + ceil(N * 16000 / sr) // 200`.
- Window start of frame f at `fps` (`window_start`): the official float arithmetic
  `int(f * (80. / fps))`, which can differ from the exact rational floor by one (fps 39, frame 117);
  clamped to `M - 16` so the last windows end at the last column (`clamped_window_start`).
- Frames of a clip (`frames_for_columns`): those whose window fits in the M columns, plus one that
  shows the last 16 columns (the official loop's count; the mp4 writer checks it).
- Frame rates are read as `fps_fraction` reads them (29.97 -> 2997/100).
- Streaming: column c reads the 16 kHz samples [200 c - 400, 200 c + 400) (column 0 also sample 400,
  through the reflection at the start). A 16 kHz output sample of the soxr HQ resampler moves by more
  than 1e-6 only with inputs within `soxr_reach(sr)` 16 kHz samples of it (measured < 180; 256 kept,
  more below 16 kHz). So column c is final once the 16 kHz samples below 200 c + 400 are
  (`mel_columns_ready`), and columns from c on need the audio from `mel_audio_start(c)` on.
- A chunk's own mel on the global grid (`place_chunk_mel`): global column c is at time c / 80 s; a
  chunk spanning samples [s, s + n) owns the columns c with s <= c * sr / 80 < s + n, each taking the
  chunk column nearest in time, so chunk mels of any length tile the clip without gaps or doubles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from iris_pipeline.errors import InputError
from iris_pipeline.models.vallex.config import FRAME_RATE as CODEC_FRAME_RATE
from iris_pipeline.models.vallex.config import HOP_LENGTH as CODEC_HOP
from iris_pipeline.models.vallex.config import SAMPLE_RATE as CODEC_RATE
from iris_pipeline.models.wav2lip import MEL_BINS
from iris_pipeline.models.wav2lip import MEL_STEP as MEL_WINDOW

MEL_RATE = 16000  # Wav2Lip's audio rate (its hparams `sample_rate`)
MEL_HOP = 200  # samples at MEL_RATE per mel column
MEL_STFT_WINDOW = 800  # n_fft = window length of the mel's STFT
MEL_COLUMN_RATE = MEL_RATE // MEL_HOP  # 80 columns per second
MEL_WINDOW_SECONDS = MEL_WINDOW / MEL_COLUMN_RATE  # 0.2 s: the shortest clip with a frame
_HALF_STFT_WINDOW = MEL_STFT_WINDOW // 2
_EXACT_COLUMN_RATE = Fraction(MEL_RATE, MEL_HOP)

__all__ = [
    "CODEC_FRAME_RATE", "CODEC_HOP", "CODEC_RATE", "ChunkFrames", "MEL_BINS", "MEL_COLUMN_RATE", "MEL_HOP",
    "MEL_RATE", "MEL_STFT_WINDOW", "MEL_WINDOW", "MEL_WINDOW_SECONDS", "Timeline", "clamped_window_start",
    "exact_fps", "final_resampled_samples", "first_resampled_sample", "fps_fraction", "frames_for_columns",
    "mel_audio_start", "mel_column_count", "mel_columns_ready", "pad_columns", "place_chunk_mel",
    "prefix_samples_for_columns", "resampled_length", "resampler_input_start", "soxr_reach",
    "video_frame_count", "window_start", "window_starts",
]


# --- samples and columns ----------------------------------------------------------------------------

def resampled_length(num_samples: int, sample_rate: int, new_rate: int = MEL_RATE) -> int:
    """Length of a resampled signal: ceil(N * new / sr) (N when the rates are equal)."""
    if sample_rate == new_rate:
        return num_samples
    return -(-num_samples * new_rate // sample_rate)


def mel_column_count(num_samples: int, sample_rate: int) -> int:
    """Columns of the Wav2Lip mel of N samples at `sample_rate`: 1 + ceil(N * 16000 / sr) // 200."""
    return 1 + resampled_length(num_samples, sample_rate) // MEL_HOP


def first_column_at_or_after(sample: int, sample_rate: int) -> int:
    """The first global column whose time c / 80 is at or after `sample / sample_rate`."""
    return -(-sample * MEL_COLUMN_RATE // sample_rate)


def place_chunk_mel(chunk_mel: torch.Tensor, start_sample: int, num_samples: int,
                    sample_rate: int) -> torch.Tensor:
    """The columns of a chunk's own mel [B, T] that fall on the global grid within its span
    [start_sample, start_sample + num_samples), each the chunk column nearest in time."""
    first = first_column_at_or_after(start_sample, sample_rate)
    end = first_column_at_or_after(start_sample + num_samples, sample_rate)
    columns = torch.arange(first, end, device=chunk_mel.device, dtype=torch.float64)
    local = torch.round(columns - start_sample * MEL_COLUMN_RATE / sample_rate).long()
    return chunk_mel[:, local.clamp(0, chunk_mel.shape[1] - 1)]


def pad_columns(mel: torch.Tensor, columns: int) -> torch.Tensor:
    """Cut, or extend by repeating the last column, a mel [B, T] to exactly `columns` columns (the
    placed chunk columns stop before the clip's last column, which `mel_column_count` counts)."""
    if mel.shape[1] >= columns:
        return mel[:, :columns]
    return torch.cat([mel, mel[:, -1:].expand(-1, columns - mel.shape[1])], dim=1)


# --- frames -----------------------------------------------------------------------------------------

def fps_fraction(fps: float | int | Fraction) -> Fraction:
    """25.0 -> 25, 29.97 -> 2997/100, 30000/1001 (as a float) -> 30000/1001."""
    return Fraction(fps).limit_denominator(1001)


def exact_fps(value: float | int | Fraction) -> Fraction:
    """The frame rate as `fps_fraction` reads it, after refusing non-finite or non-positive rates."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"fps: must be finite, got {value}")
    if not value > 0:
        raise InputError(f"fps: must be > 0, got {value}")
    return fps_fraction(value)


def window_start(frame: int, fps: float | Fraction) -> int:
    """First column of frame f's window before clamping, as the official loop computes it:
    `int(f * (80. / fps))`."""
    return math.floor(frame * (MEL_COLUMN_RATE / float(fps)))


def window_starts(frames: torch.Tensor, fps: float, total_columns: int) -> torch.Tensor:
    """`clamped_window_start` of every frame in `frames` [B] (int64 [B]); the same float arithmetic."""
    starts = torch.floor(frames.to(torch.float64) * (MEL_COLUMN_RATE / float(fps))).long()
    return torch.clamp(starts, max=total_columns - MEL_WINDOW)


def clamped_window_start(frame: int, fps: float | Fraction, total_columns: int) -> int:
    """Global first column of frame f's 16-column window: min(window_start(f), M - 16)."""
    if total_columns < MEL_WINDOW:
        raise InputError(f"audio: {total_columns} mel frames, shorter than one {MEL_WINDOW}-frame "
                         f"Wav2Lip window ({MEL_WINDOW_SECONDS:g} s)")
    exact_fps(fps)
    return min(window_start(frame, fps), total_columns - MEL_WINDOW)


def frames_for_columns(total_columns: int, fps: float | Fraction) -> int:
    """Frames the official Wav2Lip loop renders for M columns: every frame whose window fits in the
    M columns, plus one more showing the last 16 columns."""
    last_start = total_columns - MEL_WINDOW
    if last_start < 0:
        return 1
    fitting = math.floor(last_start * float(fps) / MEL_COLUMN_RATE) + 1  # estimate, then exact
    while fitting > 1 and window_start(fitting - 1, fps) > last_start:
        fitting -= 1
    while window_start(fitting, fps) <= last_start:
        fitting += 1
    return fitting + 1


def video_frame_count(num_samples: int, sample_rate: int, fps: float | Fraction) -> int:
    """Video frames of a clip of N samples: the official count for its mel (fps read exactly)."""
    return frames_for_columns(mel_column_count(int(num_samples), int(sample_rate)), float(exact_fps(fps)))


@dataclass(frozen=True)
class ChunkFrames:
    """The video frames of one chunk and the global mel columns they need.

    Feed Wav2Lip `mel = full_mel[:, mel_start:mel_end]`, `mel_offset = mel_start`,
    `total_mel_frames = Timeline.mel_frames`, `frame_start`, `frame_count`.
    """

    index: int
    frame_start: int
    frame_count: int
    mel_start: int  # first global column its frames use (a chunk without frames: an empty range)
    mel_end: int  # one past the last global column its frames use

    @property
    def frame_end(self) -> int:
        return self.frame_start + self.frame_count


@dataclass(frozen=True)
class Timeline:
    """Global indexing of a clip of `num_samples` samples at `sample_rate`, shown at `fps`.

    Frame f covers [f / fps, (f + 1) / fps) and belongs to the chunk whose nominal span [s_k, e_k)
    contains its start time: f in [ceil(s_k * fps / sr), ceil(e_k * fps / sr)), so the chunks
    partition the frames, none skipped or doubled.
    """

    num_samples: int
    sample_rate: int
    fps: float | Fraction

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise InputError(f"audio: clip has {self.num_samples} samples; at least 1 is needed")
        if self.sample_rate < 1:
            raise InputError(f"sample_rate: must be >= 1, got {self.sample_rate}")
        exact_fps(self.fps)

    @property
    def fps_exact(self) -> Fraction:
        return exact_fps(self.fps)

    @property
    def num_frames(self) -> int:
        return video_frame_count(self.num_samples, self.sample_rate, self.fps)

    @property
    def mel_frames(self) -> int:
        return mel_column_count(self.num_samples, self.sample_rate)

    def frame_seconds(self, frame: int) -> tuple[Fraction, Fraction]:
        return frame / self.fps_exact, (frame + 1) / self.fps_exact

    def mel_window_start(self, frame: int) -> int:
        return clamped_window_start(frame, self.fps, self.mel_frames)

    def first_frame_at_or_after(self, sample: int) -> int:
        """Smallest f with f / fps >= sample / sr, clipped to the clip's frame count."""
        return min(math.ceil(sample * self.fps_exact / self.sample_rate), self.num_frames)

    def chunk_frames(self, nominal_lengths: Sequence[int]) -> tuple[ChunkFrames, ...]:
        """Frames per chunk for chunks with these nominal sample spans (they must tile the clip)."""
        if sum(nominal_lengths) != self.num_samples or any(n < 0 for n in nominal_lengths):
            raise InputError(f"chunk lengths: {list(nominal_lengths)} do not tile the {self.num_samples}-sample clip")
        result = []
        start_sample = 0
        frame_start = 0
        mel_cursor = 0
        for k, n in enumerate(nominal_lengths):
            end_sample = start_sample + n
            last = k == len(nominal_lengths) - 1
            frame_end = self.num_frames if last else self.first_frame_at_or_after(end_sample)
            if frame_end > frame_start:
                mel_start = self.mel_window_start(frame_start)
                mel_end = self.mel_window_start(frame_end - 1) + MEL_WINDOW
                mel_cursor = mel_start
            else:
                mel_start = mel_end = mel_cursor
            result.append(ChunkFrames(k, frame_start, frame_end - frame_start, mel_start, mel_end))
            start_sample, frame_start = end_sample, frame_end
        return tuple(result)

    def frames_ready(self, ready_columns: int) -> int:
        """How many leading frames have their whole mel window among the first `ready_columns` columns.

        Below M columns the clamp at M - 16 never matters (a clamped window ends at M), so this needs
        no knowledge of where the clip ends.
        """
        if ready_columns >= self.mel_frames:
            return self.num_frames
        return self._frames_below(ready_columns)

    def _frames_below(self, ready_columns: int) -> int:
        # frames with start(f) + 16 <= ready; exactly: 80 f / fps < ready - 15. The window start is
        # the official float formula, so correct the exact estimate by stepping (starts are monotonic).
        def fits(f: int) -> bool:
            return window_start(f, self.fps) + MEL_WINDOW <= ready_columns

        limit = ready_columns - MEL_WINDOW + 1
        count = min(max(0, math.ceil(limit * Fraction(float(self.fps)) / _EXACT_COLUMN_RATE)), self.num_frames)
        while count > 0 and not fits(count - 1):
            count -= 1
        while count < self.num_frames and fits(count):
            count += 1
        return count


# --- streaming: which columns are final, which audio they need --------------------------------------

def soxr_reach(sample_rate: int) -> int:
    """16 kHz samples on each side of an output sample of the soxr HQ resampler whose input still
    moves it: measured below 180 for 8-96 kHz (changes under 1e-6 beyond), kept with a margin."""
    return 256 * max(1, -(-MEL_RATE // sample_rate))


def final_resampled_samples(prefix_samples: int, sample_rate: int, total_samples: int | None = None) -> int:
    """Leading 16 kHz samples of the whole clip's resampled audio fixed by its first `prefix_samples`."""
    if total_samples is not None and prefix_samples >= total_samples:
        return resampled_length(total_samples, sample_rate)
    if sample_rate == MEL_RATE:
        return prefix_samples
    return max(0, resampled_length(prefix_samples, sample_rate) - soxr_reach(sample_rate))


def mel_columns_ready(prefix_samples: int, sample_rate: int, total_samples: int | None = None) -> int:
    """Leading columns of the whole clip's Wav2Lip mel that depend only on its first samples."""
    if total_samples is not None and prefix_samples >= total_samples:
        return mel_column_count(total_samples, sample_rate)
    final16 = final_resampled_samples(prefix_samples, sample_rate, total_samples)
    if final16 <= _HALF_STFT_WINDOW:  # column 0 reads sample 400 through the reflection at the start
        return 0
    ready = (final16 - _HALF_STFT_WINDOW) // MEL_HOP + 1
    if total_samples is not None:
        ready = min(ready, mel_column_count(total_samples, sample_rate))
    return ready


def prefix_samples_for_columns(columns: int, sample_rate: int, total_samples: int) -> int:
    """The shortest prefix of the clip after which its first `columns` mel columns are final."""
    if columns <= 0:
        return 0
    lo, hi = 0, total_samples
    while lo < hi:
        mid = (lo + hi) // 2
        if mel_columns_ready(mid, sample_rate, total_samples) >= columns:
            hi = mid
        else:
            lo = mid + 1
    return lo


def first_resampled_sample(start_column: int) -> int:
    """The first 16 kHz sample column `start_column` reads (one more for the pre-emphasis); < 0 when
    the column sees the reflection at the clip's start."""
    return MEL_HOP * start_column - _HALF_STFT_WINDOW - 1


def resampler_input_start(first16: int, sample_rate: int) -> int:
    """The input sample from which to resample to get 16 kHz sample `first16` as the whole clip's: a
    multiple of `down` (so output phases line up: global j = local j + q * up) early enough that
    `first16` is out of reach of the silence soxr assumes before that start."""
    if sample_rate == MEL_RATE:
        return first16
    ratio = Fraction(MEL_RATE, sample_rate)
    return max(0, (first16 - soxr_reach(sample_rate)) // ratio.numerator) * ratio.denominator


def mel_audio_start(start_column: int, sample_rate: int) -> int:
    """The first sample of the clip that mel columns from `start_column` on depend on."""
    first16 = first_resampled_sample(max(0, start_column))
    return 0 if first16 < 0 else resampler_input_start(first16, sample_rate)
