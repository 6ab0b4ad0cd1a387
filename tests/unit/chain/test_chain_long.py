"""A 30 s clip through the tiny chain on the CPU: chunked (10 s chunks) and unchunked agree on length."""

from __future__ import annotations

import pytest

from iris_pipeline.chunking import benchmark_script
from iris_pipeline.pipeline import Job, Pipeline
from iris_pipeline.timebase import CODEC_RATE, video_frame_count
from tests.support.chain import FACE, tiny_config, voiced_reference

SECONDS = 30
FPS = 25


@pytest.mark.slow
def test_chunked_30s_render_has_the_unchunked_frames_and_duration(tmp_path):
    cfg = tiny_config(chunk_seconds=10.0)
    cfg.wav2lip.options.cache_dir = tmp_path / "avatars"
    text = benchmark_script(SECONDS, "en")

    with Pipeline(cfg) as pipeline:
        avatar = pipeline.prepare_avatar(FACE)

        def render():
            return pipeline.render(Job(text=text, language="en", reference=voiced_reference(),
                                       transcript="a short reference", avatar=avatar, seconds=SECONDS))

        chunked = render()
        pipeline.config.chunking.enabled = False
        whole = render()

    assert chunked.chunks >= 3 and whole.chunks == 1
    assert chunked.speech.samples.shape == whole.speech.samples.shape == (SECONDS * CODEC_RATE,)
    frames = video_frame_count(SECONDS * CODEC_RATE, CODEC_RATE, FPS)  # the official Wav2Lip count
    assert chunked.frames.shape == whole.frames.shape == (frames, avatar.height, avatar.width, 3)
