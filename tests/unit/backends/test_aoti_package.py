"""AOTInductor packages go through the engine cache like TensorRT engines (real artifacts on a CPU)."""

from __future__ import annotations

import pytest
import torch

from iris_pipeline.backends import GraphSpec, ShapeProfile, TensorSpec, prepare_graph
from iris_pipeline.backends.aoti import aoti_unavailable_reason
from iris_pipeline.config import StageConfig


def _toy() -> GraphSpec:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    return GraphSpec(
        "toy.aoti",
        module,
        (TensorSpec("x", ("batch", 8)),),
        ("y",),
        ShapeProfile({"batch": (1, 4, 16)}),
        config={"toy": "aoti"},
    )


def test_reason_names_what_is_missing():
    reason = aoti_unavailable_reason("cpu")
    assert reason is None or "compiler" in reason or "torch" in reason


@pytest.mark.slow
def test_aoti_package_is_cached_and_computes_like_eager(cached_aoti, engine_cache):
    spec = _toy()
    first = cached_aoti(spec)  # built by this or an earlier session
    assert first.entry.artifact.suffix in (".pt2", ".so") and first.entry.manifest["outcome"] == "success"
    for batch in (1, 5, 16):  # inside the dynamic range, not only the traced size
        x = torch.randn(batch, 8)
        out = first.value(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        torch.testing.assert_close(out, spec.module(x).detach(), atol=1e-5, rtol=1e-5)
    from iris_pipeline.backends import aoti_graph

    again = aoti_graph(spec, "fp32", "cpu", cache=engine_cache)
    assert again.hit and again.entry.directory == first.entry.directory

    config = StageConfig(
        precision="fp32",
        backend="compile",
        options={"backend": {"aot": True, "engine_dir": str(engine_cache.root)}},
    )
    graph = prepare_graph(spec, config, stage="toy", device="cpu")
    assert graph.describe()["cache_hit"] and graph.describe()["aot"]
    x = torch.randn(3, 8)
    torch.testing.assert_close(graph(x), spec.module(x).detach(), atol=1e-5, rtol=1e-5)
