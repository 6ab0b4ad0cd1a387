"""GPU timing of the codecs VALL-E X calls per job: EnCodec encode of a 3 s prompt, Vocos decode of 375 frames.

Full-size models with random (seeded) weights in fp16; each figure is the median of >= 30 runs timed
with CUDA events after warm-up. Run: `pytest -m gpu tests/perf/test_codecs_gpu.py -s`.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from iris_pipeline import models
from tests.support.gpu_timing import cuda_times_ms

WARMUP = 5
RUNS = 30


def _median_ms(fn) -> float:
    return statistics.median(cuda_times_ms(fn, warmup=WARMUP, runs=RUNS))


@pytest.mark.gpu
def test_encodec_encode_3s_prompt_fp16(record_property):
    model = models.build("encodec_24khz", "full").to("cuda", torch.float16)
    wav = (torch.randn(1, 1, 3 * 24000, generator=torch.Generator().manual_seed(0)) * 0.1).to("cuda", torch.float16)
    with torch.inference_mode():
        codes = model.encode(wav)
        ms = _median_ms(lambda: model.encode(wav))
    assert codes.shape == (1, 8, 225) and codes.dtype == torch.int64
    record_property("encodec_encode_3s_fp16_median_ms", ms)
    print(f"\nencodec encode 3 s prompt fp16 on {torch.cuda.get_device_name()}: median {ms:.3f} ms of {RUNS}")
    assert 0 < ms < 1000


@pytest.mark.gpu
def test_vocos_decode_375_frames_fp16(record_property):
    model = models.build("vocos_encodec_24khz", "full").to("cuda", torch.float16)
    codes = torch.randint(0, 1024, (1, 8, 375), generator=torch.Generator().manual_seed(0)).to("cuda")
    with torch.inference_mode():
        audio = model.decode_codes(codes, bandwidth_id=2)
        ms = _median_ms(lambda: model.decode_codes(codes, bandwidth_id=2))
    assert audio.shape == (1, 375 * 320) and torch.isfinite(audio).all()
    record_property("vocos_decode_375_fp16_median_ms", ms)
    print(f"\nvocos decode 375 frames fp16 on {torch.cuda.get_device_name()}: median {ms:.3f} ms of {RUNS}")
    assert 0 < ms < 1000
