"""Soak: hundreds of back-to-back jobs through one pipeline, and nothing grows.

The jobs alternate between the two ways the pipeline is used: `iris render`'s path (chunks streamed
into an mp4 as they come, by the command's own `_write_clip`) and a benchmark clip (`render()`, the
whole RenderResult). Every tenth job is refused at submission (a silent reference) and every tenth
fails inside the workers (no avatar: Wav2Lip raises mid-job). After a warm-up, the process's
resident memory, open file descriptors and threads are sampled after every job, once unreachable
objects are collected (the English G2P's dictionary connections, for one, are closed only by the
garbage collector, so the raw count of descriptors saw-tooths without growing):

- RSS: the least-squares slope over the 200 measured jobs is at most `RSS_SLOPE_BOUND` (64 KiB per
  job, 12.5 MiB over those jobs; the allocator's noise alone gave slopes of -21 and +16 KiB per job).
  Keeping every benchmark clip (3 in 8 jobs, ~2.9 MiB of frames each) measured ~850 KiB per job.
- open file descriptors and threads: no growth at all (the maximum after the warm-up equals the
  level at its end).
- on a GPU, the device memory NVML reports: slope at most `GPU_SLOPE_BOUND` per job.

`test_the_soak_check_catches_an_injected_leak` runs a shorter soak that keeps every clip and one
open file per job, and checks that the same verdict fails.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from iris_pipeline.audio import Waveform
from iris_pipeline.commands.render import _write_clip
from iris_pipeline.config import PipelineConfig
from iris_pipeline.errors import InputError
from iris_pipeline.metrics.nvml import device_used_bytes
from iris_pipeline.pipeline import Job, Pipeline
from iris_pipeline.timebase import video_frame_count
from tests.support.chain import FACE, tiny_config, voiced_reference

DATA = Path(__file__).resolve().parents[2] / "data"
JOBS = 240
WARMUP = 40
RSS_SLOPE_BOUND = 64 * 1024  # bytes per job
GPU_SLOPE_BOUND = 64 * 1024  # bytes per job
TEXT = "Hello there, this is a soak test."
SECONDS = 0.6


def _reference(seed: int) -> Waveform:
    return voiced_reference(2.0, 16000, pitch_hz=120 + 40 * seed)


@dataclass
class SoakSamples:
    rss: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    gpu: list[int] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)

    def slope(self, values: list[int]) -> float:
        """Least-squares growth per job over the measured (post-warm-up) jobs."""
        return float(np.polyfit(np.arange(len(values)), np.asarray(values, dtype=np.float64), 1)[0])

    def verdict(self, warmup: int) -> list[str]:
        """What grew; [] when everything stayed flat."""
        problems = []
        rss_slope = self.slope(self.rss[warmup:])
        if rss_slope > RSS_SLOPE_BOUND:
            problems.append(f"RSS grows {rss_slope / 1024:.1f} KiB per job (bound {RSS_SLOPE_BOUND / 1024:.0f})")
        for name, values in (("open fds", self.fds), ("threads", self.threads)):
            if max(values[warmup:]) > values[warmup - 1]:
                problems.append(f"{name} grew from {values[warmup - 1]} to {max(values[warmup:])}")
        if self.gpu and self.slope(self.gpu[warmup:]) > GPU_SLOPE_BOUND:
            problems.append(f"GPU memory grows {self.slope(self.gpu[warmup:]) / 1024:.1f} KiB per job")
        return problems


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc `malloc_trim`), so RSS counts live memory: without
    it a leak can hide in free space that earlier tests of the same process left in the heap."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        trim = getattr(ctypes.CDLL(libc_name), "malloc_trim", None)
        if trim is not None:
            trim(0)


def soak(pipeline: Pipeline, avatar, jobs: int, out: Path, leak: list | None = None) -> SoakSamples:
    process = psutil.Process()
    samples = SoakSamples()
    gpu = [d for d in pipeline.placement.gpu_devices]
    for i in range(jobs):
        kind = "refused" if i % 10 == 3 else "failing" if i % 10 == 7 else "render" if i % 2 == 0 else "bench"
        job = Job(text=TEXT, language="en", reference=_reference(i % 2), transcript="a short reference",
                  avatar=None if kind == "failing" else avatar, seconds=SECONDS, seed=i)
        if kind == "refused":
            job.reference = Waveform(torch.zeros(32000), 16000)
            with pytest.raises(InputError):
                pipeline.submit(job)
        elif kind == "failing":
            with pytest.raises(Exception):  # noqa: B017 - whatever Wav2Lip raises without an avatar
                pipeline.render(job, timeout=300)
        elif kind == "render":
            tally = _write_clip(pipeline, job, out)
            assert tally.frames == video_frame_count(tally.samples, 24000, 25)
        else:
            result = pipeline.render(job, timeout=300)
            assert result.frames.shape[0] == video_frame_count(result.speech.samples.shape[0], 24000, 25)
            if leak is not None:  # the injected leak: every clip kept, one file left open per job
                leak.append((result, open(os.devnull)))  # noqa: SIM115
        samples.outcomes[kind] = samples.outcomes.get(kind, 0) + 1
        gc.collect()
        _release_free_heap()
        samples.rss.append(process.memory_info().rss)
        samples.fds.append(process.num_fds())
        samples.threads.append(threading.active_count())
        if gpu:
            samples.gpu.append(sum(device_used_bytes(gpu).values()))
    return samples


def _config() -> PipelineConfig:
    return tiny_config(device="cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def pipeline():
    pipe = Pipeline(_config())
    pipe.prepare()
    yield pipe
    pipe.close()


@pytest.fixture(scope="module")
def avatar(pipeline):
    return pipeline.prepare_avatar(FACE)


@pytest.mark.slow
def test_hundreds_of_jobs_leave_memory_fds_and_threads_flat(pipeline, avatar, tmp_path):
    samples = soak(pipeline, avatar, JOBS, tmp_path / "clip.mp4")
    slope = samples.slope(samples.rss[WARMUP:])
    print(f"soak: {JOBS} jobs, RSS slope {slope / 1024:.2f} KiB/job (bound {RSS_SLOPE_BOUND / 1024:.0f}), "
          f"RSS {samples.rss[WARMUP] / 2**20:.0f} -> {samples.rss[-1] / 2**20:.0f} MiB, "
          f"fds {samples.fds[WARMUP - 1]} -> max {max(samples.fds[WARMUP:])}, "
          f"threads {samples.threads[WARMUP - 1]} -> max {max(samples.threads[WARMUP:])}"
          + (f", GPU slope {samples.slope(samples.gpu[WARMUP:]) / 1024:.2f} KiB/job" if samples.gpu else ""))
    assert samples.outcomes == {"render": 120, "bench": 72, "refused": 24, "failing": 24}
    assert samples.verdict(WARMUP) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "clip.vtt"]


@pytest.mark.slow
def test_the_soak_check_catches_an_injected_leak(pipeline, avatar, tmp_path):
    kept: list = []
    try:
        samples = soak(pipeline, avatar, 60, tmp_path / "clip.mp4", leak=kept)
    finally:
        for _, handle in kept:
            handle.close()
    problems = samples.verdict(warmup=10)
    print("soak with an injected leak:", problems)
    assert any(p.startswith("RSS grows") for p in problems), problems
    assert any(p.startswith("open fds grew") for p in problems), problems
