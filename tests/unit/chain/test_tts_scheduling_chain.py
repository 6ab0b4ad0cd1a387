"""Both tts schedulers in the whole chain (tiny, CPU): `vallex.options.scheduler` picks one, and a
job's speech is the same under either, alone or among concurrent jobs (batch-invariant decode)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from iris_pipeline.audio import Waveform
from iris_pipeline.chunking import benchmark_script
from iris_pipeline.config import PipelineConfig
from iris_pipeline.pipeline import Job, Pipeline
from iris_pipeline.scheduling import ContinuousScheduler, StaticScheduler

DATA = Path(__file__).resolve().parents[2] / "data"
SCHEDULERS = {"continuous": ContinuousScheduler, "static": StaticScheduler}


def config(scheduler: str) -> PipelineConfig:
    cfg = PipelineConfig(size="tiny", device="cpu", seed=0, stages=["vallex", "fastpitch", "wav2lip"])
    for stage in cfg.stages:
        cfg.stage(stage).precision = "fp32"
    cfg.stage("vallex").options = {"scheduler": scheduler, "max_batch": 3, "max_waiting": 4}
    cfg.chunking.chunk_seconds = 1.0
    cfg.chunking.first_chunk_seconds = None
    return cfg


def reference() -> Waveform:
    t = torch.arange(32000) / 16000
    return Waveform(0.3 * torch.sin(2 * math.pi * 140 * t), 16000)


@pytest.fixture(scope="module")
def speech() -> dict[str, list[torch.Tensor]]:
    """Per scheduler: three jobs submitted at once (sampled, their own seeds), then the second alone."""
    out = {}
    for name, kind in SCHEDULERS.items():
        with Pipeline(config(name)) as pipe:
            assert isinstance(pipe.scheduler, kind)
            avatar = pipe.prepare_avatar(DATA / "astronaut_face.jpg")
            jobs = [Job(text=benchmark_script(seconds, "en"), language="en", reference=reference(),
                        transcript="a short reference", avatar=avatar, seconds=seconds, seed=seed)
                    for seed, seconds in ((1, 2.5), (2, 2.0), (3, 1.5))]
            handles = [pipe.submit(job) for job in jobs]
            results = [h.result(timeout=600) for h in handles]
            assert all(r.chunks >= 2 for r in results)
            alone = pipe.render(jobs[1], timeout=600)
            out[name] = [r.speech.samples for r in results] + [alone.speech.samples]
    return out


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_a_job_sounds_the_same_alone_and_among_others(speech, scheduler):
    together, alone = speech[scheduler][1], speech[scheduler][3]
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_both_schedulers_give_the_same_speech(speech):
    for k, (continuous, static) in enumerate(zip(speech["continuous"], speech["static"], strict=True)):
        torch.testing.assert_close(continuous, static, rtol=0, atol=1e-5, msg=f"job {k}")


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_back_pressure_holds_jobs_in_the_queue_and_every_job_completes(scheduler):
    """Stand-in stages, 2 slots, 1 waiting chunk at most: eight jobs of several chunks each, submitted
    at once, all come out whole and in chunk order."""
    from tests.unit.bench.bench_fakes import Costs, stage_factory

    cfg = PipelineConfig(device="cpu", stages=["rvc", "vallex", "fastpitch", "wav2lip"])
    cfg.stage("vallex").options = {"scheduler": scheduler, "max_batch": 2, "max_waiting": 1}
    cfg.chunking.chunk_seconds = 1.0
    cfg.chunking.first_chunk_seconds = None
    with Pipeline(cfg, stage_factory=stage_factory(Costs())) as pipe:
        assert isinstance(pipe.scheduler, SCHEDULERS[scheduler])
        avatar = pipe.prepare_avatar(DATA / "astronaut_face.jpg")
        handles = [pipe.submit(Job(text=benchmark_script(seconds, "en"), language="en", reference=reference(),
                                   transcript="a short reference", avatar=avatar, seconds=seconds, seed=k))
                   for k, seconds in enumerate((3.0, 2.0, 4.0, 1.5, 3.0, 2.5, 2.0, 3.5))]
        for handle in handles:
            chunks = list(handle.chunks(timeout=120))
            assert [c.index for c in chunks] == list(range(len(chunks))) and len(chunks) >= 2
            starts = [c.speech_start for c in chunks]
            assert starts == [sum(c.speech.shape[0] for c in chunks[:k]) for k in range(len(chunks))]
            assert chunks[-1].last and chunks[-1].speech_start + chunks[-1].speech.shape[0] >= 0.95 * 24000 \
                * handle.job.seconds
