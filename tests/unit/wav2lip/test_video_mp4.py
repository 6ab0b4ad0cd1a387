"""mp4 writing: exact frame counts for any fps, streamed writes, odd frame sizes, nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest

from iris_pipeline.subtitles import WordTiming
from iris_pipeline.timebase import fps_fraction, video_frame_count
from iris_pipeline.video import Mp4Writer, close_with_subtitles, read_mp4_info


# The official Wav2Lip count: M = 1 + ceil(N * 16000 / sr) // 200 mel columns; frames i with
# int(i * 80 / fps) <= M - 16 fit, plus one for the last window.
@pytest.mark.parametrize("samples, rate, fps, frames", [
    (24000 * 5, 24000, 25.0, 122),  # M 401: int(3.2 i) <= 385 for i <= 120 -> 121 + 1
    (24000 * 5 + 1, 24000, 25.0, 122),  # 80001 samples at 16 kHz: still 401 columns
    (16000, 16000, 30000 / 1001, 26),  # M 81: int(2.6693 i) <= 65 for i <= 24 -> 25 + 1
    (1, 16000, 25.0, 1),  # shorter than one window: the one frame showing the last columns
])
def test_frame_count_is_the_official_wav2lip_count(samples, rate, fps, frames):
    assert video_frame_count(samples, rate, fps) == frames
    assert fps_fraction(30000 / 1001).denominator == 1001


def test_streamed_writes_with_odd_frame_size(tmp_path):
    path = tmp_path / "odd.mp4"
    rng = np.random.default_rng(0)
    with Mp4Writer(path, 30.0, width=51, height=37, sample_rate=24000) as writer:
        for _ in range(3):
            writer.write_frames(rng.integers(0, 255, (4, 37, 51, 3), dtype=np.uint8))
            writer.write_audio(0.1 * rng.standard_normal(800).astype(np.float32))
    info = read_mp4_info(path)
    assert (info.frame_count, info.fps) == (12, 30.0)
    assert (info.width, info.height) == (52, 38)  # yuv420p needs even sizes: last row/column repeated
    assert info.audio_seconds == pytest.approx(2400 / 24000, abs=1e-3)


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="frame is 8x8"):
        with Mp4Writer(tmp_path / "clip.mp4", 25.0, width=16, height=16) as writer:
            writer.write_frames(np.zeros((2, 16, 16, 3), np.uint8))
            writer.write_frames(np.zeros((1, 8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def _small_clip(path):
    writer = Mp4Writer(path, 25.0, width=16, height=16)
    writer.write_frames(np.zeros((3, 16, 16, 3), dtype=np.uint8))
    return writer


def test_a_clip_closes_with_its_subtitles(tmp_path):
    mp4, vtt = close_with_subtitles(_small_clip(tmp_path / "clip.mp4"), [WordTiming("hi", 0.0, 0.1)])
    assert mp4 == tmp_path / "clip.mp4"
    assert vtt == tmp_path / "clip.vtt"
    assert read_mp4_info(mp4).frame_count == 3
    assert "hi" in vtt.read_text()


def test_an_mp4_that_fails_to_close_takes_its_subtitles_with_it(tmp_path, monkeypatch):
    writer = _small_clip(tmp_path / "clip.mp4")

    def disk_full():
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "close", disk_full)
    with pytest.raises(OSError):
        close_with_subtitles(writer, [WordTiming("hi", 0.0, 0.1)])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_subtitles_that_fail_leave_no_mp4(tmp_path, monkeypatch):
    import iris_pipeline.video as video

    def read_only(path, words):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(video, "write_webvtt", read_only)
    with pytest.raises(PermissionError):
        close_with_subtitles(_small_clip(tmp_path / "clip.mp4"), [WordTiming("hi", 0.0, 0.1)])
    assert sorted(p.name for p in tmp_path.iterdir()) == []
