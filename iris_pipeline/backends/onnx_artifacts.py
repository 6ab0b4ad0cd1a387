"""ONNX artifacts for the engine cache: the exported graph, and its explicit-INT8 (Q/DQ) version.

`build_onnx(spec, workdir, log, ...)` writes into a cache work directory:
- `model.onnx` — the graph exported at the chosen dtype, checked against PyTorch in onnxruntime
  (fp32 exports) on the profile's opt inputs;
- for INT8 also `calibration.pt` (the seeded calibration and held-out inputs, kept beside the engine
  so a build can be reproduced and audited) and `model.int8.onnx` — the Q/DQ graph, accepted only if
  its fake-quantised outputs in onnxruntime pass the accuracy gate against fp32 PyTorch.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from iris_pipeline.backends.accuracy import AccuracyReport, accuracy_gate, compare
from iris_pipeline.backends.cache import BuildLog, BuildResult
from iris_pipeline.backends.graph import GraphSpec
from iris_pipeline.backends.onnx_export import OnnxRuntimeGraph, export_onnx
from iris_pipeline.backends.options import Int8Options
from iris_pipeline.backends.quantize import quantize_model

ONNX_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
CALIBRATION_NAME = "calibration.pt"
EXPORT_RTOL = 1e-3


def calibration_sets(spec: GraphSpec, int8: Int8Options) -> tuple[list[tuple], list[tuple]]:
    """Seeded calibration and held-out inputs: disjoint draws from the stage's recorded inputs when it
    has them, else from its input maker (disjoint seeds)."""
    if spec.recorded_inputs:
        need = int8.calibration_samples + int8.held_out_samples
        if len(spec.recorded_inputs) < need:
            raise ValueError(
                f"graph {spec.name}: {len(spec.recorded_inputs)} recorded inputs, INT8 needs {need} "
                f"({int8.calibration_samples} calibration + {int8.held_out_samples} held out)"
            )
        order = torch.randperm(len(spec.recorded_inputs), generator=torch.Generator().manual_seed(int8.seed))
        picked = [spec.recorded_inputs[i] for i in order[:need].tolist()]
        return picked[: int8.calibration_samples], picked[int8.calibration_samples :]
    calibration = spec.sample_set(int8.calibration_samples, seed=int8.seed)
    held_out = spec.sample_set(int8.held_out_samples, seed=int8.seed + 1_000_003)
    return calibration, held_out


def reference_outputs(spec: GraphSpec, samples: list[tuple]) -> list[Any]:
    """fp32 PyTorch outputs of the graph's module (on the CPU) for each sample."""
    module = spec.module
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if param is not None and param.dtype != torch.float32:  # the reference is fp32, whatever the stage runs
        module = copy.deepcopy(module).float()
    outputs = []
    with torch.no_grad():
        for sample in samples:
            out = module(*(t.to(device) for t in sample))
            out = (out,) if isinstance(out, torch.Tensor) else tuple(out)
            outputs.append(tuple(o.float().cpu() for o in out))
    return outputs


def feeds(spec: GraphSpec, sample: tuple) -> dict[str, np.ndarray]:
    return {name: t.detach().cpu().numpy() for name, t in zip(spec.input_names, sample, strict=True)}


def run_onnx(graph: OnnxRuntimeGraph, samples: list[tuple]) -> list[tuple]:
    outs = []
    for sample in samples:
        out = graph(*sample)
        outs.append((out,) if isinstance(out, torch.Tensor) else tuple(out))
    return outs


def build_onnx(
    spec: GraphSpec,
    workdir: Path,
    log: BuildLog,
    *,
    precision: str,
    opset: int,
    int8: Int8Options,
    export_dtype: torch.dtype = torch.float32,
    export_device: str | torch.device = "cpu",
    threads: int | None = None,
) -> BuildResult:
    """Export (and for INT8 quantise and gate) `spec` into `workdir`."""
    info: dict[str, Any] = {"opset": opset, "export_dtype": str(export_dtype).replace("torch.", "")}
    start = time.perf_counter()
    onnx_path = export_onnx(spec, workdir / ONNX_NAME, dtype=export_dtype, device=export_device, opset=opset)
    info["export_seconds"] = round(time.perf_counter() - start, 3)
    log(
        f"exported {spec.name} to ONNX opset {opset} ({onnx_path.stat().st_size} bytes) "
        f"in {info['export_seconds']} s"
    )
    if export_dtype == torch.float32:
        # the export must compute what the module computes before anything is built on it
        sample = spec.example_inputs("opt", seed=0)
        report = compare(
            reference_outputs(spec, [sample]),
            run_onnx(OnnxRuntimeGraph(onnx_path, threads=threads), [sample]),
        )
        info["export_check"] = report.as_dict()
        log(f"export check vs PyTorch: {report.line()}")
    if precision != "int8":
        return BuildResult(ONNX_NAME, info)

    calibration, held_out = calibration_sets(spec, int8)
    torch.save(
        {
            "calibration": calibration,
            "held_out": held_out,
            "seed": int8.seed,
            "input_names": spec.input_names,
        },
        workdir / CALIBRATION_NAME,
    )
    model = onnx.load(str(onnx_path))
    start = time.perf_counter()
    quantized, qreport = quantize_model(
        model,
        (feeds(spec, s) for s in calibration),
        method=int8.method,
        percentile=int8.percentile,
        quantize_activation_matmul=int8.quantize_activation_matmul,
        threads=threads,
    )
    onnx.save(quantized, str(workdir / INT8_NAME))
    info["quantization"] = qreport.summary()
    info["calibration_seconds"] = round(time.perf_counter() - start, 3)
    log(
        f"inserted Q/DQ: {qreport.summary()} from {len(calibration)} calibration samples "
        f"({int8.method}) in {info['calibration_seconds']} s"
    )
    if export_dtype == torch.float32:
        report = fake_quant_accuracy(spec, workdir / INT8_NAME, held_out, threads=threads)
        info["accuracy_fake_quant"] = report.as_dict()
        log(f"INT8 fake-quant vs fp32 on held-out inputs: {report.line()}")
        accuracy_gate(spec, int8).check(report, f"{spec.name} int8 (fake-quant, onnxruntime)")
    return BuildResult(INT8_NAME, info)


def fake_quant_accuracy(
    spec: GraphSpec, int8_path: Path, held_out: list[tuple], threads: int | None = None
) -> AccuracyReport:
    """The Q/DQ graph in onnxruntime vs the fp32 module, over `held_out`."""
    return compare(
        reference_outputs(spec, held_out), run_onnx(OnnxRuntimeGraph(int8_path, threads=threads), held_out)
    )
