"""INT8 through NVIDIA ModelOpt: its quantiser is what runs, on our calibration set; the accuracy gate and
the engine cache around it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from iris_pipeline.backends import (
    BackendOptions,
    EngineCache,
    EngineRefusedError,
    GraphSpec,
    Int8Options,
    ShapeProfile,
    TensorSpec,
    onnx_artifact,
)
from iris_pipeline.backends.accuracy import AccuracyGate, compare
from iris_pipeline.backends.cache import MANIFEST_NAME


class Toy(torch.nn.Module):
    """Conv, ConvTranspose, Linear (3-D: MatMul) and an activation x activation MatMul."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 16, 3, padding=1)
        self.up = torch.nn.ConvTranspose1d(16, 8, 4, stride=2, padding=1)
        self.linear = torch.nn.Linear(8, 6)

    def forward(self, x):
        h = torch.relu(self.up(torch.relu(self.conv(x)))).transpose(1, 2)  # [B, 2T, 8]
        y = self.linear(h)
        return y @ y.transpose(1, 2)[:, :, :4]  # activation x activation


def _spec() -> GraphSpec:
    torch.manual_seed(0)
    return GraphSpec(
        name="toy",
        module=Toy().eval(),
        inputs=(TensorSpec("x", ("batch", 4, "time")),),
        outputs=("y",),
        profile=ShapeProfile({"batch": (1, 2, 3), "time": (4, 8, 16)}),
        config={"toy": 1},
        accuracy={"min_cosine": 0.99, "max_abs_error": 0.5},
    )


def test_int8_goes_through_modelopt_with_our_calibration_inputs(tmp_path, monkeypatch):
    """ModelOpt's `quantize` does the Q/DQ placement and calibration, on the CPU provider, fed exactly
    the seeded calibration set stored beside the artifact."""
    import modelopt.onnx.quantization as modelopt_quantization

    real = modelopt_quantization.quantize
    calls = []

    def spy(onnx_path, **kwargs):
        reader = kwargs["calibration_data_reader"]
        fed = []
        while (feed := reader.get_next()) is not None:
            fed.append(feed)
        reader.rewind()
        calls.append({**kwargs, "fed": fed})
        return real(onnx_path, **kwargs)

    monkeypatch.setattr(modelopt_quantization, "quantize", spy)
    options = BackendOptions(int8=Int8Options(calibration_samples=5, held_out_samples=2, seed=3))
    built = onnx_artifact(_spec(), "int8", options, EngineCache(tmp_path), threads=1)
    assert len(calls) == 1
    call = calls[0]
    assert call["quantize_mode"] == "int8"
    assert call["calibration_method"] == "max"
    assert call["calibration_eps"] == ["cpu"]
    assert call["high_precision_dtype"] == "fp16"
    assert call["disable_mha_qdq"] is True  # attention matmuls stay in high precision by default
    stored = torch.load(built.entry.file("calibration.pt"), weights_only=True)["calibration"]
    assert len(call["fed"]) == 5
    assert all(np.array_equal(f["x"], s[0].numpy()) for f, s in zip(call["fed"], stored, strict=True))
    info = built.entry.info
    assert info["quantization"]["quantized_nodes"] > 0


def test_int8_graph_keeps_fp32_where_the_graph_asks(tmp_path):
    """`GraphSpec.fp32_op_types` stay fp32 when ModelOpt converts the rest of the graph to fp16."""
    spec = _spec()
    spec.fp32_op_types = ("MatMul",)
    options = BackendOptions(int8=Int8Options(calibration_samples=4, held_out_samples=2))
    built = onnx_artifact(spec, "int8", options, EngineCache(tmp_path), threads=1)
    model = onnx.load(str(built.entry.artifact))
    kept = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert kept
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.output]}
    assert all(types.get(n.output[0]) == onnx.TensorProto.FLOAT for n in kept)


