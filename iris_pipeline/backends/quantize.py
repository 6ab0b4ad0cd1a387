"""Explicit INT8 quantisation of an ONNX graph: our own Q/DQ insertion with calibrated scales.

TensorRT 10 deprecated its implicit-quantisation calibrators and TensorRT 11 removed them; the
precision of a layer now comes from QuantizeLinear/DequantizeLinear pairs in the network itself.
This module places them the way TensorRT fuses them: in front of the data and weight inputs of
Conv, ConvTranspose, Gemm and weight MatMul nodes.

- weights: per output channel, symmetric, int8 in [-127, 127], stored as int8 initializers followed
  by a DequantizeLinear (TensorRT folds it into the layer);
- activations: per tensor, symmetric, scale = amax / 127 where amax is the calibration set's max |x|
  (or a percentile of it), measured by running the float graph in onnxruntime.

The result runs in onnxruntime as a fake-quantised model, which is how the accuracy gate checks it
on a CPU, and parses into a strongly typed TensorRT network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QUANT_MAX = 127
_MIN_AMAX = 1e-8


@dataclass(frozen=True)
class QuantTarget:
    """One node to quantise: its data input and (optionally) its weight initializer with the axis."""

    node: str
    op_type: str
    activation: str
    weight: str | None
    weight_axis: int | None  # None = per-tensor weight scale


@dataclass
class QuantizationReport:
    targets: list[QuantTarget] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # node name -> why
    activation_amax: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        by_type: dict[str, int] = {}
        for t in self.targets:
            by_type[t.op_type] = by_type.get(t.op_type, 0) + 1
        return {
            "quantized_nodes": len(self.targets),
            "by_op_type": by_type,
            "skipped_nodes": len(self.skipped),
            "activations": len(self.activation_amax),
        }


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def plan(model: onnx.ModelProto, quantize_activation_matmul: bool = False) -> QuantizationReport:
    """Which nodes get Q/DQ, with the weight axis of each; nothing is changed yet."""
    initializers = {i.name: i for i in model.graph.initializer}
    constants = set(initializers) | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    report = QuantizationReport()
    for index, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        if node.op_type in ("Conv", "ConvTranspose", "Gemm"):
            data, weight = node.input[0], node.input[1]
            if data in constants:
                report.skipped[name] = "constant data input"
                continue
            if weight not in initializers:
                report.skipped[name] = "weight is not an initializer"
                continue
            if node.op_type == "Conv":
                axis: int | None = 0
            elif node.op_type == "ConvTranspose":
                # weight [C_in, C_out / group, k...]: per output channel only without groups
                axis = 1 if _attr(node, "group", 1) == 1 else None
            else:
                if _attr(node, "transA", 0):
                    report.skipped[name] = "Gemm with transA"
                    continue
                axis = 0 if _attr(node, "transB", 0) else 1
            report.targets.append(QuantTarget(name, node.op_type, data, weight, axis))
        elif node.op_type == "MatMul":
            a, b = node.input[0], node.input[1]
            if b in initializers and a not in constants and len(initializers[b].dims) == 2:
                report.targets.append(QuantTarget(name, "MatMul", a, b, 1))
            elif a not in constants and b not in constants:
                if quantize_activation_matmul:
                    report.targets.append(QuantTarget(name, "MatMul", a, None, None))
                else:
                    # activation x activation (attention): left in high precision, as TensorRT's
                    # own guidance and Model Optimizer's defaults do
                    report.skipped[name] = "activation-activation MatMul"
            else:
                report.skipped[name] = "constant MatMul operand layout not supported"
    return report


def activation_names(report: QuantizationReport, model: onnx.ModelProto) -> list[str]:
    """Tensors whose ranges calibration must measure (data inputs, and the second operand of
    activation-activation MatMuls)."""
    names = {t.activation for t in report.targets}
    nodes = {n.name or f"{n.op_type}_{i}": n for i, n in enumerate(model.graph.node)}
    for t in report.targets:
        if t.op_type == "MatMul" and t.weight is None:
            names.add(nodes[t.node].input[1])
    return sorted(names)


def calibrate(
    model: onnx.ModelProto,
    names: Iterable[str],
    feeds: Iterable[Mapping[str, np.ndarray]],
    method: str = "max",
    percentile: float = 99.99,
    threads: int | None = None,
) -> dict[str, float]:
    """amax of each named tensor over the calibration feeds, from onnxruntime runs of the float graph."""
    import onnxruntime as ort

    names = list(names)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph_outputs = {o.name for o in probe.graph.output}
    for name in names:
        if name not in graph_outputs:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    # graph optimisations would fuse away the tensors we probe
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        probe.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    amax = dict.fromkeys(names, 0.0)
    count = 0
    for feed in feeds:
        values = session.run(names, dict(feed))
        for name, value in zip(names, values, strict=True):
            magnitude = np.abs(value.astype(np.float32))
            if method == "max":
                amax[name] = max(amax[name], float(magnitude.max(initial=0.0)))
            elif method == "percentile":
                amax[name] = max(amax[name], float(np.percentile(magnitude, percentile)))
            else:
                raise ValueError(f"unknown calibration method {method!r}; allowed: max, percentile")
        count += 1
    if count == 0:
        raise ValueError("calibration needs at least one input")
    return {name: max(value, _MIN_AMAX) for name, value in amax.items()}


def _float_type(model: onnx.ModelProto, targets: list[QuantTarget]) -> int:
    initializers = {i.name: i for i in model.graph.initializer}
    for t in targets:
        if t.weight is not None:
            return initializers[t.weight].data_type
    return TensorProto.FLOAT


def _np_float(data_type: int) -> type:
    return np.float16 if data_type == TensorProto.FLOAT16 else np.float32


def quantize_weight(
    weight: np.ndarray, axis: int | None, scale_dtype: type = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights and their scales (per channel along `axis`, or one scale).

    Scales are rounded to `scale_dtype` (kept at or above its smallest normal value) before the
    weights are divided by them, so int8 values and stored scales always agree.
    """
    w = weight.astype(np.float32)
    if axis is None:
        amax = np.array(max(float(np.abs(w).max(initial=0.0)), _MIN_AMAX))
    else:
        reduce_axes = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.maximum(np.abs(w).max(axis=reduce_axes), _MIN_AMAX)
    scale = np.maximum(amax / QUANT_MAX, np.finfo(scale_dtype).tiny).astype(scale_dtype)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.rint(w / scale.astype(np.float32).reshape(shape)), -QUANT_MAX, QUANT_MAX).astype(np.int8)
    return q, scale


