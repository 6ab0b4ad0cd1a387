"""The engine key changes with each input that invalidates an engine, and with nothing else."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from iris_pipeline.backends import EngineKey, GraphSpec, ShapeProfile, TensorSpec, engine_key, module_hash
from iris_pipeline.backends.fingerprint import DeviceFingerprint


def _module(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv1d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv1d(8, 2, 1))


def _spec(module: torch.nn.Module | None = None, ranges=None, config=None, name="toy") -> GraphSpec:
    return GraphSpec(
        name=name,
        module=module or _module(),
        inputs=(TensorSpec("x", ("batch", 4, "time")),),
        outputs=("y",),
        profile=ShapeProfile(ranges or {"batch": (1, 2, 4), "time": (8, 16, 32)}),
        config=config if config is not None else {"size": "tiny"},
    )


H100 = DeviceFingerprint("cuda", "NVIDIA H100 80GB HBM3", "9.0", "12.4")

BASE = EngineKey(
    graph="toy",
    model_hash="a" * 64,
    profile={"batch": [1, 2, 4]},
    precision="fp16",
    backend="tensorrt",
    backend_version="tensorrt 10.3.0",
    device=H100,
    options={"opset": 17, "workspace_gb": 4.0},
)

# one change per invalidating input
VARIANTS = {
    "graph": dict(graph="other"),
    "model weights/config": dict(model_hash="b" * 64),
    "shape profile": dict(profile={"batch": [1, 2, 8]}),
    "precision": dict(precision="int8"),
    "backend": dict(backend="onnxruntime"),
    "backend version": dict(backend_version="tensorrt 10.4.0"),
    "GPU model": dict(device=dataclasses.replace(H100, gpu_name="NVIDIA H200")),
    "compute capability": dict(device=dataclasses.replace(H100, compute_capability="8.9")),
    "CUDA version": dict(device=dataclasses.replace(H100, cuda_version="12.6")),
    "build options": dict(options={"opset": 17, "workspace_gb": 8.0}),
}


@pytest.mark.parametrize("what", list(VARIANTS))
def test_key_changes_with_each_invalidating_input(what):
    changed = dataclasses.replace(BASE, **VARIANTS[what])
    assert changed.digest != BASE.digest, what


def test_all_variant_keys_are_distinct():
    digests = {dataclasses.replace(BASE, **v).digest for v in VARIANTS.values()} | {BASE.digest}
    assert len(digests) == len(VARIANTS) + 1


def test_key_ignores_what_does_not_invalidate():
    # dict order, a fresh but identical EngineKey object, and an equal-valued tuple vs list
    reordered = dataclasses.replace(BASE, options={"workspace_gb": 4.0, "opset": 17})
    assert reordered.digest == BASE.digest
    assert dataclasses.replace(BASE).digest == BASE.digest
    assert dataclasses.replace(BASE, profile={"batch": (1, 2, 4)}).digest == BASE.digest


def test_model_hash_follows_weights_and_config_only():
    a, b = _module(0), _module(0)
    assert module_hash(a, {"size": "tiny"}) == module_hash(b, {"size": "tiny"})  # same weights, new object
    assert module_hash(a, {"size": "tiny"}) != module_hash(_module(1), {"size": "tiny"})  # other weights
    assert module_hash(a, {"size": "tiny"}) != module_hash(a, {"size": "full"})  # other config
    with torch.no_grad():
        b[0].weight[0, 0, 0] += 1e-6  # one changed value
    assert module_hash(a) != module_hash(b)
    assert module_hash(a) != module_hash(_module(0).half())  # dtype


def test_engine_key_of_a_spec(tmp_path):
    base = engine_key(_spec(), "onnxruntime", "fp32", "cpu", {"opset": 17})
    assert base.digest == engine_key(_spec(), "onnxruntime", "fp32", "cpu", {"opset": 17}).digest
    others = [
        engine_key(
            _spec(ranges={"batch": (1, 2, 8), "time": (8, 16, 32)}),
            "onnxruntime",
            "fp32",
            "cpu",
            {"opset": 17},
        ),
        engine_key(_spec(module=_module(3)), "onnxruntime", "fp32", "cpu", {"opset": 17}),
        engine_key(_spec(config={"size": "full"}), "onnxruntime", "fp32", "cpu", {"opset": 17}),
        engine_key(_spec(), "onnxruntime", "int8", "cpu", {"opset": 17}),
        engine_key(_spec(), "onnxruntime", "fp32", "cpu", {"opset": 18}),
        engine_key(_spec(), "aoti", "fp32", "cpu", {"opset": 17}),
    ]
    assert len({k.digest for k in others} | {base.digest}) == len(others) + 1
    assert base.device.kind == "cpu" and base.backend_version.startswith("onnxruntime ")
