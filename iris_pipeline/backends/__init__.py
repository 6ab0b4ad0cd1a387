"""Backends: how a stage gets its compute graph (eager, torch.compile, TensorRT), and the engine cache.

A stage describes its graph once as a `GraphSpec` (module, named inputs, dynamic dims and their
ranges) and asks `prepare_graph(spec, stage_config, stage=..., device=...)` for a callable. Built
artifacts (TensorRT engines, ONNX / Q/DQ graphs, AOTInductor packages) live in an `EngineCache`.
"""

from iris_pipeline.backends.accuracy import AccuracyGate, AccuracyReport, compare
from iris_pipeline.backends.cache import (
    BuildLog,
    BuildResult,
    Cached,
    CacheEntry,
    CacheStats,
    CorruptEntryError,
    EngineBuildError,
    EngineCache,
    EngineKey,
    EngineRefusedError,
)
from iris_pipeline.backends.eager import CompiledGraph, EagerGraph, compile_callable, compile_step
from iris_pipeline.backends.fingerprint import DeviceFingerprint, device_fingerprint, module_hash
from iris_pipeline.backends.graph import GraphSpec, ShapeProfile, TensorSpec
from iris_pipeline.backends.prepare import (
    PreparedGraph,
    aoti_graph,
    default_engine_dir,
    engine_cache,
    engine_key,
    engine_stats,
    onnx_artifact,
    prepare_graph,
    tensorrt_graph,
)
from iris_pipeline.stage_options import BackendOptions, Int8Options

__all__ = [
    "AccuracyGate",
    "AccuracyReport",
    "BackendOptions",
    "BuildLog",
    "BuildResult",
    "CacheEntry",
    "CacheStats",
    "Cached",
    "CompiledGraph",
    "CorruptEntryError",
    "DeviceFingerprint",
    "EagerGraph",
    "EngineBuildError",
    "EngineCache",
    "EngineKey",
    "EngineRefusedError",
    "GraphSpec",
    "Int8Options",
    "PreparedGraph",
    "ShapeProfile",
    "TensorSpec",
    "aoti_graph",
    "compare",
    "compile_callable",
    "compile_step",
    "default_engine_dir",
    "device_fingerprint",
    "engine_cache",
    "engine_key",
    "engine_stats",
    "module_hash",
    "onnx_artifact",
    "prepare_graph",
    "tensorrt_graph",
]
