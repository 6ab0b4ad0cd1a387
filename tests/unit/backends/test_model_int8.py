"""INT8 (explicit Q/DQ, fake-quantised in onnxruntime) of Wav2Lip and FastPitch vs fp32 PyTorch.

The figures each test prints (and records as junit properties) are the accuracy the gate measured
on held-out inputs; the gate's thresholds are the graphs' defaults (see `backends/stage_graphs.py`).
Random (seeded) weights: with official checkpoints the activation ranges differ, and so may the figures.
"""

from __future__ import annotations

import pytest

from iris_pipeline import models
from iris_pipeline.backends import BackendOptions, Int8Options
from iris_pipeline.backends.accuracy import accuracy_gate
from iris_pipeline.backends.stage_graphs import fastpitch_graphs, wav2lip_graph

OPTIONS = BackendOptions(int8=Int8Options(calibration_samples=6, held_out_samples=3, seed=0))


def _int8(spec, cached_onnx, record_property):
    cached = cached_onnx(spec, "int8", OPTIONS)
    accuracy = cached.entry.info["accuracy_fake_quant"]
    gate = accuracy_gate(spec, OPTIONS.int8)
    print(
        f"\n{spec.name} int8 fake-quant vs fp32: cosine min {accuracy['min_cosine']:.5f} (centered "
        f"{accuracy['min_centered_cosine']:.5f}), max |err| {accuracy['max_abs_error']:.4g} "
        f"(reference max |x| "
        f"{accuracy['reference_max_abs']:.3g}); gate cosine >= {gate.min_cosine}, max |err| <= "
        f"{gate.max_abs_error}; {cached.entry.info['quantization']}"
    )
    record_property(f"{spec.name}.int8", accuracy)
    assert accuracy["min_cosine"] >= gate.min_cosine and accuracy["max_abs_error"] <= gate.max_abs_error
    assert cached.entry.file("calibration.pt").exists()
    assert cached.entry.info["quantization"]["quantized_nodes"] > 0
    return accuracy


def test_wav2lip_tiny_int8(tiny_wav2lip_graph, cached_onnx, record_property):
    _int8(tiny_wav2lip_graph, cached_onnx, record_property)


def test_fastpitch_tiny_int8(tiny_fastpitch_graphs, cached_onnx, record_property):
    for spec in tiny_fastpitch_graphs:
        _int8(spec, cached_onnx, record_property)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wav2lip", "fastpitch"])
def test_full_size_int8(name, cached_onnx, record_property):
    model = models.build(name, "full")
    specs = [wav2lip_graph(model, "full")] if name == "wav2lip" else list(fastpitch_graphs(model, "full"))
    for spec in specs:
        _int8(spec, cached_onnx, record_property)
