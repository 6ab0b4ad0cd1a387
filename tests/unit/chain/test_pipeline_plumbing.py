"""The pipeline's plumbing around stand-in stages: a job is planned once, failures arrive in order."""

from __future__ import annotations

import pytest
import torch

from iris_pipeline import chunking
from iris_pipeline.audio import Waveform
from iris_pipeline.config import PipelineConfig
from iris_pipeline.pipeline import Job, Pipeline
from tests.unit.bench import bench_fakes

TEXT = "One two three. Four five six. Seven eight nine. Ten eleven twelve."


def config() -> PipelineConfig:
    cfg = PipelineConfig(device="cpu")
    cfg.chunking.chunk_seconds = 1.0
    cfg.chunking.first_chunk_seconds = None
    return cfg


def job(pipeline: Pipeline) -> Job:
    return Job(text=TEXT, language="en", reference=Waveform(0.1 * torch.ones(32000), 16000), transcript="hello",
               avatar=pipeline.prepare_avatar("unused"), seconds=4.0)


def test_a_render_plans_its_chunks_once(monkeypatch):
    calls = []
    plan_chunks = chunking.plan_chunks
    monkeypatch.setattr(chunking, "plan_chunks", lambda *a, **k: calls.append(a) or plan_chunks(*a, **k))
    pipeline = Pipeline(config(), stage_factory=bench_fakes.stage_factory(bench_fakes.Costs(scale=0.0)))
    pipeline.prepare()
    try:
        checked = job(pipeline)
        plan = pipeline.check_job(checked)
        handle = pipeline.submit(checked, plan)
        result = handle.result(timeout=60)
        assert len(calls) == 1, "check_job plans; submit, the tts and lipsync workers read the handle's plan"
        assert handle.plan is plan and result.chunks == plan.chunks >= 3
        calls.clear()
        pipeline.render(job(pipeline), timeout=60)  # submit without a plan checks and plans, once
        assert len(calls) == 1
    finally:
        pipeline.close()


def test_a_lipsync_failure_reaches_the_job_after_its_earlier_chunks():
    class FailingFastPitch(bench_fakes.FakeFastPitch):
        def align_chunk(self, request):
            if request.text.startswith("Seven"):
                raise ValueError("aligner broke on chunk 2")
            return super().align_chunk(request)

    costs = bench_fakes.Costs(scale=0.0)
    factory = bench_fakes.stage_factory(costs)
    pipeline = Pipeline(config(), stage_factory=lambda name, cfg, device: (
        FailingFastPitch(costs) if name == "fastpitch" else factory(name, cfg, device)))
    pipeline.prepare()
    try:
        handle = pipeline.submit(job(pipeline))
        assert [t.split()[0] for t in handle.plan.texts[:3]] == ["One", "Four", "Seven"]
        received = []
        with pytest.raises(ValueError, match="aligner broke on chunk 2"):
            for chunk in handle.chunks(timeout=60):
                received.append(chunk.index)
        assert received == [0, 1]
    finally:
        pipeline.close()
