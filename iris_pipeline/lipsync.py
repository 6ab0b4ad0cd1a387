"""Streaming lip-sync of one job: its speech chunks in, the Wav2Lip frame requests that became ready out.

A job's speech arrives chunk by chunk (each but the last generated with an overlap tail for the
cross-fade). `LipsyncStream` keeps everything that lies between those chunks and Wav2Lip's frames,
bounded whatever the clip's length:

    stitched = stream.stitch(chunk_samples, last)        # the chunk's final samples after the cross-fade
    alignment = <align stitched.samples>                  # FastPitch, on the caller's side
    ready = stream.push(stitched, alignment.lipsync_mel)  # -> LipsyncChunk: the FramesRequest + speech

- stitching: `chunking.AudioStitcher` (equal-power cross-fades; only the overlap tail is held);
- the lip-sync mel on the clip's global Wav2Lip grid (80 columns per second): in the "fastpitch"
  mode each chunk's FastPitch mel is placed at the chunk's span (`timebase.place_chunk_mel`); in
  the "speech" mode the clip's own
  Wav2Lip mel is computed column by column as its audio becomes final, each column once
  (`chunking.wav2lip_mel_columns`), so a chunked clip gets the unchunked clip's mel;
- frame readiness: the frames whose whole 16-column window is final (`timebase.Timeline`), and the
  mel columns those frames read; columns no later frame reads are dropped.

All sample / column / frame arithmetic is `timebase`'s; this module only keeps the state.

The stream knows no stage, queue or device placement: its caller moves the samples to the device
the mel should be computed on, runs the aligner, and hands the request to Wav2Lip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from iris_pipeline import chunking, timebase
from iris_pipeline.errors import InputError
from iris_pipeline.stages.contracts import FramesRequest

LipsyncFeatures = Literal["fastpitch", "speech"]
_NO_END_YET_S = 3600  # before the last chunk the clip's end is not needed: any length past the audio works


@dataclass(frozen=True)
class StitchedSpeech:
    """A chunk's final samples: its nominal span of the clip after cross-fading."""

    samples: torch.Tensor  # 1-D float, the stream's sample rate
    start: int  # global sample index of samples[0]
    last: bool


@dataclass(frozen=True)
class LipsyncChunk:
    """What pushing one chunk gives: its final speech and the frames that became ready (maybe none)."""

    speech: StitchedSpeech
    frames: FramesRequest


