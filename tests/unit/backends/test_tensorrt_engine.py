"""TensorRT engines (FP16 and explicit INT8) for the tiny Wav2Lip and FastPitch graphs.

Skipped, with the reason, where the `tensorrt` module or a CUDA device is missing (always on the CPU
machines here: this path is unverified until a GPU runner with TensorRT runs it).
"""

from __future__ import annotations

import pytest
import torch

from iris_pipeline.backends import BackendOptions, Int8Options
from iris_pipeline.backends.accuracy import accuracy_gate, compare
from iris_pipeline.backends.tensorrt import tensorrt_unavailable_reason

REASON = tensorrt_unavailable_reason("cuda")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"TensorRT tests: {REASON}")]

INT8 = BackendOptions(int8=Int8Options(calibration_samples=8, held_out_samples=4))


def _outputs_close(spec, engine, precision):
    for point in ("min", "opt", "max"):
        inputs = spec.example_inputs(point, seed=7)
        with torch.no_grad():
            expected = spec.module(*inputs)
        got = engine(*(t.cuda() for t in inputs))
        report = compare([expected], [got.float().cpu()])
        gate = accuracy_gate(spec, INT8.int8)
        assert report.min_cosine >= gate.min_cosine, (spec.name, precision, point, report.line())


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_wav2lip_tiny_engine(tiny_wav2lip_graph, cached_tensorrt, precision):
    cached = cached_tensorrt(tiny_wav2lip_graph, precision, INT8 if precision == "int8" else None)
    assert cached.entry.artifact.name == "engine.plan"
    print(f"\n{tiny_wav2lip_graph.name} {precision}: {cached.entry.info.get('accuracy_engine')}")
    _outputs_close(tiny_wav2lip_graph, cached.value, precision)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_fastpitch_tiny_engines(tiny_fastpitch_graphs, tiny_fastpitch_aligner_graph, cached_tensorrt, precision):
    for spec in (*tiny_fastpitch_graphs, tiny_fastpitch_aligner_graph):
        cached = cached_tensorrt(spec, precision, INT8 if precision == "int8" else None)
        print(f"\n{spec.name} {precision}: {cached.entry.info.get('accuracy_engine')}")
        if cached.entry.info["strongly_typed"]:  # parsed from the typed file the CPU tests check
            assert cached.entry.info["onnx"] == f"model.{precision}.onnx"
        _outputs_close(spec, cached.value, precision)