def insert_qdq(
    model: onnx.ModelProto, report: QuantizationReport, amax: Mapping[str, float]
) -> onnx.ModelProto:
    """A copy of `model` with Q/DQ pairs in front of every planned node input."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    float_type = _float_type(out, report.targets)
    np_float = _np_float(float_type)
    initializers = {i.name: i for i in graph.initializer}
    nodes = {n.name or f"{n.op_type}_{i}": n for i, n in enumerate(graph.node)}
    new_initializers: list[TensorProto] = []
    activation_dq: dict[str, str] = {}
    weight_dq: dict[str, str] = {}
    inserted: dict[int, list[onnx.NodeProto]] = {}  # position of the consumer -> nodes to put before it
    positions = {id(n): i for i, n in enumerate(graph.node)}

    def zero_point(name: str, length: int | None) -> str:
        value = np.zeros(length, dtype=np.int8) if length else np.array(0, dtype=np.int8)
        new_initializers.append(numpy_helper.from_array(value, name))
        return name

    def activation(tensor: str, before: int) -> str:
        if tensor in activation_dq:
            return activation_dq[tensor]
        base = _unique(f"{tensor}_qdq", graph, new_initializers)
        value = max(
            amax[tensor] / QUANT_MAX, float(np.finfo(np_float).tiny)
        )  # fp16 scales must not flush to 0
        scale = numpy_helper.from_array(np.array(value, dtype=np_float), f"{base}_scale")
        new_initializers.append(scale)
        zp = zero_point(f"{base}_zero_point", None)
        q = helper.make_node("QuantizeLinear", [tensor, scale.name, zp], [f"{base}_q"], name=f"{base}_Q")
        dq = helper.make_node(
            "DequantizeLinear", [f"{base}_q", scale.name, zp], [f"{base}_dq"], name=f"{base}_DQ"
        )
        inserted.setdefault(before, []).extend([q, dq])
        activation_dq[tensor] = f"{base}_dq"
        return activation_dq[tensor]

    def weight(name: str, axis: int | None, before: int) -> str:
        key = f"{name}/{axis}"
        if key in weight_dq:
            return weight_dq[key]
        base = _unique(f"{name}_qdq", graph, new_initializers)
        q, scale = quantize_weight(numpy_helper.to_array(initializers[name]), axis, np_float)
        new_initializers.append(numpy_helper.from_array(q, f"{base}_int8"))
        new_initializers.append(numpy_helper.from_array(scale, f"{base}_scale"))
        zp = zero_point(f"{base}_zero_point", None if axis is None else scale.shape[0])
        attrs = {} if axis is None else {"axis": axis}
        dq = helper.make_node(
            "DequantizeLinear",
            [f"{base}_int8", f"{base}_scale", zp],
            [f"{base}_dq"],
            name=f"{base}_DQ",
            **attrs,
        )
        inserted.setdefault(before, []).append(dq)
        weight_dq[key] = f"{base}_dq"
        return weight_dq[key]

    for target in report.targets:
        node = nodes[target.node]
        at = positions[id(node)]
        node.input[0] = activation(target.activation, at)
        if target.weight is not None:
            node.input[1] = weight(target.weight, target.weight_axis, at)
        elif target.op_type == "MatMul":
            node.input[1] = activation(node.input[1], at)

    ordered = []
    for i, node in enumerate(graph.node):
        ordered.extend(inserted.get(i, []))
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    graph.initializer.extend(new_initializers)
    # drop float weights nobody reads any more
    used = {name for n in graph.node for name in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    _require_opset(out, 19 if float_type == TensorProto.FLOAT16 else 13)
    report.activation_amax = {k: float(v) for k, v in amax.items()}
    return out


def _unique(base: str, graph: onnx.GraphProto, pending: list[TensorProto]) -> str:
    taken = (
        {i.name for i in graph.initializer}
        | {i.name for i in pending}
        | {o for n in graph.node for o in n.output}
    )
    name, k = base, 1
    while f"{name}_scale" in taken or f"{name}_q" in taken:
        name, k = f"{base}{k}", k + 1
    return name


def _require_opset(model: onnx.ModelProto, minimum: int) -> None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < minimum:
            raise ValueError(
                f"Q/DQ of this graph needs ONNX opset >= {minimum}, the export used {opset.version}"
            )


def quantize_model(
    model: onnx.ModelProto,
    calibration_feeds: Iterable[Mapping[str, np.ndarray]],
    *,
    method: str = "max",
    percentile: float = 99.99,
    quantize_activation_matmul: bool = False,
    threads: int | None = None,
) -> tuple[onnx.ModelProto, QuantizationReport]:
    """Plan, calibrate and insert Q/DQ: the explicit-INT8 version of `model`."""
    report = plan(model, quantize_activation_matmul=quantize_activation_matmul)
    if not report.targets:
        raise ValueError("nothing to quantise: no Conv, ConvTranspose, Gemm or weight MatMul in the graph")
    amax = calibrate(
        model,
        activation_names(report, model),
        calibration_feeds,
        method=method,
        percentile=percentile,
        threads=threads,
    )
    return insert_qdq(model, report, amax), report
