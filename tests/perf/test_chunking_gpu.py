"""Chunk boundaries fuzzed on the code the gates time: the full-size pipeline on the GPU.

The CPU property tests (tests/unit/chunking, tests/unit/chain) fuzz the chunk arithmetic and run the
tiny models; here hypothesis draws the same boundary parameters (chunk and first-chunk seconds,
cross-fade, where the script's sentences and phrases split it, clip length) and drives them through
the pipeline the perf session builds (the benchmark's own config resolution, `build_config`), so
the GPU path (fp16, its streams, bucketed VALL-E X decode) is what is checked.

"Chunked equals unchunked" means what it means on the CPU: the chunked clip has exactly the
unchunked clip's samples and frames (speech is generated per chunk, so its values differ), and in
`lipsync_features: speech` its streamed frames equal ONE Wav2Lip pass over the whole clip's mel.
The fp16 tolerance: streamed mel columns equal the whole clip's to float32 rounding, but Wav2Lip
runs in fp16 in other batch compositions than the single pass (other GEMM tilings), so a pixel may
move by a few 8-bit levels. Allowed: at most FP16_MAX_LEVELS on any pixel, and a mean difference of
at most FP16_MEAN_LEVELS levels (an off-by-one frame or window would move the mean by tens of levels).
"""

from __future__ import annotations

import gc

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from iris_pipeline.audio import wav2lip_mel
from iris_pipeline.chunking import expected_seconds
from iris_pipeline.pipeline import Job, Pipeline
from iris_pipeline.timebase import CODEC_RATE, Timeline

pytestmark = pytest.mark.gpu

FP16_MAX_LEVELS = 8
FP16_MEAN_LEVELS = 0.5
_WORDS = ["avatar", "speech", "stream", "chunk", "voice", "latency", "frame", "render", "signal", "model"]


@pytest.fixture(scope="module")
def gpu_pipeline(device):
    """The full-size pipeline the benchmark builds on this GPU (its config resolution), once per module."""
    from iris_pipeline.benchmark import inputs
    from iris_pipeline.benchmark.session import build_config

    pipeline = Pipeline(build_config(device=str(device)))
    pipeline.prepare()
    avatar = pipeline.prepare_avatar(inputs.default_avatar_path())
    reference, transcript = inputs.synthetic_reference(0), inputs.reference_transcript("en")
    try:
        yield pipeline, avatar, reference, transcript
    finally:
        pipeline.close()
        del pipeline
        gc.collect()
        torch.cuda.empty_cache()


def script(sentences: list[tuple[int, str]]) -> str:
    """Sentences of the drawn word counts, each ended by the drawn punctuation (where the planner may cut)."""
    words = iter(_WORDS * 40)
    return " ".join(" ".join(next(words) for _ in range(n)) + stop for n, stop in sentences)


def render(pipeline: Pipeline, job: Job, chunked: bool, lipsync: str):
    chunking, before = pipeline.config.chunking, (pipeline.config.chunking.enabled, pipeline.config.lipsync_features)
    chunking.enabled, pipeline.config.lipsync_features = chunked, lipsync
    try:
        return pipeline.render(job, timeout=600)
    finally:
        chunking.enabled, pipeline.config.lipsync_features = before


# Each example renders three clips of at most ~7 s: sized for a short GPU slot, not for coverage.
@settings(max_examples=3, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(chunk_seconds=st.floats(1.0, 4.0), first=st.one_of(st.none(), st.floats(0.6, 2.0)),
       crossfade_ms=st.floats(0.0, 60.0), pace=st.floats(1.0, 1.3), seed=st.integers(0, 2**16),
       sentences=st.lists(st.tuples(st.integers(1, 5), st.sampled_from([".", ",", "?", ";"])),
                          min_size=1, max_size=3))
@example(chunk_seconds=1.0, first=0.6, crossfade_ms=60.0, pace=1.0, seed=0,  # many boundaries, longest fade
         sentences=[(5, "."), (4, ","), (5, "?")])
def test_chunked_clip_equals_the_unchunked_clip_on_the_gpu(gpu_pipeline, chunk_seconds, first, crossfade_ms,
                                                           pace, seed, sentences):
    pipeline, avatar, reference, transcript = gpu_pipeline
    text = script(sentences)
    # the clip is the script's expected duration or slower (as the benchmark's scripts), at least 1.5 s
    seconds = max(1.5, expected_seconds(text, "en") * pace)
    cfg, before = pipeline.config.chunking, pipeline.config.chunking.model_dump()
    cfg.chunk_seconds, cfg.first_chunk_seconds, cfg.crossfade_ms = chunk_seconds, first, crossfade_ms
    try:
        job = Job(text=text, language="en", reference=reference, transcript=transcript,
                  avatar=avatar, seconds=seconds, seed=seed)
        samples = round(seconds * CODEC_RATE / 320) * 320  # the imposed length: whole codec frames
        frames = Timeline(samples, CODEC_RATE, pipeline.config.video.fps).num_frames

        # the mode the gates time (FastPitch's mel): the same lengths chunked and unchunked
        timed = render(pipeline, job, chunked=True, lipsync=pipeline.config.lipsync_features)
        whole_run = render(pipeline, job, chunked=False, lipsync=pipeline.config.lipsync_features)
        assert whole_run.chunks == 1
        for result in (timed, whole_run):
            assert result.speech.samples.shape == (samples,)
            assert result.frames.shape[0] == frames
            assert bool(torch.isfinite(result.speech.samples).all())

        # speech mode: the streamed frames are one unchunked Wav2Lip pass over the clip's mel
        streamed = render(pipeline, job, chunked=True, lipsync="speech")
        assert streamed.speech.samples.shape == (samples,) and streamed.frames.shape[0] == frames
        wav2lip = pipeline.stages["wav2lip"]
        device = pipeline.placement.devices["wav2lip"]
        mel = wav2lip_mel(streamed.speech.samples, CODEC_RATE).to(device)  # as the stage's host-side mel
        with pipeline.placement.on("wav2lip"):
            single = wav2lip.run(mel=mel, mel_offset=0, total_mel_frames=mel.shape[1], avatar=avatar,
                                 frame_start=0, frame_count=frames, fps=pipeline.config.video.fps)["frames"]
        diff = (streamed.frames.int() - single.cpu().int()).abs()
        assert int(diff.max()) <= FP16_MAX_LEVELS, (int(diff.max()), streamed.chunks)
        assert float(diff.float().mean()) <= FP16_MEAN_LEVELS, (float(diff.float().mean()), streamed.chunks)
    finally:
        for key, value in before.items():
            setattr(cfg, key, value)
