"""The render worker renders the ready frames requests of several jobs in one Wav2Lip call.

Stand-in stages (instant speech, a mel of the right length) around the real pipeline; the Wav2Lip
stand-in records the requests of each `render_frames` call and paints every frame with its job's
mark and its global index, so a frame in the wrong job or out of order shows. Its first call waits
until other jobs' requests are queued behind it: what the next call may batch is then known.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from iris_pipeline.audio import Waveform
from iris_pipeline.chunking import benchmark_script
from iris_pipeline.config import PipelineConfig
from iris_pipeline.pipeline import Job, Pipeline
from iris_pipeline.stages.contracts import (
    AlignRequest,
    AlignResult,
    FramesRequest,
    FramesResult,
)
from iris_pipeline.timebase import CODEC_RATE, video_frame_count
from tests.support.speech_slots import InstantSpeech

BAD = 99  # the mark of an avatar the stand-in refuses


@dataclass(frozen=True)
class MarkedAvatar:
    mark: int


class Vallex(InstantSpeech):
    options = SimpleNamespace(max_batch=1, scheduler="continuous", max_waiting=64)


class FastPitch:
    def prepare(self) -> None:
        pass

    def align_chunk(self, request: AlignRequest) -> AlignResult:
        return AlignResult(durations=torch.ones(1, dtype=torch.long), timings=[], words=[],
                           lipsync_mel=torch.zeros(80, 1 + round(request.speech.seconds * 80)))


class Wav2Lip:
    def __init__(self, batch_size: int, queued: Any, hold_for: int = 2):
        self.options = SimpleNamespace(batch_size=batch_size)
        self.queued = queued  # () -> items waiting in the render queue
        self.hold_for = hold_for  # the first call returns once this many items wait behind it
        self.calls: list[list[tuple[int, int, int]]] = []  # per call: (mark, frame_start, frame_count)
        self.call_ms: list[float] = []  # each call's own duration

    def prepare(self) -> None:
        pass

    def render_frames(self, requests: list[FramesRequest]) -> list[FramesResult]:
        start = time.perf_counter()
        if not self.calls:  # hold the first call until the other jobs' chunks wait behind it
            deadline = time.monotonic() + 30
            while self.queued() < self.hold_for and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(0.02)
        self.calls.append([(r.avatar.mark, r.frame_start, r.frame_count) for r in requests])
        self.call_ms.append((time.perf_counter() - start) * 1e3)
        if any(r.avatar.mark == BAD for r in requests):
            raise ValueError("this avatar cannot be rendered")
        results = []
        for r in requests:
            frames = torch.zeros(r.frame_count, 2, 2, 3, dtype=torch.uint8)
            frames[..., 0] = r.avatar.mark
            frames[..., 1] = (torch.arange(r.frame_start, r.frame_start + r.frame_count) % 256).view(-1, 1, 1)
            results.append(FramesResult(frames))
        return results


SECONDS = 2.0
FRAMES = video_frame_count(int(SECONDS * CODEC_RATE), CODEC_RATE, 25.0)


def _pipeline(batch_size: int, chunk_seconds: float | None = None, hold_for: int = 2) -> tuple[Pipeline, Wav2Lip]:
    config = PipelineConfig(device="cpu", stages=["vallex", "fastpitch", "wav2lip"])
    config.chunking.enabled = chunk_seconds is not None
    if chunk_seconds is not None:
        config.chunking.chunk_seconds, config.chunking.first_chunk_seconds = chunk_seconds, None
    holder: dict[str, Pipeline] = {}
    wav2lip = Wav2Lip(batch_size, lambda: holder["pipe"]._render_in.qsize(), hold_for)
    stages = {"vallex": Vallex(), "fastpitch": FastPitch(), "wav2lip": wav2lip}
    holder["pipe"] = Pipeline(config, stage_factory=lambda name, cfg, device: stages[name])
    return holder["pipe"], wav2lip


def _jobs(marks: list[int]) -> list[Job]:
    reference = Waveform(0.1 * torch.ones(32000), 16000)
    return [Job(text=benchmark_script(SECONDS, "en"), language="en", reference=reference, transcript="hello",
                avatar=MarkedAvatar(mark), seconds=SECONDS) for mark in marks]


def _render_all(pipe: Pipeline, jobs: list[Job]) -> list[Any]:
    pipe.prepare()
    try:
        handles = [pipe.submit(job) for job in jobs]
        outcomes = []
        for handle in handles:
            try:
                outcomes.append(handle.result(timeout=60))
            except ValueError as exc:
                outcomes.append(exc)
        return outcomes
    finally:
        pipe.close()


def _assert_own_frames_in_order(result: Any, mark: int) -> None:
    assert result.frames.shape[0] == FRAMES
    assert torch.all(result.frames[..., 0] == mark), f"job {mark} got another job's frames"
    expected = (torch.arange(FRAMES) % 256).view(-1, 1, 1).expand(-1, 2, 2)
    assert torch.equal(result.frames[..., 1], expected.to(torch.uint8)), f"job {mark}'s frames are out of order"


@pytest.mark.parametrize("batch_size, calls", [
    (2 * FRAMES, [[1], [2, 3]]),  # the two waiting chunks fit one batch: one call
    (2 * FRAMES - 1, [[1], [2], [3]]),  # the third job's chunk does not fit: held for the next call
    (FRAMES, [[1], [2], [3]]),
])
def test_ready_chunks_of_several_jobs_share_a_call_up_to_the_batch_size(batch_size, calls):
    pipe, wav2lip = _pipeline(batch_size)
    results = _render_all(pipe, _jobs([1, 2, 3]))
    assert [[mark for mark, _, _ in call] for call in wav2lip.calls] == calls
    for mark, result in zip([1, 2, 3], results, strict=True):
        _assert_own_frames_in_order(result, mark)


def test_a_jobs_chunks_stay_in_order_when_batched_with_other_jobs():
    # three items held behind the first call: two jobs, so one call renders two chunks of one job
    pipe, wav2lip = _pipeline(batch_size=128, chunk_seconds=0.6, hold_for=3)
    results = _render_all(pipe, _jobs([1, 2]))
    for mark, result in zip([1, 2], results, strict=True):
        _assert_own_frames_in_order(result, mark)
        starts = [start for call in wav2lip.calls for m, start, _ in call if m == mark]
        assert len(starts) == result.chunks and starts == sorted(starts)
    assert any(len({m for m, _, _ in call}) == 2 for call in wav2lip.calls), "no call held both jobs"


def test_a_call_is_a_jobs_wav2lip_time_once_whatever_its_chunks_in_it():
    pipe, wav2lip = _pipeline(batch_size=128, chunk_seconds=0.6, hold_for=3)
    results = _render_all(pipe, _jobs([1, 2]))
    assert any(len(call) > len({m for m, _, _ in call}) for call in wav2lip.calls), "no call held 2 chunks of a job"
    for mark, result in zip([1, 2], results, strict=True):
        own_ms = sum(ms for call, ms in zip(wav2lip.calls, wav2lip.call_ms, strict=True)
                     if mark in {m for m, _, _ in call})
        calls = sum(1 for call in wav2lip.calls if mark in {m for m, _, _ in call})
        # the calls it was in, each counted once (plus the pipeline's few ms around each call)
        assert own_ms <= result.stage_ms["wav2lip"] < own_ms + 15 * calls, (result.stage_ms, own_ms)


def test_a_bad_request_fails_only_its_own_job():
    pipe, wav2lip = _pipeline(batch_size=128)
    first, bad, last = _render_all(pipe, _jobs([1, BAD, 3]))
    assert isinstance(bad, ValueError) and "cannot be rendered" in str(bad)
    _assert_own_frames_in_order(first, 1)
    _assert_own_frames_in_order(last, 3)
    # the batch of the two waiting jobs failed, then each was rendered alone
    assert [[mark for mark, _, _ in call] for call in wav2lip.calls] == [[1], [BAD, 3], [BAD], [3]]