def test_int8_options_refuse_unknown_methods_with_one_line():
    from iris_pipeline.config import parse_pipeline_config
    from iris_pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^config: wav2lip\.options\.backend\.int8\.method: [^\n]+$"):
        parse_pipeline_config({"wav2lip": {"options": {"backend": {"int8": {"method": "percentile"}}}}})


def test_gate_refuses_outside_thresholds():
    report = compare([torch.ones(4)], [torch.tensor([1.0, 1.0, 1.0, -1.0])])
    AccuracyGate(min_cosine=0.4, max_abs_error=2.0).check(report, "ok")
    with pytest.raises(EngineRefusedError, match="cosine"):
        AccuracyGate(min_cosine=0.9, max_abs_error=2.0).check(report, "toy")
    with pytest.raises(EngineRefusedError, match="max"):
        AccuracyGate(min_cosine=0.4, max_abs_error=1.0).check(report, "toy")


def test_int8_artifact_is_cached_with_its_calibration_set_and_gate(tmp_path):
    cache = EngineCache(tmp_path)
    options = BackendOptions(int8=Int8Options(calibration_samples=6, held_out_samples=3, seed=5))
    built = onnx_artifact(_spec(), "int8", options, cache, threads=1)
    entry = built.entry
    assert entry.artifact.name == "model.int8.onnx"
    assert entry.file("calibration.pt").exists()
    calibration = torch.load(entry.file("calibration.pt"), weights_only=True)
    assert len(calibration["calibration"]) == 6
    assert len(calibration["held_out"]) == 3
    again = _spec().sample_set(6, seed=5)  # seeded: the stored set is reproducible
    assert all(torch.equal(a[0], b[0]) for a, b in zip(calibration["calibration"], again, strict=True))
    accuracy = entry.info["accuracy_fake_quant"]
    assert accuracy["min_cosine"] >= 0.99
    assert accuracy["samples"] == 3
    assert onnx_artifact(_spec(), "int8", options, cache, threads=1).hit

    strict = BackendOptions(
        int8=Int8Options(calibration_samples=6, held_out_samples=3, seed=5, max_abs_error=1e-7)
    )
    with pytest.raises(EngineRefusedError, match="accuracy gate failed"):
        onnx_artifact(_spec(), "int8", strict, cache, threads=1)
    refused = [m for _, m in cache.entries() if m and m["outcome"] == "refused"]
    assert len(refused) == 1
    assert refused[0]["info"]["accuracy"]["max_abs_error"] > 1e-7
    assert json.loads((tmp_path / "stats.json").read_text())["graphs"]["toy"]["refused"] == 1
    assert not list(tmp_path.glob(f"toy/*/{MANIFEST_NAME}.tmp*"))


def test_recorded_inputs_feed_calibration_and_change_the_key(tmp_path):
    from iris_pipeline.backends import engine_key
    from iris_pipeline.backends.onnx_artifacts import calibration_sets
    from iris_pipeline.backends.prepare import _int8_key_options

    spec = _spec()
    int8 = Int8Options(calibration_samples=3, held_out_samples=2, seed=1)
    options = BackendOptions(int8=int8)
    plain_key = engine_key(spec, "onnxruntime", "int8", "cpu", _int8_key_options(options, spec))
    spec.recorded_inputs = [(torch.full((1, 4, 8), float(i)),) for i in range(6)]
    calibration, held_out = calibration_sets(spec, int8)
    seen = [float(s[0][0, 0, 0]) for s in calibration + held_out]
    assert len(calibration) == 3
    assert len(held_out) == 2
    assert len(set(seen)) == 5  # disjoint draws
    recorded_key = engine_key(spec, "onnxruntime", "int8", "cpu", _int8_key_options(options, spec))
    assert recorded_key.digest != plain_key.digest
    spec.recorded_inputs = spec.recorded_inputs[:4]
    with pytest.raises(ValueError, match="INT8 needs 5"):
        calibration_sets(spec, int8)
