"""The chain on the CPU with tiny models: lengths, chunking, determinism, placement, streaming, memory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from iris_pipeline.audio import Waveform
from iris_pipeline.chunking import benchmark_script
from iris_pipeline.config import PipelineConfig
from iris_pipeline.errors import InputError
from iris_pipeline.pipeline import Job, Pipeline, ProgressEvent
from iris_pipeline.placement import Placement
from iris_pipeline.stages.contracts import FramesRequest
from iris_pipeline.timebase import CODEC_RATE, video_frame_count
from tests.support.chain import FACE, tiny_config, voiced_reference

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def events() -> list[ProgressEvent]:
    return []


@pytest.fixture(scope="module")
def pipeline(events):
    pipe = Pipeline(tiny_config(chunk_seconds=2.5), on_progress=events.append)
    pipe.prepare()
    yield pipe
    pipe.close()


@pytest.fixture(scope="module")
def avatar(pipeline):
    return pipeline.prepare_avatar(FACE)


# Pipelines of another configuration are pipelines of their own: no test changes the shared one's config.
@pytest.fixture(scope="module")
def unchunked_pipeline():
    with Pipeline(tiny_config(chunk_seconds=2.5, enabled=False)) as pipe:
        yield pipe


@pytest.fixture(scope="module")
def speech_mode_pipeline():
    with Pipeline(tiny_config(lipsync_features="speech", chunk_seconds=2.5)) as pipe:
        yield pipe


def job(avatar, seconds: float, seed: int = 0, text: str | None = None) -> Job:
    return Job(text=text or benchmark_script(seconds, "en"), language="en", reference=voiced_reference(),
               transcript="a short reference", avatar=avatar, seconds=seconds, seed=seed)


def test_imposed_length_gives_exact_samples_and_frames(pipeline, avatar, events):
    events.clear()
    result = pipeline.render(job(avatar, 4.0))
    assert result.chunks >= 2, "a 4 s script with 2.5 s chunks must be cut"
    assert result.speech.sample_rate == CODEC_RATE
    assert result.speech.samples.shape[0] == 4 * CODEC_RATE
    frames = video_frame_count(4 * CODEC_RATE, CODEC_RATE, 25.0)
    assert frames == 97  # the official Wav2Lip count: 100 frames less the last window's 0.2 s, plus one
    assert result.frames.shape == (frames, avatar.height, avatar.width, 3)
    assert result.frames.dtype == torch.uint8
    assert set(result.stage_ms) >= {"rvc", "vallex", "fastpitch", "wav2lip"}
    assert all(v > 0 for v in result.stage_ms.values())
    assert 0 < result.first_chunk_ms <= result.latency_ms
    stages = {e.stage for e in events}
    assert {"plan", "rvc", "vallex", "fastpitch", "wav2lip"} <= stages
    assert sum(e.frames for e in events if e.stage == "wav2lip") == frames


def test_chunked_and_unchunked_runs_have_the_same_length(pipeline, unchunked_pipeline, avatar):
    chunked = pipeline.render(job(avatar, 5.0))
    whole = unchunked_pipeline.render(job(avatar, 5.0))
    assert chunked.chunks > 1
    assert whole.chunks == 1
    assert chunked.speech.samples.shape == whole.speech.samples.shape == (5 * CODEC_RATE,)
    assert chunked.frames.shape == whole.frames.shape


def test_same_seed_same_output_and_other_seed_differs(pipeline, avatar):
    a = pipeline.render(job(avatar, 3.0, seed=7))
    b = pipeline.render(job(avatar, 3.0, seed=7))
    c = pipeline.render(job(avatar, 3.0, seed=8))
    assert torch.equal(a.speech.samples, b.speech.samples)
    assert torch.equal(a.frames, b.frames)
    assert not torch.equal(a.speech.samples, c.speech.samples)


def test_output_does_not_depend_on_the_placement_map(pipeline, avatar):
    reference_run = pipeline.render(job(avatar, 3.0, seed=3))
    cfg = tiny_config(chunk_seconds=2.5)
    for stage in cfg.stages:
        cfg.stage(stage).device = "cpu"  # explicit per-stage placement instead of the pipeline default
    placed = Pipeline(cfg, placement=Placement.from_config(cfg))
    for name, stage in pipeline.built_stages().items():  # same prepared models, another placement and workers
        setattr(placed, name, stage)
    placed.prepare()
    try:
        other = placed.render(job(avatar, 3.0, seed=3))
    finally:
        placed.close()
    assert torch.equal(reference_run.speech.samples, other.speech.samples)
    assert torch.equal(reference_run.frames, other.frames)


def test_first_chunk_arrives_before_the_last(pipeline, avatar):
    handle = pipeline.submit(job(avatar, 6.0))
    arrivals = [(c.index, c.ready_at, c.last) for c in handle.chunks()]
    assert len(arrivals) >= 3
    assert [i for i, _, _ in arrivals] == list(range(len(arrivals)))
    assert arrivals[0][1] < arrivals[-1][1] and arrivals[-1][2]


def test_several_jobs_in_flight(pipeline, avatar):
    handles = [pipeline.submit(job(avatar, 2.0, seed=s)) for s in range(3)]
    results = [h.result(timeout=600) for h in handles]
    assert all(r.speech.samples.shape[0] == 2 * CODEC_RATE for r in results)
    assert all(r.frames.shape[0] == video_frame_count(2 * CODEC_RATE, CODEC_RATE, 25.0) == 47 for r in results)


def test_bad_jobs_are_refused_before_any_work(pipeline, avatar):
    with pytest.raises(InputError, match="script is empty"):
        pipeline.submit(job(avatar, 2.0, text="   "))
    with pytest.raises(InputError, match="language 'xx'"):
        pipeline.submit(Job(text="hello", language="xx", reference=voiced_reference(), transcript="t", avatar=avatar))
    with pytest.raises(InputError, match="shorter than the minimum"):
        pipeline.submit(Job(text="hello", language="en", reference=voiced_reference(0.5), transcript="t", avatar=avatar))
    silent = Waveform(torch.zeros(32000), 16000)
    with pytest.raises(InputError, match="silent"):
        pipeline.submit(Job(text="hello", language="en", reference=silent, transcript="t", avatar=avatar))


def _peak_rss_during(fn) -> int:
    """Peak resident memory above the level before `fn` ran (sampled every 5 ms)."""
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = base
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        stop.set()
        thread.join()
    return peak - base


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_clip_length(pipeline, avatar):
    """Streaming a chunked clip (chunks consumed and dropped) holds one chunk at a time.

    Bound: after a warm-up run (the allocator's arenas grow once, on the first long run), the
    12 s clip's peak above baseline exceeds the 3 s clip's by less than 128 MiB; its frames alone
    would be 9 s x 25 fps x 256 x 256 x 3 B = 442 MiB more if they were all held. The long clip is
    measured twice and the lower peak kept: glibc's per-thread arenas add up to ~100 MiB of noise to
    one run's RSS peak, while frames that were held would show in every run. The render worker
    renders what is queued together, up to Wav2Lip's batch size in frames: that batch is set to
    about one 2.5 s chunk here, so a render that falls behind cannot batch the long clip's chunks
    where the short clip has none to batch (the batch size, not the clip, bounds that memory).
    """
    def stream(seconds: float) -> None:
        for chunk in pipeline.stream(job(avatar, seconds)):
            del chunk

    options = pipeline.wav2lip.options
    batch_size, options.batch_size = options.batch_size, 64
    try:
        stream(12.0)  # warm the allocator and the caches
        short = _peak_rss_during(lambda: stream(3.0))
        long = min(_peak_rss_during(lambda: stream(12.0)) for _ in range(2))
    finally:
        options.batch_size = batch_size
    assert long - short < 128 * 2**20, (
        f"12 s clip peak {long / 2**20:.1f} MiB vs 3 s clip {short / 2**20:.1f} MiB above baseline")


def test_two_gpu_placement_map():
    cfg = PipelineConfig()
    placement = Placement.from_config(cfg, gpu_count=2)
    assert placement.describe() == {"rvc": "cuda:0", "vallex": "cuda:0", "fastpitch": "cuda:1", "wav2lip": "cuda:1"}
    one = Placement.from_config(PipelineConfig(device="cpu"), gpu_count=2)
    assert set(one.describe().values()) == {"cpu"}


def test_speech_mode_frames_equal_one_unchunked_wav2lip_pass(speech_mode_pipeline, avatar):
    """lipsync_features=speech: streamed, chunked frames == Wav2Lip run once on the whole clip's mel."""
    from iris_pipeline.audio import wav2lip_mel

    pipeline = speech_mode_pipeline
    result = pipeline.render(job(avatar, 5.0, seed=11))
    assert result.chunks > 1
    mel = wav2lip_mel(result.speech.samples, CODEC_RATE)
    request = FramesRequest(mel=mel, mel_offset=0, total_mel_frames=mel.shape[1], avatar=avatar, frame_start=0,
                            frame_count=result.frames.shape[0], fps=pipeline.config.video.fps)
    whole = pipeline.wav2lip.render_frames([request])[0].frames
    assert result.frames.shape == whole.shape
    # streamed mel columns equal the whole clip's up to float rounding (1e-6), which can move a
    # pixel by one level after the generator; no frame may differ by more
    diff = (result.frames.int() - whole.int()).abs()
    assert int(diff.max()) <= 1, int(diff.max())