class LipsyncStream:
    """One job's streaming lip-sync state (see the module docstring). Push the job's chunks in order."""

    def __init__(self, *, avatar: Any, fps: float, features: LipsyncFeatures, overlap_samples: int,
                 sample_rate: int, total_samples: int | None = None):
        if features not in ("fastpitch", "speech"):
            raise ValueError(f"lip-sync features: {features!r}; expected 'fastpitch' or 'speech'")
        self.avatar = avatar
        self.fps = fps
        self.features = features
        self.sample_rate = sample_rate
        self.total_samples = total_samples  # the clip's length when imposed (speech mode: the end's reflection)
        self._stitcher = chunking.AudioStitcher(overlap_samples)
        self._pending: StitchedSpeech | None = None
        self.samples = 0  # stitched samples so far
        self._audio: torch.Tensor | None = None  # stitched samples [audio_start, samples) (speech mode)
        self._audio_start = 0
        self._mel: torch.Tensor | None = None  # lip-sync mel columns [mel_start, mel_start + mel.shape[1])
        self._mel_start = 0
        self.frames_done = 0
        self.finished = False

    @property
    def held_columns(self) -> int:
        """Lip-sync mel columns held for frames still to come (about one chunk's, whatever the clip's length)."""
        return 0 if self._mel is None else int(self._mel.shape[1])

    @property
    def held_samples(self) -> int:
        """Stitched samples held for mel columns still to come (speech mode; about one chunk's)."""
        return 0 if self._audio is None else int(self._audio.shape[0])

    @property
    def computes_speech_mel(self) -> bool:
        """Whether `push` computes the speech's Wav2Lip mel itself (the "speech" mode)."""
        return self.features == "speech"

    def stitch(self, speech: torch.Tensor, last: bool) -> StitchedSpeech:
        """The next chunk's generated samples (with its overlap tail unless `last`) -> its final samples."""
        if self._pending is not None:
            raise RuntimeError("lip-sync stream: stitch() twice without push()")
        body = self._stitcher.push(speech, last=last)
        self._pending = StitchedSpeech(body, self.samples, last)
        self.samples += body.shape[0]
        return self._pending

    def push(self, stitched: StitchedSpeech, lipsync_mel: torch.Tensor | None = None) -> LipsyncChunk:
        """Add the stitched chunk's lip-sync mel (FastPitch's [80, M] in the fastpitch mode, None in
        the speech mode) and take the frames whose mel windows became complete."""
        if stitched is not self._pending:
            raise RuntimeError("lip-sync stream: push() takes the chunk that stitch() returned last")
        if (lipsync_mel is None) != self.computes_speech_mel:
            raise ValueError(f"lip-sync stream: the {self.features} mode "
                             f"{'computes its own mel' if self.computes_speech_mel else 'needs the chunk mel'}")
        self._pending = None
        last = stitched.last
        if lipsync_mel is not None:
            ready = self._add_chunk_mel(lipsync_mel, stitched)
        else:
            ready = self._add_speech_mel(stitched)
        frames = self._take_frames(ready, last)
        self.finished = last
        return LipsyncChunk(stitched, frames)

    # --- the lip-sync mel ------------------------------------------------------------------------

    def _add_chunk_mel(self, chunk_mel: torch.Tensor, stitched: StitchedSpeech) -> int:
        """Place a chunk's mel on the clip's grid; the columns ready (the clip's exact count at the end)."""
        self._append_mel(timebase.place_chunk_mel(chunk_mel, stitched.start, stitched.samples.shape[0],
                                                  self.sample_rate))
        if not stitched.last:
            return self._mel_columns
        ready = timebase.mel_column_count(self.samples, self.sample_rate)
        self._mel = timebase.pad_columns(self._mel, ready - self._mel_start)
        return ready

    def _add_speech_mel(self, stitched: StitchedSpeech) -> int:
        """Only the columns of the speech's own mel that became final: each column is computed once."""
        total = self.samples if stitched.last else self.total_samples
        have = self._mel_columns
        self._audio = stitched.samples if self._audio is None else torch.cat([self._audio, stitched.samples])
        self._append_mel(chunking.wav2lip_mel_columns(self._audio, self.sample_rate, have, total_samples=total,
                                                      prefix_start=self._audio_start))
        self._drop_audio_before(timebase.mel_audio_start(self._mel_columns, self.sample_rate))
        return self._mel_columns

    def _append_mel(self, columns: torch.Tensor) -> None:
        self._mel = columns if self._mel is None else torch.cat([self._mel, columns], dim=1)

    @property
    def _mel_columns(self) -> int:
        return self._mel_start + (0 if self._mel is None else self._mel.shape[1])

    def _drop_mel_before(self, column: int) -> None:
        """Forget the columns before `column` (no frame still to come reads them); copies the rest so
        the dropped columns' memory is freed, not pinned by a view."""
        cut = column - self._mel_start
        if self._mel is not None and cut > 0:
            self._mel = self._mel[:, cut:].clone()
            self._mel_start = column

    def _drop_audio_before(self, sample: int) -> None:
        cut = sample - self._audio_start
        if self._audio is not None and cut > 0:
            self._audio = self._audio[cut:].clone()
            self._audio_start = sample

    # --- frames ----------------------------------------------------------------------------------

    def _take_frames(self, ready: int, last: bool) -> FramesRequest:
        """The frames that became ready with `ready` final mel columns (all the rest at the end)."""
        fps = self.fps
        final_samples = self.samples if last else (self.total_samples or
                                                   self.samples + self.sample_rate * _NO_END_YET_S)
        timeline = timebase.Timeline(final_samples, self.sample_rate, fps)
        frames_end = timeline.num_frames if last else timeline.frames_ready(ready)
        if last and timeline.mel_frames < timebase.MEL_WINDOW:
            raise InputError(f"speech: {self.samples / self.sample_rate:.3f} s is shorter than one Wav2Lip "
                             f"window ({timebase.MEL_WINDOW_SECONDS:g} s); no frame can be rendered")
        frame_start = self.frames_done
        frame_count = max(0, frames_end - frame_start)
        total_mel = timeline.mel_frames if last else ready
        if frame_count:
            mel_start = timebase.clamped_window_start(frame_start, fps, total_mel)
            mel_end = timebase.clamped_window_start(frames_end - 1, fps, total_mel) + timebase.MEL_WINDOW
            mel = self._mel[:, mel_start - self._mel_start:mel_end - self._mel_start].clone()
        else:
            mel_start = 0
            mel = self._mel[:, :0].clone()
        self.frames_done = frames_end
        if not last:  # later frames read from their own window start on, or from the clamped last window
            self._drop_mel_before(min(timebase.window_start(frames_end, fps), ready - timebase.MEL_WINDOW))
        return FramesRequest(mel=mel, mel_offset=mel_start, total_mel_frames=total_mel, avatar=self.avatar,
                             frame_start=frame_start, frame_count=frame_count, fps=fps)

