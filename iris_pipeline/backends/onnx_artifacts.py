"""ONNX artifacts for the engine cache: the exported graph (fp32 or typed fp16) and its INT8 version.

`build_onnx(spec, workdir, log, precision=...)` writes into a cache work directory:
- `model.onnx` — the fp32 export, checked against PyTorch in onnxruntime on the profile's opt inputs;
- for fp16 `model.fp16.onnx` — the typed half-precision export (what a strongly typed TensorRT
  network is built from), checked the same way within the graph's accuracy gate;
- for INT8 also `calibration.pt` (the seeded calibration and held-out inputs, kept beside the engine
  so a build can be reproduced and audited) and `model.int8.onnx` — ModelOpt's Q/DQ graph (its
  non-quantised part in `int8.high_precision`), accepted only if its outputs in onnxruntime pass the
  accuracy gate against fp32 PyTorch on the held-out inputs.
Every file written passes `onnx.checker.check_model(..., full_check=True)` (types and shapes) first.
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
from iris_pipeline.backends.cache import BuildLog, BuildResult, EngineBuildError
from iris_pipeline.backends.graph import GraphSpec
from iris_pipeline.backends.onnx_export import OnnxRuntimeGraph, export_onnx
from iris_pipeline.backends.quantize import quantize_onnx
from iris_pipeline.stage_options import Int8Options

ONNX_NAME = "model.onnx"
FP16_NAME = "model.fp16.onnx"
INT8_NAME = "model.int8.onnx"
CALIBRATION_NAME = "calibration.pt"
EXPORT_RTOL = 1e-3
ONNX_PRECISIONS = ("fp32", "fp16", "int8")


def check_onnx(path: Path, what: str) -> None:
    """Full ONNX check (types and shapes inferred through the graph): an ill-typed graph stops here,
    with one line, rather than in onnxruntime or the TensorRT parser."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineBuildError(f"{what}: not a valid ONNX graph: {first}") from exc


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
    export_device: str | torch.device = "cpu",
    threads: int | None = None,
) -> BuildResult:
    """Export (fp16: typed; INT8: then quantise with ModelOpt and gate) `spec` into `workdir`."""
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"{spec.name}: ONNX artifacts are {', '.join(ONNX_PRECISIONS)}, got {precision!r}")
    typed = precision == "fp16"
    name, dtype = (FP16_NAME, torch.float16) if typed else (ONNX_NAME, torch.float32)
    info: dict[str, Any] = {"opset": opset, "export_dtype": str(dtype).replace("torch.", "")}
    start = time.perf_counter()
    onnx_path = export_onnx(spec, workdir / name, dtype=dtype, device=export_device, opset=opset)
    info["export_seconds"] = round(time.perf_counter() - start, 3)
    check_onnx(onnx_path, f"{spec.name} {info['export_dtype']} export")
    log(
        f"exported {spec.name} to ONNX opset {opset} as {info['export_dtype']} "
        f"({onnx_path.stat().st_size} bytes) in {info['export_seconds']} s"
    )
    # the export must compute what the module computes before anything is built on it
    sample = spec.example_inputs("opt", seed=0)
    report = compare(
        reference_outputs(spec, [sample]), run_onnx(OnnxRuntimeGraph(onnx_path, threads=threads), [sample])
    )
    info["export_check"] = report.as_dict()
    log(f"export check vs fp32 PyTorch: {report.line()}")
    if typed:
        accuracy_gate(spec, int8).check(report, f"{spec.name} fp16 export (onnxruntime)")
    if precision != "int8":
        return BuildResult(name, info)

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
    start = time.perf_counter()
    summary = quantize_onnx(
        onnx_path,
        workdir / INT8_NAME,
        [feeds(spec, s) for s in calibration],
        method=int8.method,
        high_precision=int8.high_precision,
        quantize_attention=int8.quantize_attention,
        fp32_op_types=spec.fp32_op_types,
    )
    check_onnx(workdir / INT8_NAME, f"{spec.name} int8 graph")
    info["quantization"] = summary.as_dict()
    info["calibration_seconds"] = round(time.perf_counter() - start, 3)
    log(
        f"ModelOpt INT8: {summary.as_dict()} from {len(calibration)} calibration samples "
        f"({int8.method}) in {info['calibration_seconds']} s"
    )
    report = fake_quant_accuracy(spec, workdir / INT8_NAME, held_out, threads=threads)
    info["accuracy_fake_quant"] = report.as_dict()
    log(f"INT8 (onnxruntime) vs fp32 on held-out inputs: {report.line()}")
    accuracy_gate(spec, int8).check(report, f"{spec.name} int8 (onnxruntime)")
    return BuildResult(INT8_NAME, info)


def fake_quant_accuracy(
    spec: GraphSpec, int8_path: Path, held_out: list[tuple], threads: int | None = None
) -> AccuracyReport:
    """The Q/DQ graph in onnxruntime vs the fp32 module, over `held_out`."""
    return compare(
        reference_outputs(spec, held_out), run_onnx(OnnxRuntimeGraph(int8_path, threads=threads), held_out)
    )
