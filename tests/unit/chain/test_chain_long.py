"""A 30 s clip through the tiny chain on the CPU: chunked (10 s chunks) and unchunked agree on length."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from iris_pipeline.audio import Waveform
from iris_pipeline.chunking import benchmark_script
from iris_pipeline.config import PipelineConfig
from iris_pipeline.pipeline import Job, Pipeline
from iris_pipeline.timebase import CODEC_RATE, video_frame_count

FACE = Path(__file__).resolve().parents[2] / "data" / "astronaut_face.jpg"
SECONDS = 30
FPS = 25


def voiced_reference(seconds: float = 2.0, sr: int = 16000) -> Waveform:
    t = torch.arange(int(seconds * sr)) / sr
    return Waveform((0.3 * torch.sin(2 * math.pi * 140 * t) * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t))).float(), sr)


@pytest.mark.slow
def test_chunked_30s_render_has_the_unchunked_frames_and_duration(tmp_path):
    cfg = PipelineConfig(size="tiny", device="cpu", seed=0)
    for stage in cfg.stages:
        cfg.stage(stage).precision = "fp32"
    cfg.stage("rvc").options = {"cache": False}
    cfg.stage("wav2lip").options = {"cache_dir": str(tmp_path / "avatars")}
    cfg.chunking.chunk_seconds = 10.0
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
