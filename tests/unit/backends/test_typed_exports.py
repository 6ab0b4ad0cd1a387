"""The ONNX files a TensorRT engine is parsed from, checked on the CPU: the typed fp16 export and the
ModelOpt INT8 graph of Wav2Lip and FastPitch (encoder, decoder, aligner).

Each passes `onnx.checker.check_model(full_check=True)` (types inferred through every node: the mixed
fp32/fp16 mask of the attention once failed here) and runs in onnxruntime on the CPU at the profile's
min, opt and max points, where its outputs are compared with the eager fp32 module:
- fp16: cosine >= 0.999 and max |err| within the graph's gate (Wav2Lip 0.1 on crops in [0, 1];
  FastPitch 1.0 on log-mels; the aligner 0.1 on probabilities, see `stage_graphs.py`);
- INT8: the graph's accuracy gate (cosine >= 0.99 and the same max |err|).
Random (seeded) tiny weights: figures for official checkpoints differ.
"""

from __future__ import annotations

import onnx
import pytest
import torch

from iris_pipeline.backends import BackendOptions, EngineBuildError, Int8Options
from iris_pipeline.backends.accuracy import accuracy_gate, compare
from iris_pipeline.backends.onnx_artifacts import check_onnx

OPTIONS = BackendOptions(int8=Int8Options(calibration_samples=6, held_out_samples=3, seed=0))
FP16_MIN_COSINE = 0.999
GRAPHS = ("tiny_wav2lip_graph", "fastpitch.encoder", "fastpitch.decoder", "tiny_fastpitch_aligner_graph")


@pytest.fixture
def graph(request, tiny_fastpitch_graphs):
    name = request.param
    if name == "fastpitch.encoder":
        return tiny_fastpitch_graphs[0]
    if name == "fastpitch.decoder":
        return tiny_fastpitch_graphs[1]
    return request.getfixturevalue(name)


WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "LayerNormalization", "BatchNormalization")


def _weight_types(model: onnx.ModelProto) -> set[int]:
    """Element types of the float initializers that layers with weights read (the fp32 positional
    frequencies, kept fp32 on purpose, are not among them)."""
    read = {name for n in model.graph.node if n.op_type in WEIGHTED_OPS for name in n.input}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    return {i.data_type for i in model.graph.initializer if i.name in read and i.data_type in floats}


def _compare_points(spec, graph, min_cosine: float, max_abs_error: float) -> None:
    for point in ("min", "opt", "max"):
        inputs = spec.example_inputs(point, seed=3)
        with torch.no_grad():
            expected = spec.module(*inputs)
        got = graph(*inputs)
        assert got.shape == expected.shape, (spec.name, point)
        report = compare([expected], [got.float()])
        assert report.min_cosine >= min_cosine and report.max_abs_error <= max_abs_error, (
            f"{spec.name} at {point}: {report.line()}"
        )


@pytest.mark.parametrize("graph", GRAPHS, indirect=True)
def test_fp16_export_is_typed_valid_and_close(graph, cached_onnx):
    cached = cached_onnx(graph, "fp16", OPTIONS)
    model = onnx.load(str(cached.entry.artifact))
    onnx.checker.check_model(model, full_check=True)
    float_inputs = [i for i in model.graph.input if i.type.tensor_type.elem_type != onnx.TensorProto.INT64]
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 for i in float_inputs)
    assert _weight_types(model) == {onnx.TensorProto.FLOAT16}  # every weight is half precision
    gate = accuracy_gate(graph, OPTIONS.int8)
    _compare_points(graph, cached.value, FP16_MIN_COSINE, gate.max_abs_error)


@pytest.mark.parametrize("graph", GRAPHS, indirect=True)
def test_int8_graph_is_modelopt_qdq_valid_and_close(graph, cached_onnx):
    cached = cached_onnx(graph, "int8", OPTIONS)
    model = onnx.load(str(cached.entry.artifact))
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") >= ops.count("QuantizeLinear")
    assert onnx.TensorProto.FLOAT16 in _weight_types(model)  # the non-quantised rest is fp16
    quantization = cached.entry.info["quantization"]
    assert quantization["high_precision"] == "fp16" and quantization["quantized_nodes"] > 0
    gate = accuracy_gate(graph, OPTIONS.int8)
    _compare_points(graph, cached.value, gate.min_cosine, gate.max_abs_error)


def test_an_ill_typed_graph_is_refused_with_one_line(tmp_path):
    """What the attention mask used to export: an fp32 constant added to an fp16 tensor."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2])
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [2], [0.0, float("-inf")])
    node = helper.make_node("Add", ["x", "bias"], ["y"])
    model = helper.make_model(helper.make_graph([node], "mixed", [x], [y], [bias]))
    path = tmp_path / "mixed.onnx"
    onnx.save(model, str(path))
    with pytest.raises(EngineBuildError, match=r"^mixed export: not a valid ONNX graph: [^\n]+$"):
        check_onnx(path, "mixed export")
