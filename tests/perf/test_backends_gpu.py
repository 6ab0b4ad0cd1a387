"""compile vs eager (and TensorRT where present) per stage graph at the full size, on a GPU.

Prints and records (junit properties) median milliseconds per call and the speedup over eager fp16.
Graphs: Wav2Lip (a batch of 32 frames), FastPitch encoder and decoder (a 10 s chunk), and the VALL-E X
AR decode step (eager vs the CUDA-graph replay of its static-KV-cache step).
"""

from __future__ import annotations

import statistics

import pytest
import torch

from iris_pipeline import models
from iris_pipeline.backends import BackendOptions, prepare_graph, tensorrt_graph
from iris_pipeline.backends.stage_graphs import fastpitch_graphs, wav2lip_graph
from iris_pipeline.backends.tensorrt import tensorrt_unavailable_reason
from iris_pipeline.config import StageConfig
from tests.support.gpu_timing import cuda_times_ms

pytestmark = pytest.mark.gpu


def _median_ms(fn, inputs, warmup: int = 5, repeats: int = 20) -> float:
    return statistics.median(cuda_times_ms(lambda: fn(*inputs), warmup=warmup, runs=repeats))


def _graph_specs(name: str):
    model = models.build(name, "full")
    return [wav2lip_graph(model, "full")] if name == "wav2lip" else list(fastpitch_graphs(model, "full"))


@pytest.mark.parametrize("name", ["wav2lip", "fastpitch"])
def test_compile_vs_eager_full_size(name, engine_cache, record_property):
    for spec in _graph_specs(name):
        inputs = tuple(t.cuda() for t in spec.example_inputs("opt"))
        timings = {}
        eager = prepare_graph(spec, StageConfig(precision="fp16", backend="eager"), stage=name, device="cuda")
        timings["eager_fp16"] = _median_ms(eager, inputs)
        with torch.no_grad():
            reference = eager(*inputs).float()
        compiled = prepare_graph(
            spec, StageConfig(precision="fp16", backend="compile"), stage=name, device="cuda"
        )
        timings["compile_fp16"] = _median_ms(compiled, inputs)
        torch.testing.assert_close(compiled(*inputs).float(), reference, atol=5e-2, rtol=5e-2)
        if tensorrt_unavailable_reason("cuda") is None:
            spec.module.float()  # engines are built (and gated) from the fp32 module
            for precision in ("fp16", "int8"):
                cached = tensorrt_graph(spec, precision, "cuda", BackendOptions(), engine_cache)
                timings[f"tensorrt_{precision}"] = _median_ms(cached.value, inputs)
        speedups = {k: round(timings["eager_fp16"] / v, 3) for k, v in timings.items()}
        line = ", ".join(f"{k} {v:.3f} ms (x{speedups[k]})" for k, v in timings.items())
        print(f"\n{spec.name} [{torch.cuda.get_device_name()}] {spec.shapes('opt')}: {line}")
        record_property(f"{spec.name}.ms", timings)
        record_property(f"{spec.name}.speedup_over_eager_fp16", speedups)
        assert all(v > 0 for v in timings.values())


def test_vallex_decode_step_cuda_graph_vs_eager(record_property):
    from iris_pipeline.models.vallex.decode import VallexDecoder
    from tests.support import vallex_perf as perf

    model = models.build("vallex", "full").to("cuda", torch.float16)
    requests = perf.synthetic_requests(batch=1, text_tokens=64, prompt_frames=150, frames=150)
    eager = perf.time_ar_steps(VallexDecoder(model, use_cuda_graph=False), requests)
    graphed = perf.time_ar_steps(VallexDecoder(model, use_cuda_graph=True), requests)
    speedup = eager["ms_per_step"] / graphed["ms_per_step"]
    print(
        f"\nvallex AR step [{torch.cuda.get_device_name()}]: eager {eager['ms_per_step']:.3f} ms, "
        f"CUDA graph {graphed['ms_per_step']:.3f} ms (x{speedup:.2f})"
    )
    record_property(
        "vallex.ar_step_ms", {"eager": eager["ms_per_step"], "cuda_graph": graphed["ms_per_step"]}
    )
    assert graphed["ms_per_step"] > 0
