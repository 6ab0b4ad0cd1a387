"""Frames and speech -> mp4 (H.264 + AAC) with PyAV, and a reader that reports what a file holds.

A clip has exactly `timebase.video_frame_count(speech)` frames, as many as the official Wav2Lip loop renders
for that speech (frame f covers [f / fps, (f + 1) / fps); the last ~0.2 s of speech share the last
frame, as in the official clips). The file is written under a temporary name in the
destination's directory and renamed only once complete, so a failed render leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iris_pipeline.atomic import create_temp_file
from iris_pipeline.audio import Waveform
from iris_pipeline.errors import InputError
from iris_pipeline.subtitles import WordTiming, write_webvtt
from iris_pipeline.timebase import fps_fraction, video_frame_count

_AUDIO_FRAME = 1024  # AAC frame size in samples


def check_speech_for_video(speech: Waveform, fps: float) -> None:
    if speech.samples.numel() * fps_fraction(fps) < speech.sample_rate:
        raise InputError(f"speech: {speech.seconds:.3f} s of audio is shorter than one video frame (1/{fps:g} s)")


def _video_codec() -> str:
    """H.264 (libx264 or another H.264 encoder of this FFmpeg build), else MPEG-4 part 2."""
    import av

    for name in ("libx264", "h264"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # av.codec.codec.UnknownCodecError and friends
            continue
    return "mpeg4"


def _as_uint8_frames(frames: Any) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
    return frames


class Mp4Writer:
    """Streamed mp4 writing: `write_frames` / `write_audio` any number of times, then `close()`.

    Used as a context manager, an exception inside the block removes the temporary file.
    """

    def __init__(self, path: str | Path, fps: float, width: int, height: int, sample_rate: int | None = None,
                 crf: int = 18, preset: str = "veryfast"):
        import av

        self.path = Path(path)
        self.fps = fps_fraction(fps)
        self.width, self.height = int(width), int(height)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = create_temp_file(self.path)
        try:
            self._container = av.open(str(self._tmp), mode="w", format="mp4")
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        codec = _video_codec()
        self._video = self._container.add_stream(codec, rate=self.fps)
        # yuv420p needs even sizes: odd frames get their last row / column repeated
        self._video.width, self._video.height = self.width + self.width % 2, self.height + self.height % 2
        self._video.pix_fmt = "yuv420p"
        self._video.time_base = 1 / self.fps
        if codec in ("libx264", "h264"):
            self._video.options = {"crf": str(crf), "preset": preset}
        self._audio = None
        self.sample_rate = sample_rate
        if sample_rate is not None:
            self._audio = self._container.add_stream("aac", rate=int(sample_rate), layout="mono")
            self._audio.time_base = Fraction(1, int(sample_rate))
        self.frames_written = 0
        self.samples_written = 0
        self._pending = np.zeros(0, dtype=np.float32)
        self._closed = False

    def write_frames(self, frames: Any) -> None:
        import av

        for image in _as_uint8_frames(frames):
            if image.shape[0] != self.height or image.shape[1] != self.width:
                raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]}, the video is {self.width}x{self.height}")
            if self.width % 2 or self.height % 2:
                image = np.pad(image, ((0, self.height % 2), (0, self.width % 2), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames_written
            self._container.mux(self._video.encode(frame))
            self.frames_written += 1

    def write_audio(self, samples: torch.Tensor | np.ndarray) -> None:
        if self._audio is None:
            raise ValueError("this writer was opened without a sample_rate: it has no audio stream")
        if isinstance(samples, torch.Tensor):
            samples = samples.detach().cpu().float().numpy()
        data = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32).reshape(-1)])
        whole = len(data) - len(data) % _AUDIO_FRAME
        for start in range(0, whole, _AUDIO_FRAME):
            self._encode_audio(data[start:start + _AUDIO_FRAME])
        self._pending = data[whole:]

    def _encode_audio(self, block: np.ndarray) -> None:
        import av

        frame = av.AudioFrame.from_ndarray(np.clip(block, -1.0, 1.0)[None], format="fltp", layout="mono")
        frame.sample_rate = int(self.sample_rate)
        frame.pts = self.samples_written
        self.samples_written += len(block)
        self._container.mux(self._audio.encode(frame))

    def close(self) -> Path:
        """Flush the encoders, finish the file and move it to `path`."""
        if self._closed:
            return self.path
        if self._audio is not None and len(self._pending):
            self._encode_audio(self._pending)
            self._pending = np.zeros(0, dtype=np.float32)
        self._container.mux(self._video.encode(None))
        if self._audio is not None:
            self._container.mux(self._audio.encode(None))
        self._container.close()
        self._closed = True
        os.chmod(self._tmp, 0o644)  # mkstemp made it 0600; the clip is for other users too
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if not self._closed:
            try:
                self._container.close()
            except Exception:  # a half-written container may fail to finalise; it is discarded anyway
                pass
            self._closed = True
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def close_with_subtitles(writer: Mp4Writer, words: Sequence[WordTiming]) -> tuple[Path, Path]:
    """Finish a streamed clip: its .vtt beside the mp4 (same name), then the mp4. All or nothing: when
    either fails, the new .vtt is removed and the mp4's temporary file with it. Returns (mp4, vtt)."""
    vtt = writer.path.with_suffix(".vtt")
    try:
        write_webvtt(vtt, words)
        try:
            mp4 = writer.close()
        except BaseException:
            vtt.unlink(missing_ok=True)
            raise
    except BaseException:
        writer.abort()
        raise
    return mp4, vtt


def write_mp4(path: str | Path, frames: Any, fps: float, speech: Waveform | None = None) -> Path:
    """Write all `frames` (uint8 [N, H, W, 3] RGB) and the speech; N must be `timebase.video_frame_count(speech)`."""
    frames = _as_uint8_frames(frames)
    if speech is not None:
        check_speech_for_video(speech, fps)
        wanted = video_frame_count(speech.samples.numel(), speech.sample_rate, fps)
        if len(frames) != wanted:
            raise ValueError(f"{len(frames)} frames given; {speech.seconds:.3f} s of speech at {fps:g} fps needs {wanted}")
    height, width = frames.shape[1:3]
    with Mp4Writer(path, fps, width, height, speech.sample_rate if speech is not None else None) as writer:
        writer.write_frames(frames)
        if speech is not None:
            writer.write_audio(speech.samples)
    return Path(path)


@dataclass(frozen=True)
class Mp4Info:
    frame_count: int
    fps: float
    width: int
    height: int
    video_codec: str
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_samples: int  # decoded samples (AAC rounds up to whole 1024-sample frames)
    audio_seconds: float | None  # the stream's declared duration


def read_mp4_info(path: str | Path) -> Mp4Info:
    """Decode a video file and report its streams (frame count by decoding, not by metadata)."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frame_count = sum(1 for _ in container.decode(video))
        fps = float(video.average_rate or video.guessed_rate or 0)
        width, height, vcodec = video.codec_context.width, video.codec_context.height, video.codec_context.name
    audio_codec = audio_rate = audio_seconds = None
    audio_samples = 0
    with av.open(str(path)) as container:
        if container.streams.audio:
            audio = container.streams.audio[0]
            audio_codec, audio_rate = audio.codec_context.name, audio.codec_context.sample_rate
            if audio.duration is not None and audio.time_base is not None:
                audio_seconds = float(audio.duration * audio.time_base)
            audio_samples = sum(frame.samples for frame in container.decode(audio))
    return Mp4Info(frame_count, fps, width, height, vcodec, audio_codec, audio_rate, audio_samples, audio_seconds)
