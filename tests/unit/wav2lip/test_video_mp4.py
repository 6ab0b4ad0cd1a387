"""mp4 writing: exact frame counts for any fps, streamed writes, odd frame sizes, nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest

from iris_pipeline.timebase import fps_fraction, video_frame_count
from iris_pipeline.video import Mp4Writer, read_mp4_info


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
