"""ONNX export of a `GraphSpec` with its dynamic axes, and an onnxruntime runner for the result.

The TorchScript-based exporter is used where torch still has it (every torch from 2.2 to at least
2.13): it is fast, deterministic and what TensorRT's ONNX parser is tested against. Newer torch
versions without it fall back to the torch.export-based exporter with the same dynamic dimensions.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from iris_pipeline.backends.graph import GraphSpec, cast_inputs

DEFAULT_OPSET = 17
_ONNX_FLOATS = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class _Positional(torch.nn.Module):
    """Makes the graph's outputs a flat tuple so ONNX output names line up."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *inputs: torch.Tensor):
        out = self.module(*inputs)
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, dict):
            return tuple(out.values())
        return tuple(out)


def export_onnx(
    spec: GraphSpec,
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export `spec.module` (a copy cast to `dtype` on `device`) to `path`; returns the path."""
    path = Path(path)
    device = torch.device(device)
    module = _Positional(copy.deepcopy(spec.module)).to(device=device, dtype=dtype).eval()
    example = cast_inputs(spec.example_inputs("opt"), dtype, device)
    kwargs = dict(
        input_names=spec.input_names,
        output_names=list(spec.outputs),
        dynamic_axes=spec.dynamic_axes(),
        opset_version=opset,
        do_constant_folding=True,
    )
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, example, str(path), **kwargs)
        except (TypeError, RuntimeError, ValueError, NotImplementedError) as exc:
            legacy_gone = any(word in str(exc) for word in ("dynamo", "TorchScript", "legacy"))
            if not legacy_gone:
                raise
            _export_dynamo(spec, module, example, path, opset)
    return path


def _export_dynamo(spec: GraphSpec, module: torch.nn.Module, example: tuple, path: Path, opset: int) -> None:
    dims = {name: torch.export.Dim(name, min=lo, max=hi) for name, (lo, _, hi) in spec.profile.ranges.items()}
    dynamic_shapes = tuple(
        {i: dims[d] for i, d in enumerate(s.dims) if isinstance(d, str)} or None for s in spec.inputs
    )
    program = torch.onnx.export(
        module,
        example,
        input_names=spec.input_names,
        output_names=list(spec.outputs),
        dynamic_shapes=dynamic_shapes,
        opset_version=opset,
        dynamo=True,
    )
    program.save(str(path))


class OnnxRuntimeGraph:
    """Runs an ONNX file in onnxruntime on torch CPU tensors; returns torch tensors like the module."""

    def __init__(
        self,
        path: str | Path | bytes,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
    ):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        source = path if isinstance(path, bytes) else str(path)
        self.session = ort.InferenceSession(source, sess_options=options, providers=list(providers))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        # a typed (fp16) export takes half-precision floats: callers hand fp32 tensors as to the module
        self._float_inputs = {
            i.name: _ONNX_FLOATS[i.type] for i in self.session.get_inputs() if i.type in _ONNX_FLOATS
        }

    def run_numpy(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)

    def feeds(self, inputs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
        out = {}
        for name, tensor in zip(self.input_names, inputs, strict=True):
            value = tensor.detach().cpu().numpy()
            out[name] = value.astype(self._float_inputs[name]) if name in self._float_inputs else value
        return out

    def __call__(self, *inputs: torch.Tensor):
        outputs = [torch.from_numpy(o) for o in self.run_numpy(self.feeds(inputs))]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
