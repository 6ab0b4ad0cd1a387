"""pytest plugin: session fixtures that build engines on first use and reuse them.

Within a session, each engine is built or loaded once (memoised); across sessions, the engine cache
(`--engine-dir`, default `engines/` at the repository root) hands back what an earlier session
built, so only the first run on a machine pays for the builds. Registered in `tests/conftest.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch

from iris_pipeline.backends import BackendOptions, Cached, EngineCache, GraphSpec, aoti_graph, onnx_artifact
from iris_pipeline.backends.aoti import aoti_unavailable_reason
from iris_pipeline.backends.prepare import tensorrt_graph
from iris_pipeline.backends.tensorrt import tensorrt_unavailable_reason


@pytest.fixture(scope="session")
def engine_cache(engine_dir) -> EngineCache:
    """The session's engine cache (the root conftest's `engine_dir`)."""
    return EngineCache(engine_dir)


def _memo(build: Callable[..., Cached]) -> Callable[..., Cached]:
    seen: dict[str, Cached] = {}

    def get(spec: GraphSpec, precision: str = "fp32", options: BackendOptions | None = None, **kwargs: Any):
        options = options or BackendOptions()
        key = json.dumps(
            [spec.name, id(spec.module), precision, options.model_dump(mode="json"), sorted(kwargs.items())],
            default=str,
        )
        if key not in seen:
            seen[key] = build(spec, precision, options, **kwargs)
        return seen[key]

    return get


@pytest.fixture(scope="session")
def cached_onnx(engine_cache: EngineCache) -> Callable[..., Cached]:
    """`cached_onnx(spec, precision="fp32"|"int8", options=None)` -> Cached onnxruntime graph."""
    return _memo(
        lambda spec, precision, options: onnx_artifact(spec, precision, options, engine_cache, threads=1)
    )


@pytest.fixture(scope="session")
def cached_aoti(engine_cache: EngineCache) -> Callable[..., Cached]:
    """`cached_aoti(spec, precision="fp32", options=None, device="cpu")` -> Cached AOTInductor callable."""

    def build(spec, precision, options, device="cpu"):
        reason = aoti_unavailable_reason(device)
        if reason is not None:
            pytest.skip(reason)
        return aoti_graph(spec, precision, device, options, engine_cache)

    return _memo(build)


@pytest.fixture(scope="session")
def cached_tensorrt(engine_cache: EngineCache) -> Callable[..., Cached]:
    """`cached_tensorrt(spec, precision="fp16"|"int8", options=None)` -> Cached TensorRT engine on CUDA;
    skips, with the reason, where the `tensorrt` module or a GPU is missing."""

    def build(spec, precision, options):
        reason = tensorrt_unavailable_reason("cuda")
        if reason is not None:
            pytest.skip(reason)
        return tensorrt_graph(spec, precision, torch.device("cuda"), options, engine_cache)

    return _memo(build)


@pytest.fixture(scope="session")
def tiny_wav2lip_graph() -> GraphSpec:
    from iris_pipeline import models
    from iris_pipeline.backends.stage_graphs import wav2lip_graph

    return wav2lip_graph(models.build("wav2lip", "tiny", seed=0), "tiny")


@pytest.fixture(scope="session")
def tiny_fastpitch_graphs() -> tuple[GraphSpec, GraphSpec]:
    from iris_pipeline import models
    from iris_pipeline.backends.stage_graphs import fastpitch_graphs

    return fastpitch_graphs(models.build("fastpitch", "tiny", seed=0), "tiny")


@pytest.fixture(scope="session")
def tiny_fastpitch_aligner_graph(tiny_fastpitch_graphs) -> GraphSpec:
    from iris_pipeline.backends.stage_graphs import fastpitch_aligner_graph

    return fastpitch_aligner_graph(tiny_fastpitch_graphs[0].module.model, "tiny")
