"""ONNX export of the Wav2Lip and FastPitch graphs: onnxruntime matches PyTorch over the shape profile.

Tolerances: Wav2Lip crops are in [0, 1] (sigmoid), compared with atol 1e-4; FastPitch log-mels span
about [-12, 2] after a transformer, compared with atol 1e-3 + rtol 1e-3. The profile's min and max
points run too, so the dynamic axes are real (a frozen axis would fail there).
"""

from __future__ import annotations

import pytest
import torch

from iris_pipeline import models
from iris_pipeline.backends.stage_graphs import fastpitch_graphs, wav2lip_graph
from iris_pipeline.models.fastpitch import regulate_length

TOLERANCES = {"wav2lip": dict(atol=1e-4, rtol=0.0), "fastpitch": dict(atol=1e-3, rtol=1e-3)}


def _check(spec, graph, points=("min", "opt", "max")):
    tolerance = TOLERANCES[spec.name.split(".")[0]]
    for point in points:
        inputs = spec.example_inputs(point, seed=3)
        with torch.no_grad():
            expected = spec.module(*inputs)
        got = graph(*inputs)
        assert got.shape == expected.shape, point
        torch.testing.assert_close(
            got, expected, **tolerance, msg=lambda m, p=point: f"{spec.name} at {p}: {m}"
        )


def test_wav2lip_tiny_onnx_matches_pytorch(tiny_wav2lip_graph, cached_onnx):
    cached = cached_onnx(tiny_wav2lip_graph)
    assert cached.entry.info["export_check"]["max_abs_error"] < 1e-4
    _check(tiny_wav2lip_graph, cached.value)


def test_fastpitch_tiny_onnx_matches_pytorch(tiny_fastpitch_graphs, cached_onnx):
    for spec in tiny_fastpitch_graphs:
        _check(spec, cached_onnx(spec).value)


def test_fastpitch_graphs_compose_to_infer(tiny_fastpitch_graphs, cached_onnx):
    """encoder -> regulate_length -> decoder (both in onnxruntime) renders FastPitch.infer's mel."""
    encoder, decoder = tiny_fastpitch_graphs
    model = encoder.module.model
    symbols = encoder.example_inputs("opt", seed=4)[0][:1]
    symbols = symbols[:, : int((symbols != 0).sum())]
    durations = torch.randint(1, 5, symbols.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.infer(symbols, durations=durations).mel
    encodings = cached_onnx(encoder).value(symbols)
    regulated, lengths = regulate_length(durations, encodings)
    mel = cached_onnx(decoder).value(regulated, lengths)
    torch.testing.assert_close(mel, expected, **TOLERANCES["fastpitch"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wav2lip", "fastpitch"])
def test_full_size_onnx_matches_pytorch(name, cached_onnx):
    model = models.build(name, "full")
    specs = [wav2lip_graph(model, "full")] if name == "wav2lip" else list(fastpitch_graphs(model, "full"))
    for spec in specs:
        _check(spec, cached_onnx(spec).value, points=("min", "opt"))
