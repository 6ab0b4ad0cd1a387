"""Explicit INT8 of an ONNX graph with NVIDIA Model Optimizer (`modelopt.onnx.quantization`).

TensorRT 10 deprecated its implicit-quantisation calibrators and TensorRT 11 removed them: the
precision of a layer now comes from QuantizeLinear/DequantizeLinear pairs in the network itself.
ModelOpt places those pairs where TensorRT fuses them, calibrates the activation scales by running
the float graph in onnxruntime on the inputs we hand it (the CPU execution provider is enough, so the
CPU tests run the very code a GPU build runs), and converts the rest of the graph to the
`high_precision` dtype. With fp16 the result is the strongly typed network TensorRT builds; it also
runs in onnxruntime on a CPU, which is where the accuracy gate checks it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

# Calibration runs the float graph in onnxruntime. The CPU provider is always there (the CUDA one
# needs onnxruntime-gpu, which the pinned CPU set-up does not have); calibration is a one-off build cost.
CALIBRATION_PROVIDERS = ("cpu",)
HighPrecision = Literal["fp16", "fp32"]


@dataclass(frozen=True)
class QuantizationSummary:
    """What the quantised graph holds: Q/DQ pairs and the op types that read a dequantised input."""

    quantize_nodes: int
    dequantize_nodes: int
    by_op_type: dict[str, int]
    high_precision: str
    method: str

    @property
    def quantized_nodes(self) -> int:
        return sum(self.by_op_type.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "quantized_nodes": self.quantized_nodes,
            "by_op_type": dict(self.by_op_type),
            "quantize_nodes": self.quantize_nodes,
            "dequantize_nodes": self.dequantize_nodes,
            "high_precision": self.high_precision,
            "method": self.method,
        }


def summarize(model: onnx.ModelProto, high_precision: str, method: str) -> QuantizationSummary:
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    readers = Counter(
        n.op_type
        for n in model.graph.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and dequantized.intersection(n.input)
    )
    ops = Counter(n.op_type for n in model.graph.node)
    return QuantizationSummary(
        ops["QuantizeLinear"], ops["DequantizeLinear"], dict(sorted(readers.items())), high_precision, method
    )


def _reader(feeds: Sequence[Mapping[str, np.ndarray]]):
    """An onnxruntime calibration reader over our feeds: each may have its own shapes, which a single
    stacked array (ModelOpt's `calibration_data`) could not carry."""
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    class FeedReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._position = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._position >= len(feeds):
                return None
            self._position += 1
            return dict(feeds[self._position - 1])

        def get_first(self) -> dict[str, np.ndarray]:  # ModelOpt peeks at one feed for shapes and types
            return dict(feeds[0])

        def rewind(self) -> None:
            self._position = 0

    return FeedReader()


def quantize_onnx(
    source: Path,
    output: Path,
    calibration: Sequence[Mapping[str, np.ndarray]],
    *,
    method: Literal["max", "entropy"] = "max",
    high_precision: HighPrecision = "fp16",
    quantize_attention: bool = False,
    fp32_op_types: Sequence[str] = (),
) -> QuantizationSummary:
    """INT8 (Q/DQ) version of the ONNX file `source` in `output`, calibrated on `calibration` feeds.

    `quantize_attention=False` leaves the activation x activation matmuls of attention in high
    precision (ModelOpt's `disable_mha_qdq`), as TensorRT's guidance does for accuracy;
    `fp32_op_types` stay fp32 when the rest goes to fp16 (where the module computes in fp32 on purpose).
    """
    if not calibration:
        raise ValueError("INT8 calibration needs at least one input")
    from modelopt.onnx.quantization import quantize

    quantize(
        str(source),
        quantize_mode="int8",
        calibration_method=method,
        calibration_data_reader=_reader(calibration),
        calibration_eps=list(CALIBRATION_PROVIDERS),
        high_precision_dtype=high_precision,
        disable_mha_qdq=not quantize_attention,
        op_types_to_exclude_fp16=list(fp32_op_types) or None,
        output_path=str(output),
        log_level="WARNING",
    )
    model = onnx.load(str(output))
    summary = summarize(model, high_precision, method)
    if summary.quantized_nodes == 0:
        raise ValueError(f"{source.name}: ModelOpt quantised no node (no Conv, Gemm or MatMul it could place Q/DQ on)")
    return summary
