"""TensorRT: build an engine from ONNX through the Python API, and run it on torch CUDA tensors.

Support spans TensorRT 8.x to 10.x+ by checking what the installed module has, never its version
string:
- networks: `STRONGLY_TYPED` creation flag where it exists (precision then comes from the ONNX graph:
  fp16 export, Q/DQ for INT8); otherwise the `FP16`/`INT8` builder flags, each only where it exists
  (TensorRT 11 removed them), with `EXPLICIT_BATCH` where that still exists;
- workspace: `set_memory_pool_limit` or the old `max_workspace_size`;
- building: `build_serialized_network` or the old `build_engine(...).serialize()`;
- running: named tensors (`set_input_shape`, `set_tensor_address`, `execute_async_v3`) or
  bindings (`set_binding_shape`, `execute_async_v2`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from iris_pipeline.backends.cache import CorruptEntryError, EngineBuildError
from iris_pipeline.backends.graph import GraphSpec
from iris_pipeline.errors import ConfigError
from iris_pipeline.stage_options import BackendOptions

ENGINE_NAME = "engine.plan"


def tensorrt_unavailable_reason(device: str | torch.device = "cuda") -> str | None:
    """Why TensorRT cannot run here, or None when it can."""
    try:
        importlib.import_module("tensorrt")
    except ImportError:
        return ("the `tensorrt` Python module is not installed (scripts/setup.sh adds the tensorrt-cu12 or "
                "tensorrt-cu13 extra on a GPU machine)")
    if not torch.cuda.is_available():
        return "TensorRT needs a CUDA device and torch.cuda.is_available() is False"
    if torch.device(device).type != "cuda":
        return f"TensorRT runs on CUDA devices, the stage is placed on {device}"
    return None


def _trt() -> Any:
    import tensorrt

    return tensorrt


def make_logger(log: Callable[[str], None], trt: Any = None) -> Any:
    trt = trt or _trt()

    class CollectingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            log(f"[TensorRT {getattr(severity, 'name', severity)}] {msg}")

    return CollectingLogger()


def supports_strongly_typed(trt: Any = None) -> bool:
    """True where networks can be (or, without precision builder flags, always are) strongly typed."""
    trt = trt or _trt()
    return hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") or not hasattr(
        trt.BuilderFlag, "FP16"
    )


def use_strongly_typed(options: BackendOptions, trt: Any = None) -> bool:
    trt = trt or _trt()
    available = supports_strongly_typed(trt)
    if options.strongly_typed is None:
        return available
    if options.strongly_typed and not available:
        raise ConfigError(
            f"options.backend.strongly_typed: TensorRT {trt.__version__} has no strongly "
            "typed networks (allowed here: false or null)"
        )
    return options.strongly_typed


def build_engine(
    onnx_path: Path,
    spec: GraphSpec,
    precision: str,
    options: BackendOptions,
    log: Callable[[str], None],
    strongly_typed: bool,
) -> bytes:
    """A serialized engine for `onnx_path` with one optimisation profile from `spec.profile`."""
    trt = _trt()
    logger = make_logger(log, trt)
    builder = trt.Builder(logger)
    flag = trt.NetworkDefinitionCreationFlag
    flags = 0
    if hasattr(flag, "EXPLICIT_BATCH"):  # required before TensorRT 10, ignored (deprecated) after
        flags |= 1 << int(flag.EXPLICIT_BATCH)
    if strongly_typed and hasattr(flag, "STRONGLY_TYPED"):
        flags |= 1 << int(flag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    parsed = (
        parser.parse_from_file(str(onnx_path))
        if hasattr(parser, "parse_from_file")
        else parser.parse(Path(onnx_path).read_bytes())
    )
    if not parsed:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{spec.name}: TensorRT could not parse {onnx_path.name}: {errors}")

    config = builder.create_builder_config()
    workspace = int(options.workspace_gb * (1 << 30))
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:
        config.max_workspace_size = workspace
    if options.builder_optimization_level is not None and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = options.builder_optimization_level
    if not strongly_typed:
        wanted = {"fp16": ["FP16"], "bf16": ["BF16"], "int8": ["FP16", "INT8"]}.get(precision, [])
        for name in wanted:
            if not hasattr(trt.BuilderFlag, name):
                raise EngineBuildError(
                    f"{spec.name}: TensorRT {trt.__version__} has no BuilderFlag.{name}; "
                    "build a strongly typed network (options.backend.strongly_typed: null)"
                )
            config.set_flag(getattr(trt.BuilderFlag, name))

    profile = builder.create_optimization_profile()
    lo, opt, hi = (spec.shapes(which) for which in ("min", "opt", "max"))
    for tensor in spec.inputs:
        if any(isinstance(d, str) for d in tensor.dims):
            profile.set_shape(tensor.name, lo[tensor.name], opt[tensor.name], hi[tensor.name])
    config.add_optimization_profile(profile)
    log(
        f"building {spec.name}: precision {precision}, strongly typed {strongly_typed}, "
        f"profile {spec.profile.as_dict()}"
    )
    if hasattr(builder, "build_serialized_network"):
        blob = builder.build_serialized_network(network, config)
    else:
        engine = builder.build_engine(network, config)
        blob = engine.serialize() if engine is not None else None
    if blob is None:
        raise EngineBuildError(f"{spec.name}: TensorRT returned no engine (see the build log)")
    return bytes(blob)


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    for trt_name, torch_dtype in (
        ("int64", torch.int64),
        ("bfloat16", torch.bfloat16),
        ("uint8", torch.uint8),
    ):
        if hasattr(trt, trt_name):
            table[getattr(trt, trt_name)] = torch_dtype
    return table[dtype]


class TensorRTGraph:
    """Executes a serialized engine on torch CUDA tensors; call it like the module it came from.

    Inputs are cast to the engine's input dtypes; outputs come back in the engine's dtypes, on the
    current CUDA stream of `device`.
    """

    def __init__(
        self,
        engine_bytes: bytes,
        device: str | torch.device = "cuda",
        log: Callable[[str], None] | None = None,
    ):
        trt = self._trt = _trt()
        self.device = torch.device(device)
        self.messages: list[str] = []
        self._logger = make_logger(log or self.messages.append, trt)
        with torch.cuda.device(self.device):
            runtime = trt.Runtime(self._logger)
            self.engine = runtime.deserialize_cuda_engine(engine_bytes)
            if self.engine is None:
                raise CorruptEntryError(
                    "TensorRT could not deserialize the engine (foreign or corrupt): "
                    + " | ".join(self.messages[-3:])
                )
            self.context = self.engine.create_execution_context()
        self._runtime = runtime
        self.named_tensors = hasattr(self.context, "set_input_shape") and hasattr(
            self.engine, "num_io_tensors"
        )
        if self.named_tensors:
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            is_input = [self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names]
            dtypes = [_torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names]
        else:
            names = [self.engine.get_binding_name(i) for i in range(self.engine.num_bindings)]
            is_input = [self.engine.binding_is_input(i) for i in range(len(names))]
            dtypes = [_torch_dtype(trt, self.engine.get_binding_dtype(i)) for i in range(len(names))]
        self.input_names = [n for n, i in zip(names, is_input, strict=True) if i]
        self.output_names = [n for n, i in zip(names, is_input, strict=True) if not i]
        self.dtypes = dict(zip(names, dtypes, strict=True))
        self._index = {n: i for i, n in enumerate(names)}

    def __call__(self, *inputs: torch.Tensor):
        if len(inputs) != len(self.input_names):
            raise TypeError(
                f"engine takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                f"got {len(inputs)}"
            )
        feeds = [
            t.to(device=self.device, dtype=self.dtypes[n]).contiguous()
            for n, t in zip(self.input_names, inputs, strict=True)
        ]
        stream = torch.cuda.current_stream(self.device)
        if self.named_tensors:
            outputs = self._run_named(feeds, stream)
        else:
            outputs = self._run_bindings(feeds, stream)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _run_named(self, feeds: list[torch.Tensor], stream: torch.cuda.Stream) -> list[torch.Tensor]:
        ctx = self.context
        for name, tensor in zip(self.input_names, feeds, strict=True):
            ctx.set_input_shape(name, tuple(tensor.shape))
            ctx.set_tensor_address(name, tensor.data_ptr())
        outputs = []
        for name in self.output_names:
            shape = tuple(ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(
                    f"engine output {name} has a data-dependent shape {shape}; "
                    "export graphs whose output shapes follow from their input shapes"
                )
            out = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            ctx.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return outputs

    def _run_bindings(self, feeds: list[torch.Tensor], stream: torch.cuda.Stream) -> list[torch.Tensor]:
        ctx = self.context
        bindings = [0] * (len(self.input_names) + len(self.output_names))
        for name, tensor in zip(self.input_names, feeds, strict=True):
            index = self._index[name]
            ctx.set_binding_shape(index, tuple(tensor.shape))
            bindings[index] = tensor.data_ptr()
        outputs = []
        for name in self.output_names:
            index = self._index[name]
            out = torch.empty(
                tuple(ctx.get_binding_shape(index)), dtype=self.dtypes[name], device=self.device
            )
            bindings[index] = out.data_ptr()
            outputs.append(out)
        if not ctx.execute_async_v2(bindings, stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v2 failed")
        return outputs


def tensorrt_version() -> str:
    try:
        return f"tensorrt {_trt().__version__}"
    except ImportError:
        return "tensorrt missing"
