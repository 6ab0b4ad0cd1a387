"""Our explicit-INT8 pass: Q/DQ placement, per-channel weight scales, calibration, the accuracy gate."""

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
from iris_pipeline.backends.onnx_export import OnnxRuntimeGraph, export_onnx
from iris_pipeline.backends.quantize import QUANT_MAX, plan, quantize_model, quantize_weight


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


def test_weight_quantisation_is_symmetric_per_channel():
    w = np.array([[[1.0, -2.0]], [[0.5, 0.25]]], dtype=np.float32)  # two output channels
    q, scale = quantize_weight(w, axis=0)
    assert q.dtype == np.int8 and scale.shape == (2,)
    np.testing.assert_allclose(scale, [2.0 / QUANT_MAX, 0.5 / QUANT_MAX])
    assert q[0, 0, 1] == -QUANT_MAX and q[1, 0, 0] == QUANT_MAX  # each channel uses its full range
    np.testing.assert_allclose(q * scale[:, None, None], w, atol=float(scale.max()) / 2)


def test_plan_places_qdq_on_conv_convtranspose_and_weight_matmul(tmp_path):
    spec = _spec()
    model = onnx.load(str(export_onnx(spec, tmp_path / "toy.onnx")))
    report = plan(model)
    kinds = sorted(t.op_type for t in report.targets)
    assert kinds == ["Conv", "ConvTranspose", "MatMul"]
    axes = {t.op_type: t.weight_axis for t in report.targets}
    assert axes == {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}
    assert list(report.skipped.values()) == ["activation-activation MatMul"]


def test_fake_quant_model_runs_and_stays_close(tmp_path):
    spec = _spec()
    model = onnx.load(str(export_onnx(spec, tmp_path / "toy.onnx")))
    calibration = spec.sample_set(8, seed=0)
    feeds = [{"x": s[0].numpy()} for s in calibration]
    quantized, report = quantize_model(model, feeds)
    onnx.checker.check_model(quantized)
    ops = [n.op_type for n in quantized.graph.node]
    assert ops.count("QuantizeLinear") == 3 and ops.count("DequantizeLinear") == 6
    weights = [
        i for i in quantized.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 1
    ]
    assert len(weights) == 3  # float weights replaced by int8 ones
    held_out = spec.sample_set(4, seed=99)
    with torch.no_grad():
        reference = [spec.module(*s) for s in held_out]
    fake = OnnxRuntimeGraph(quantized.SerializeToString(), threads=1)
    result = compare(reference, [fake(*s) for s in held_out])
    assert result.min_cosine > 0.99, result.line()
    float_graph = OnnxRuntimeGraph(tmp_path / "toy.onnx", threads=1)
    exact = compare(reference, [float_graph(*s) for s in held_out])
    assert exact.max_abs_error < result.max_abs_error  # quantisation does change the numbers


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
    assert entry.artifact.name == "model.int8.onnx" and entry.file("calibration.pt").exists()
    calibration = torch.load(entry.file("calibration.pt"), weights_only=True)
    assert len(calibration["calibration"]) == 6 and len(calibration["held_out"]) == 3
    again = _spec().sample_set(6, seed=5)  # seeded: the stored set is reproducible
    assert all(torch.equal(a[0], b[0]) for a, b in zip(calibration["calibration"], again, strict=True))
    accuracy = entry.info["accuracy_fake_quant"]
    assert accuracy["min_cosine"] >= 0.99 and accuracy["samples"] == 3
    assert onnx_artifact(_spec(), "int8", options, cache, threads=1).hit

    strict = BackendOptions(
        int8=Int8Options(calibration_samples=6, held_out_samples=3, seed=5, max_abs_error=1e-7)
    )
    with pytest.raises(EngineRefusedError, match="accuracy gate failed"):
        onnx_artifact(_spec(), "int8", strict, cache, threads=1)
    refused = [m for _, m in cache.entries() if m and m["outcome"] == "refused"]
    assert len(refused) == 1 and refused[0]["info"]["accuracy"]["max_abs_error"] > 1e-7
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
    assert len(calibration) == 3 and len(held_out) == 2 and len(set(seen)) == 5  # disjoint draws
    recorded_key = engine_key(spec, "onnxruntime", "int8", "cpu", _int8_key_options(options, spec))
    assert recorded_key.digest != plain_key.digest
    spec.recorded_inputs = spec.recorded_inputs[:4]
    with pytest.raises(ValueError, match="INT8 needs 5"):
        calibration_sets(spec, int8)


def test_fp16_weight_scales_agree_with_int8_values():
    w = np.full((2, 3), 1e-3, dtype=np.float32) * np.array([[1.0], [0.01]], dtype=np.float32)
    q, scale = quantize_weight(w, axis=0, scale_dtype=np.float16)
    assert scale.dtype == np.float16 and (scale > 0).all()
    np.testing.assert_allclose(q * scale.astype(np.float32)[:, None], w, atol=float(scale.max()))


def test_strongly_typed_fp16_qdq_graph_runs(tmp_path, tiny_wav2lip_graph, cached_onnx):
    """The graph a strongly typed TensorRT network is built from: fp16 export + Q/DQ with fp16 scales
    whose ranges come from the fp32 calibration (here run in onnxruntime, fake-quantised)."""
    from iris_pipeline.backends.prepare import _amax_of
    from iris_pipeline.backends.quantize import activation_names, insert_qdq

    spec = tiny_wav2lip_graph
    int8 = cached_onnx(
        spec, "int8", BackendOptions(int8=Int8Options(calibration_samples=6, held_out_samples=3))
    )
    amax = _amax_of(int8.entry.artifact)
    typed = onnx.load(str(export_onnx(spec, tmp_path / "fp16.onnx", dtype=torch.float16, opset=19)))
    report = plan(typed)
    assert set(activation_names(report, typed)) <= set(amax)  # same tensor names as the fp32 export
    quantized = insert_qdq(typed, report, amax)
    onnx.checker.check_model(quantized)
    scales = [i for i in quantized.graph.initializer if i.name.endswith("_scale")]
    assert scales and all(i.data_type == onnx.TensorProto.FLOAT16 for i in scales)
    inputs = spec.example_inputs("opt", seed=11)
    graph = OnnxRuntimeGraph(quantized.SerializeToString(), threads=1)
    out = graph(*(t.half() for t in inputs))
    with torch.no_grad():
        expected = spec.module(*inputs)
    assert out.dtype == torch.float16
    result = compare([expected], [out.float()])
    assert result.min_cosine > 0.99 and result.max_abs_error < 0.1, result.line()
