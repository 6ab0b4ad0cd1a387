"""VALL-E X AR decode speed on the GPU: full size, fp16, 375 frames (5 s) at batch 1 and 16.

Eager static-cache step vs the same step replayed as a CUDA graph; ms per step, kernels per step and
the ratio to the HBM floor (AR weight bytes + KV-cache bytes read per step / peak bandwidth).
Run: `pytest -m gpu tests/perf/test_vallex_gpu.py -s`.
"""

from __future__ import annotations

import json

import pytest
import torch

from iris_pipeline.models.vallex import build_vallex
from iris_pipeline.models.vallex.decode import Sampling, VallexDecoder
from tests.support.vallex_perf import (
    count_step_kernels,
    hbm_floor,
    peak_bandwidth,
    synthetic_requests,
    time_ar_steps,
)

FRAMES = 375  # 5 s at 75 frames/s
PROMPT_FRAMES = 225  # a 3 s prompt
TEXT_TOKENS = 120  # prompt + script phonemes


@pytest.fixture(scope="module")
def full_fp16_model():
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = build_vallex("full")
    return model.to(torch.float16).eval()


@pytest.mark.gpu
def test_graph_step_gives_the_eager_tokens(full_fp16_model):
    requests = synthetic_requests(4, TEXT_TOKENS, PROMPT_FRAMES, frames=32)
    eager = VallexDecoder(full_fp16_model, use_cuda_graph=False).decode_ar(requests, Sampling(greedy=True))[0]
    graph = VallexDecoder(full_fp16_model, use_cuda_graph=True).decode_ar(requests, Sampling(greedy=True))[0]
    for a, b in zip(eager, graph, strict=True):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 16])
def test_ar_decode_375_frames(full_fp16_model, batch, record_property):
    model = full_fp16_model
    requests = synthetic_requests(batch, TEXT_TOKENS, PROMPT_FRAMES, frames=FRAMES)
    bandwidth = peak_bandwidth()
    assert bandwidth, "peak memory bandwidth unknown for this GPU"
    row = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": batch, "frames": FRAMES,
           "prompt_frames": PROMPT_FRAMES, "text_tokens": TEXT_TOKENS, "dtype": "fp16",
           "bandwidth_gbs": bandwidth / 1e9}
    modes = (("eager", False, False), ("graph", True, False), ("graph_fused_sampling", True, True))
    for mode, use_graph, in_graph in modes:
        decoder = VallexDecoder(model, use_cuda_graph=use_graph)
        timing = time_ar_steps(decoder, requests, Sampling(in_graph=in_graph), warmup=1, repeats=3)
        row[f"{mode}_ms_per_step"] = timing["ms_per_step"]
        row[f"{mode}_prefill_ms"] = timing["prefill_ms"]
        row[f"{mode}_decode_ms"] = timing["decode_ms"]
        if not use_graph:
            cache = decoder.prefill(requests, FRAMES)
            row["kernels_per_step"] = count_step_kernels(model, cache)
            capacity = cache.capacity
    mean_context = TEXT_TOKENS + 1 + PROMPT_FRAMES + FRAMES // 2
    ideal = hbm_floor(model, batch, mean_context, bandwidth)
    static = hbm_floor(model, batch, mean_context, bandwidth, kv_columns_read=capacity)
    row.update(weight_mb=ideal.weight_bytes / 1e6, kv_mb_ideal=ideal.kv_bytes / 1e6,
               kv_mb_static=static.kv_bytes / 1e6, floor_ms=ideal.floor_ms, floor_ms_static_kv=static.floor_ms,
               eager_ratio_to_floor=row["eager_ms_per_step"] / ideal.floor_ms,
               graph_ratio_to_floor=row["graph_ms_per_step"] / ideal.floor_ms,
               fused_ratio_to_floor=row["graph_fused_sampling_ms_per_step"] / ideal.floor_ms,
               graph_speedup=row["eager_ms_per_step"] / row["graph_ms_per_step"],
               fused_speedup=row["eager_ms_per_step"] / row["graph_fused_sampling_ms_per_step"])
    print("\nvallex AR decode:", json.dumps(row, indent=1))
    for key, value in row.items():
        record_property(key, value)
    # A step cannot beat streaming its weights once; a lower figure means the timing is broken.
    for mode, _, _ in modes:
        assert row[f"{mode}_ms_per_step"] > ideal.floor_ms * 0.9, mode
