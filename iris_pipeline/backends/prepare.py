"""One entry point for a stage's compute graph, whatever the backend: `prepare_graph`.

    graph = prepare_graph(spec, stage_config, stage="wav2lip", device="cuda")
    crops = graph(mel, faces)

- `eager`: the module cast to the precision (or autocast);
- `compile`: the same under `torch.compile` (or, with `options.backend.aot`, an AOTInductor package
  from the engine cache);
- `tensorrt`: ONNX export (typed fp16 for a strongly typed fp16 network) -> (INT8: ModelOpt Q/DQ,
  accuracy-gated) -> TensorRT engine, built once and then loaded from the engine cache.
`onnx_artifact` gives the cached ONNX (fp32, typed fp16 or INT8) graph on its own; it is what the
accuracy gate runs on a CPU and what `iris engines build --backend onnx` produces.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from iris_pipeline.backends.accuracy import accuracy_gate, compare
from iris_pipeline.backends.aoti import aoti_unavailable_reason, build_aoti, load_aoti
from iris_pipeline.backends.cache import (
    BuildLog,
    BuildResult,
    Cached,
    CacheEntry,
    CacheStats,
    EngineCache,
    EngineKey,
)
from iris_pipeline.backends.eager import CompiledGraph, EagerGraph, compute_dtype
from iris_pipeline.backends.fingerprint import backend_version, device_fingerprint, module_hash
from iris_pipeline.backends.graph import GraphSpec
from iris_pipeline.backends.tensorrt import (
    ENGINE_NAME,
    TensorRTGraph,
    build_engine,
    tensorrt_unavailable_reason,
    use_strongly_typed,
)
from iris_pipeline.cache import default_cache_dir
from iris_pipeline.config import StageConfig
from iris_pipeline.errors import ConfigError
from iris_pipeline.stage_options import BackendOptions

ENGINE_DIR_ENV = "IRIS_ENGINE_DIR"
# precisions a strongly typed network can take from our ONNX files (fp32 export, typed fp16, ModelOpt INT8)
TYPED_PRECISIONS = ("fp32", "fp16", "int8")


def default_engine_dir() -> Path:
    """`$IRIS_ENGINE_DIR`, else the user cache (`~/.cache/iris_pipeline/engines`)."""
    env = os.environ.get(ENGINE_DIR_ENV)
    return Path(env) if env else default_cache_dir("engines")


def engine_stats(directory: str | Path | None = None) -> CacheStats:
    """Build attempts / successes / hits / seconds of an engine cache (default: the default one)."""
    return EngineCache(directory or default_engine_dir()).stats()


def engine_cache(options: BackendOptions | None = None) -> EngineCache:
    directory = options.engine_dir if options is not None and options.engine_dir else default_engine_dir()
    return EngineCache(directory)


@dataclass
class PreparedGraph:
    """A callable compute graph plus how it was obtained (the cache entry for built artifacts).

    It owns what differs between backends, so a stage hands it fp32 (and integer) inputs on any
    device and just calls it: inputs move to `device` and floating ones are cast to `input_dtype`,
    the dtype its runner computes in (None: the runner casts each input itself, as a TensorRT engine
    does to its bindings' types); with `fixed_profile` (a TensorRT engine, which runs only the shapes
    it was built for) inputs outside the profile are refused with one line naming `stage`.
    """

    run: Callable[..., Any]
    backend: str
    precision: str
    device: torch.device
    cached: Cached | None = None
    details: dict[str, Any] = field(default_factory=dict)
    input_dtype: torch.dtype | None = None
    fixed_profile: GraphSpec | None = None
    stage: str = ""

    def __call__(self, *inputs: torch.Tensor):
        if self.fixed_profile is not None:
            self.fixed_profile.check_in_profile(inputs, self.stage)
        if self.input_dtype is not None:
            inputs = tuple(t.to(device=self.device, dtype=self.input_dtype) if t.is_floating_point()
                           else t.to(self.device) for t in inputs)
        return self.run(*inputs)

    def describe(self) -> dict[str, Any]:
        out = {
            "backend": self.backend,
            "precision": self.precision,
            "device": str(self.device),
            **self.details,
        }
        if self.cached is not None:
            out.update(
                cache_hit=self.cached.hit,
                build_seconds=round(self.cached.build_seconds, 3),
                load_seconds=round(self.cached.load_seconds, 3),
                engine=str(self.cached.entry.directory),
            )
        return out


def engine_key(
    spec: GraphSpec,
    backend: str,
    precision: str,
    device: str | torch.device,
    options: dict[str, Any] | None = None,
    version: str | None = None,
) -> EngineKey:
    """The cache key of `spec` built by `backend` at `precision` for `device`."""
    inputs = [{"name": t.name, "dims": list(t.dims), "dtype": str(t.dtype)} for t in spec.inputs]
    return EngineKey(
        graph=spec.name,
        model_hash=module_hash(spec.module, spec.config),
        profile={"inputs": inputs, "outputs": list(spec.outputs), "ranges": spec.profile.as_dict()},
        precision=precision,
        backend=backend,
        backend_version=version or backend_version(backend),
        device=device_fingerprint(device),
        options=options or {},
    )


def builder_code_hash(*module_names: str) -> str:
    """SHA-256 of the source files that produce an artifact: changing the builder invalidates it."""
    digest = hashlib.sha256()
    for name in sorted(module_names):
        digest.update(name.encode())
        digest.update(Path(importlib.import_module(name).__file__).read_bytes())
    return digest.hexdigest()[:16]


_ONNX_BUILDERS = (
    "iris_pipeline.backends.onnx_export",
    "iris_pipeline.backends.onnx_artifacts",
    "iris_pipeline.backends.quantize",
    "iris_pipeline.backends.graph",
)


def _int8_key_options(options: BackendOptions, spec: GraphSpec) -> dict[str, Any]:
    gate = accuracy_gate(spec, options.int8)
    return {
        **options.int8.model_dump(mode="json"),
        "min_cosine": gate.min_cosine,
        "max_abs_error": gate.max_abs_error,
        "recorded_inputs": spec.recorded_inputs_hash(),
        "fp32_op_types": list(spec.fp32_op_types),
    }


# -- ONNX (the CPU-checkable half of the TensorRT path) ----------------------------------------------


def onnx_artifact(
    spec: GraphSpec,
    precision: str = "fp32",
    options: BackendOptions | None = None,
    cache: EngineCache | None = None,
    threads: int | None = None,
) -> Cached[Any]:
    """The cached ONNX graph of `spec` (fp32, typed fp16, or ModelOpt INT8 that passed the accuracy
    gate) in onnxruntime on the CPU."""
    from iris_pipeline.backends.onnx_artifacts import ONNX_PRECISIONS, build_onnx
    from iris_pipeline.backends.onnx_export import OnnxRuntimeGraph

    if precision not in ONNX_PRECISIONS:
        raise ConfigError(
            f"{spec.name}: ONNX artifacts are {', '.join(ONNX_PRECISIONS)}, got {precision!r}"
        )
    options = options or BackendOptions()
    cache = cache or engine_cache(options)
    key = engine_key(
        spec,
        "onnxruntime",
        precision,
        "cpu",
        _onnx_key_options(spec, precision, options),
        version=f"{backend_version('onnx')}; {backend_version('onnxruntime')}; torch {torch.__version__}",
    )

    def build(workdir: Path, log: BuildLog) -> BuildResult:
        return build_onnx(
            spec, workdir, log, precision=precision, opset=options.onnx_opset, int8=options.int8, threads=threads
        )

    return cache.get_or_build(key, build, lambda entry: OnnxRuntimeGraph(entry.artifact, threads=threads))


def _onnx_key_options(spec: GraphSpec, precision: str, options: BackendOptions) -> dict[str, Any]:
    """What the ONNX file depends on besides the graph: opset, builder code, and for INT8 the
    calibration settings, the gate and the ModelOpt version."""
    key: dict[str, Any] = {"opset": options.onnx_opset, "builder": builder_code_hash(*_ONNX_BUILDERS)}
    if precision == "fp16":
        gate = accuracy_gate(spec, options.int8)  # the fp16 export is gated by the same thresholds
        key["gate"] = {"min_cosine": gate.min_cosine, "max_abs_error": gate.max_abs_error}
    if precision == "int8":
        key["int8"] = {**_int8_key_options(options, spec), "modelopt": backend_version("modelopt")}
    return key


# -- TensorRT ---------------------------------------------------------------------------------------


def _build_tensorrt(
    spec: GraphSpec, precision: str, options: BackendOptions, device: torch.device, strongly_typed: bool
) -> Callable[[Path, BuildLog], BuildResult]:
    def build(workdir: Path, log: BuildLog) -> BuildResult:
        from iris_pipeline.backends.onnx_artifacts import CALIBRATION_NAME, build_onnx, reference_outputs

        # The ONNX the engine is parsed from, built and checked by the same code the CPU tests run.
        # A strongly typed network takes its precision from the graph's own tensors: the typed fp16
        # export, or ModelOpt's Q/DQ graph (fp16 around it); without strong typing the fp32 export and
        # the builder's precision flags.
        onnx_precision = precision if precision == "int8" or (strongly_typed and precision == "fp16") else "fp32"
        base = build_onnx(
            spec,
            workdir,
            log,
            precision=onnx_precision,
            opset=options.onnx_opset,
            int8=options.int8,
            export_device=device if onnx_precision == "fp16" else "cpu",
        )
        info = dict(base.info)
        blob = build_engine(workdir / base.artifact, spec, precision, options, log, strongly_typed)
        (workdir / ENGINE_NAME).write_bytes(blob)
        # the built engine, not only its ONNX, must meet the gate
        engine = TensorRTGraph(blob, device, log)
        samples = (
            torch.load(workdir / CALIBRATION_NAME, weights_only=True)["held_out"]
            if precision == "int8"
            else [spec.example_inputs("opt", seed=1)]
        )
        report = compare(
            reference_outputs(spec, samples), [_as_tuple(engine(*(t.to(device) for t in s))) for s in samples]
        )
        info["accuracy_engine"] = report.as_dict()
        log(f"TensorRT {precision} engine vs fp32 PyTorch: {report.line()}")
        if precision == "int8":
            accuracy_gate(spec, options.int8).check(report, f"{spec.name} int8 TensorRT engine")
        info["strongly_typed"] = strongly_typed
        info["onnx"] = base.artifact
        return BuildResult(ENGINE_NAME, info)

    return build


def _as_tuple(out: Any) -> tuple:
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def tensorrt_graph(
    spec: GraphSpec,
    precision: str,
    device: str | torch.device,
    options: BackendOptions | None = None,
    cache: EngineCache | None = None,
) -> Cached[TensorRTGraph]:
    """The cached TensorRT engine of `spec`, built on first use."""
    device = torch.device(device)
    reason = tensorrt_unavailable_reason(device)
    if reason is not None:
        raise ConfigError(f"{spec.name}: backend 'tensorrt' is not usable here: {reason}")
    options = options or BackendOptions()
    cache = cache or engine_cache(options)
    strongly_typed = use_strongly_typed(options)
    if strongly_typed and precision not in TYPED_PRECISIONS:
        raise ConfigError(
            f"{spec.name}: a strongly typed TensorRT network is built at {', '.join(TYPED_PRECISIONS)} "
            f"(the typed ONNX exports), not {precision}"
        )
    key_options: dict[str, Any] = {
        "opset": options.onnx_opset,
        "workspace_gb": options.workspace_gb,
        "builder_optimization_level": options.builder_optimization_level,
        "strongly_typed": strongly_typed,
        "builder": builder_code_hash(*_ONNX_BUILDERS, "iris_pipeline.backends.tensorrt"),
    }
    if precision == "int8":
        key_options["int8"] = {**_int8_key_options(options, spec), "modelopt": backend_version("modelopt")}
    key = engine_key(spec, "tensorrt", precision, device, key_options)

    def load(entry: CacheEntry) -> TensorRTGraph:
        return TensorRTGraph(entry.artifact.read_bytes(), device)

    return cache.get_or_build(key, _build_tensorrt(spec, precision, options, device, strongly_typed), load)


# -- AOTInductor ------------------------------------------------------------------------------------


def aoti_graph(
    spec: GraphSpec,
    precision: str,
    device: str | torch.device,
    options: BackendOptions | None = None,
    cache: EngineCache | None = None,
) -> Cached[Any]:
    """The cached AOTInductor package of `spec` for `device`, compiled on first use."""
    device = torch.device(device)
    reason = aoti_unavailable_reason(device)
    if reason is not None:
        raise ConfigError(f"{spec.name}: ahead-of-time compile is not usable here: {reason}")
    options = options or BackendOptions()
    cache = cache or engine_cache(options)
    dtype = compute_dtype(precision, device)
    key = engine_key(
        spec,
        "aoti",
        precision,
        device,
        {"dtype": str(dtype), "builder": builder_code_hash("iris_pipeline.backends.aoti")},
    )
    return cache.get_or_build(
        key,
        lambda workdir, log: build_aoti(spec, workdir, log, dtype=dtype, device=device),
        lambda entry: load_aoti(entry.artifact, device),
    )


# -- the one entry point ----------------------------------------------------------------------------


def prepare_graph(
    spec: GraphSpec,
    config: StageConfig,
    *,
    stage: str,
    device: str | torch.device,
    cache: EngineCache | None = None,
) -> PreparedGraph:
    """The compute graph of `spec` on `device` for the backend and precision in `config`."""
    device = torch.device(device)
    options = config.options.backend
    precision, backend = config.precision, config.backend
    if backend == "eager":
        graph = EagerGraph(spec.module, precision, device, autocast=options.autocast)
        return PreparedGraph(graph, backend, precision, device, details={"dtype": str(graph.dtype)},
                             input_dtype=graph.input_dtype, stage=stage)
    if backend == "compile":
        if options.aot:
            cached = aoti_graph(spec, precision, device, options, cache)

            def run(*inputs: torch.Tensor):
                out = cached.value(*inputs)
                return out[0] if isinstance(out, (list, tuple)) and len(out) == 1 else out

            return PreparedGraph(run, backend, precision, device, cached, {"aot": True},
                                 input_dtype=compute_dtype(precision, device), stage=stage)
        graph = CompiledGraph(
            spec.module,
            precision,
            device,
            autocast=options.autocast,
            mode=options.compile_mode,
            dynamic=options.compile_dynamic,
            fullgraph=options.compile_fullgraph,
        )
        return PreparedGraph(graph, backend, precision, device, details={"mode": options.compile_mode},
                             input_dtype=graph.input_dtype, stage=stage)
    if backend == "tensorrt":
        cached = tensorrt_graph(spec, precision, device, options, cache)
        return PreparedGraph(
            cached.value,
            backend,
            precision,
            device,
            cached,
            {"accuracy": cached.entry.info.get("accuracy_engine")},
            fixed_profile=spec,
            stage=stage,
        )
    raise ConfigError(f"{stage}.backend: unknown backend {backend!r}; allowed: eager, compile, tensorrt")


__all__ = [
    "ENGINE_DIR_ENV",
    "PreparedGraph",
    "aoti_graph",
    "default_engine_dir",
    "engine_cache",
    "engine_key",
    "engine_stats",
    "onnx_artifact",
    "prepare_graph",
    "tensorrt_graph",
]
