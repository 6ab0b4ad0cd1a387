"""Stand-in stages with controlled costs, for the harness tests of the benchmark.

They keep the typed stage contracts (shapes, sample rates, frame counts), so the real
`Pipeline` (queues, chunking, stitching, timers) runs unchanged around them, but their work is a
sleep proportional to the amount of speech or frames: a controlled workload that takes
milliseconds on a loaded 2-core machine, where the tiny models take seconds. A stage's cost can be
raised (`slow_stage`, `scale`) to inject a slowdown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from iris_pipeline.audio import Waveform
from iris_pipeline.benchmark.session import SCHEDULER_OPTION, option_value
from iris_pipeline.stages.contracts import (
    AlignRequest,
    AlignResult,
    FramesRequest,
    FramesResult,
    SpeechRequest,
    SpeechResult,
    VoiceRequest,
    VoiceResult,
)
from iris_pipeline.timebase import CODEC_HOP, CODEC_RATE
from tests.support.speech_slots import OneStepSlots

FRAME_SIZE = 32  # fake avatar frames are 32x32 RGB


@dataclass
class Costs:
    """Milliseconds of sleep per unit of work."""

    rvc_ms: float = 2.0  # per call
    vallex_ms_per_s: float = 6.0  # per second of speech
    fastpitch_ms: float = 1.0  # per chunk
    wav2lip_ms_per_frame: float = 0.2
    scale: float = 1.0  # multiplies every cost (an A/B slowdown)
    extra_ms: dict[str, float] | None = None  # per call, by stage name (an injected delay)
    scheduler_scale: dict[str, float] | None = None  # multiplies VALL-E X's cost, by vallex.options.scheduler


def _sleep(ms: float) -> None:
    if ms > 0:
        time.sleep(ms / 1e3)


class _FakeStage:
    name = "fake"

    def __init__(self, costs: Costs):
        self.costs = costs

    def prepare(self) -> None:
        pass

    def _extra(self) -> float:
        return (self.costs.extra_ms or {}).get(self.name, 0.0)


class FakeRVC(_FakeStage):
    name = "rvc"

    def convert(self, request: VoiceRequest) -> VoiceResult:
        _sleep(self.costs.rvc_ms * self.costs.scale + self._extra())
        n = int(round(request.reference.seconds * CODEC_RATE))
        return VoiceResult(Waveform(torch.zeros(n) + 0.01, CODEC_RATE))


class FakeVallex(OneStepSlots, _FakeStage):
    name = "vallex"
    options = SimpleNamespace(max_batch=4, scheduler="continuous", max_waiting=64)

    def encode_prompt(self, prompt: Waveform, transcript: str, language: str) -> Any:
        return SimpleNamespace(frames=int(prompt.samples.numel() // 320))

    scheduler: str | None = None  # the config's value of `scheduler_option` (see `stage_factory`)

    def synthesize(self, requests: list[SpeechRequest]) -> list[SpeechResult]:
        frames = [r.num_frames or 75 for r in requests]
        scale = self.costs.scale * (self.costs.scheduler_scale or {}).get(self.scheduler, 1.0)
        _sleep(self.costs.vallex_ms_per_s * scale * max(frames) / 75 + self._extra())
        return [SpeechResult(Waveform(0.1 * torch.sin(torch.arange(f * CODEC_HOP) / 20.0), CODEC_RATE),
                             torch.zeros(f, 8, dtype=torch.long)) for f in frames]


class FakeFastPitch(_FakeStage):
    name = "fastpitch"

    def __init__(self, costs: Costs, lipsync_features: str = "fastpitch"):
        super().__init__(costs)
        self.lipsync_features = lipsync_features

    def align_chunk(self, request: AlignRequest) -> AlignResult:
        _sleep(self.costs.fastpitch_ms * self.costs.scale + self._extra())
        m = 1 + round(request.speech.seconds * 16000) // 200
        mel = torch.zeros(80, m) if self.lipsync_features == "fastpitch" else None
        return AlignResult(durations=torch.ones(4, dtype=torch.long), timings=[], words=[], lipsync_mel=mel)


class FakeWav2Lip(_FakeStage):
    name = "wav2lip"

    def prepare_avatar(self, path: Any, fps: float = 25.0, progress: Any = None) -> Any:
        return SimpleNamespace(frames=torch.zeros(1, FRAME_SIZE, FRAME_SIZE, 3, dtype=torch.uint8), fps=fps)

    options = SimpleNamespace(batch_size=128)

    def render_frames(self, requests: list[FramesRequest]) -> list[FramesResult]:
        frames = sum(r.frame_count for r in requests)
        _sleep(self.costs.wav2lip_ms_per_frame * self.costs.scale * frames + self._extra())
        return [FramesResult(torch.full((r.frame_count, FRAME_SIZE, FRAME_SIZE, 3), 128, dtype=torch.uint8))
                for r in requests]


FAKES = {"rvc": FakeRVC, "vallex": FakeVallex, "fastpitch": FakeFastPitch, "wav2lip": FakeWav2Lip}


def stage_factory(costs: Costs | None = None, scheduler_option: str = SCHEDULER_OPTION):
    """A `Pipeline(stage_factory=...)` that builds the fake stages (VALL-E X's cost follows the
    config's `scheduler_option` through `Costs.scheduler_scale`)."""
    costs = costs or Costs()

    def build(name: str, config: Any, device: torch.device) -> Any:
        if name == "fastpitch":  # FastPitch's mel exists in the fastpitch lip-sync mode only
            return FakeFastPitch(costs, config.lipsync_features)
        stage = FAKES[name](costs)
        if name == "vallex":  # the config's scheduler, slots and bound, as the real stage reads them
            stage.options = config.vallex.options
            stage.scheduler = option_value(config, scheduler_option)
        return stage

    return build


def make_pipeline(config: dict[str, Any], scale: float = 1.0, scheduler_scale: dict[str, float] | None = None,
                  scheduler_option: str = SCHEDULER_OPTION) -> Any:
    """Factory for the A/B worker (`--factory this_file.py:make_pipeline`): a Pipeline of fake stages."""
    from iris_pipeline.config import parse_pipeline_config
    from iris_pipeline.pipeline import Pipeline

    costs = Costs(scale=scale, scheduler_scale=scheduler_scale)
    return Pipeline(parse_pipeline_config(config), stage_factory=stage_factory(costs, scheduler_option))


class FakeNvml:
    """The pynvml calls the NVML sampler makes, for one GPU on which this process holds `own_bytes`
    (per-process figure), busy `busy_pct` of the time, without GPM (pre-Hopper)."""

    class NVMLError(Exception):
        pass

    NVML_GPU_UTILIZATION_SAMPLES = 1

    def __init__(self, own_bytes: int, busy_pct: float = 40.0):
        self.own_bytes = own_bytes
        self.busy_pct = busy_pct

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> SimpleNamespace:
        return SimpleNamespace(used=self.own_bytes + 2**30, total=80 * 2**30)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[SimpleNamespace]:
        import os

        return [SimpleNamespace(pid=os.getpid(), usedGpuMemory=self.own_bytes),
                SimpleNamespace(pid=1, usedGpuMemory=2**30)]

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> SimpleNamespace:
        return SimpleNamespace(gpu=self.busy_pct, memory=0)

    def nvmlDeviceGetSamples(self, handle: str, kind: int, since: int):
        raise self.NVMLError("Not Supported")

    def nvmlGpmQueryDeviceSupport(self, handle: str) -> SimpleNamespace:
        return SimpleNamespace(isSupportedDevice=0)
