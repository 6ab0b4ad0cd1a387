"""GPU timing of the full-size RVC stage in fp16 (random weights: timing does not depend on them).

A 5 s reference at 16 kHz through `RVCStage.convert` (resampling, high-pass, RMVPE, HuBERT, the
v2 synthesizer, resampling to 24 kHz; the disk cache is off so every run converts). CUDA events
around the call, device synchronised; median of 30 runs after 3 warm-up runs. Run with
`pytest -m gpu -s tests/perf/test_rvc_gpu.py`.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from iris_pipeline.audio import Waveform
from iris_pipeline.config import RVCConfig
from iris_pipeline.stages.rvc import RVCStage
from iris_pipeline.timebase import CODEC_RATE
from tests.support.gpu_timing import cuda_times_ms

REFERENCE_SECONDS = 5.0
WARMUP, RUNS = 3, 30


def reference_voice(seconds: float, rate: int = 16000) -> Waveform:
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    f0 = 150 + 30 * torch.sin(2 * math.pi * 0.5 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / rate
    return Waveform((0.4 * torch.sin(phase) + 0.2 * torch.sin(2 * phase)).float(), rate)


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["rvc_v2_40k", "rvc_v2_48k"])
def test_rvc_full_fp16_stage_time(model, record_property):
    stage = RVCStage(RVCConfig(precision="fp16", options={"model": model, "cache": False}),
                     size="full", device="cuda")
    stage.prepare()
    reference = reference_voice(REFERENCE_SECONDS)
    times = cuda_times_ms(lambda: stage.run(reference=reference), warmup=WARMUP, runs=RUNS)
    prompt = stage.run(reference=reference)["prompt"]
    assert prompt.sample_rate == CODEC_RATE and prompt.samples.is_cuda
    assert abs(prompt.seconds - REFERENCE_SECONDS) <= 0.03
    assert torch.isfinite(prompt.samples).all()
    median = statistics.median(times)
    record_property(f"rvc_ms_median_{model}_{REFERENCE_SECONDS:g}s", round(median, 2))
    print(f"rvc {model} full fp16 on {torch.cuda.get_device_name()}: {REFERENCE_SECONDS:g}s reference "
          f"median {median:.1f} ms over {RUNS} runs (min {min(times):.1f}, max {max(times):.1f})")
