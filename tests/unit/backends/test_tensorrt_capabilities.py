"""The TensorRT builder branches on what the installed module has (8.x, 10.x, 11.x shapes of the API),
checked against stand-in modules that record the calls. The real library is exercised by the
GPU tests (`test_tensorrt_engine.py`)."""

from __future__ import annotations

import types

import pytest
import torch

from iris_pipeline.backends import BackendOptions, GraphSpec, ShapeProfile, TensorSpec
from iris_pipeline.backends import tensorrt as trt_backend
from iris_pipeline.errors import ConfigError


def fake_tensorrt(
    *, explicit_batch: bool, strongly_typed: bool, precision_flags: bool, pools: bool, serialized: bool
) -> types.SimpleNamespace:
    calls: dict = {"flags": [], "shapes": {}}

    class ILogger:
        def __init__(self):
            pass

    network_flags = types.SimpleNamespace(
        **({"EXPLICIT_BATCH": 0} if explicit_batch else {}),
        **({"STRONGLY_TYPED": 1} if strongly_typed else {}),
    )
    builder_flags = types.SimpleNamespace(
        **({"FP16": "FP16", "INT8": "INT8", "BF16": "BF16"} if precision_flags else {})
    )

    class Config:
        def add_optimization_profile(self, profile):
            calls["profile_added"] = True

        def set_flag(self, flag):
            calls["flags"].append(flag)

    if pools:
        Config.set_memory_pool_limit = lambda self, pool, size: calls.__setitem__("workspace", (pool, size))

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            calls["shapes"][name] = (tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["network_flags"] = flags
            return "network"

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

    if serialized:
        Builder.build_serialized_network = lambda self, network, config: b"serialized-plan"
    else:
        Builder.build_engine = lambda self, network, config: types.SimpleNamespace(
            serialize=lambda: b"old-plan"
        )

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls["parsed"] = path
            return True

    return types.SimpleNamespace(
        __version__="fake",
        ILogger=ILogger,
        NetworkDefinitionCreationFlag=network_flags,
        BuilderFlag=builder_flags,
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="ws"),
        Builder=Builder,
        OnnxParser=OnnxParser,
        calls=calls,
    )


SPEC = GraphSpec(
    "toy",
    torch.nn.Identity(),
    (TensorSpec("x", ("batch", 3)), TensorSpec("k", (2, 2))),
    ("y",),
    ShapeProfile({"batch": (1, 8, 32)}),
)

TRT8 = dict(explicit_batch=True, strongly_typed=False, precision_flags=True, pools=False, serialized=False)
TRT10 = dict(explicit_batch=True, strongly_typed=True, precision_flags=True, pools=True, serialized=True)
TRT11 = dict(explicit_batch=False, strongly_typed=True, precision_flags=False, pools=True, serialized=True)


def _build(monkeypatch, api, precision, options=None, tmp_path=None):
    trt = fake_tensorrt(**api)
    monkeypatch.setattr(trt_backend, "_trt", lambda: trt)
    options = options or BackendOptions()
    typed = trt_backend.use_strongly_typed(options, trt)
    blob = trt_backend.build_engine(tmp_path / "m.onnx", SPEC, precision, options, lambda line: None, typed)
    return trt, typed, blob


def test_tensorrt_8_uses_explicit_batch_precision_flags_and_old_build(monkeypatch, tmp_path):
    trt, typed, blob = _build(monkeypatch, TRT8, "int8", tmp_path=tmp_path)
    assert not typed
    assert blob == b"old-plan"
    assert trt.calls["network_flags"] == 1 << 0
    assert trt.calls["flags"] == ["FP16", "INT8"]
    assert trt.calls["shapes"] == {"x": ((1, 3), (8, 3), (32, 3))}  # only the dynamic input


def test_tensorrt_10_builds_strongly_typed_without_precision_flags(monkeypatch, tmp_path):
    trt, typed, blob = _build(monkeypatch, TRT10, "int8", tmp_path=tmp_path)
    assert typed
    assert blob == b"serialized-plan"
    assert trt.calls["network_flags"] == (1 << 0) | (1 << 1)
    assert trt.calls["flags"] == []
    assert trt.calls["workspace"] == ("ws", 4 << 30)


def test_tensorrt_10_weakly_typed_on_request(monkeypatch, tmp_path):
    trt, typed, _ = _build(monkeypatch, TRT10, "fp16", BackendOptions(strongly_typed=False), tmp_path)
    assert not typed
    assert trt.calls["flags"] == ["FP16"]
    assert trt.calls["network_flags"] == 1 << 0


def test_tensorrt_11_has_no_explicit_batch_nor_precision_flags(monkeypatch, tmp_path):
    trt, typed, blob = _build(monkeypatch, TRT11, "fp16", tmp_path=tmp_path)
    assert typed
    assert trt.calls["network_flags"] == 1 << 1
    assert trt.calls["flags"] == []


def test_strongly_typed_requested_where_missing_is_a_config_error(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="strongly_typed"):
        _build(monkeypatch, TRT8, "fp16", BackendOptions(strongly_typed=True), tmp_path)
