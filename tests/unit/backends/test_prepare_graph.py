"""`prepare_graph`: one entry point for every backend; settings validated with one-line errors."""

from __future__ import annotations

import pytest
import torch

from iris_pipeline.backends import (
    GraphSpec,
    PreparedGraph,
    ShapeProfile,
    TensorSpec,
    compile_step,
    prepare_graph,
)
from iris_pipeline.backends.tensorrt import tensorrt_unavailable_reason
from iris_pipeline.config import StageConfig, parse_pipeline_config
from iris_pipeline.errors import ConfigError, InputError


def _spec() -> GraphSpec:
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv1d(4, 8, 3, padding=1), torch.nn.GELU(), torch.nn.Conv1d(8, 2, 1)
    ).eval()
    return GraphSpec(
        "toy",
        module,
        (TensorSpec("x", ("batch", 4, "time")),),
        ("y",),
        ShapeProfile({"batch": (1, 2, 4), "time": (8, 16, 32)}),
    )


def test_eager_fp32_is_the_module():
    spec = _spec()
    x = torch.randn(2, 4, 16)
    expected = spec.module(x).detach()
    graph = prepare_graph(spec, StageConfig(precision="fp32", backend="eager"), stage="toy", device="cpu")
    assert graph.describe()["backend"] == "eager"
    assert graph.cached is None
    torch.testing.assert_close(graph(x), expected)


@pytest.mark.parametrize("autocast", [False, True])
def test_eager_bf16_by_cast_or_autocast(autocast):
    spec = _spec()
    x = torch.randn(2, 4, 16)
    expected = spec.module(x).detach()
    config = StageConfig(precision="bf16", backend="eager", options={"backend": {"autocast": autocast}})
    graph = prepare_graph(spec, config, stage="toy", device="cpu")
    out = graph(x)
    assert out.dtype == torch.bfloat16
    weights = next(spec.module.parameters()).dtype
    assert weights == (torch.float32 if autocast else torch.bfloat16)
    torch.testing.assert_close(out.float(), expected, atol=5e-2, rtol=5e-2)


def test_tensorrt_without_tensorrt_or_gpu_is_a_clear_config_error():
    reason = tensorrt_unavailable_reason("cuda")
    if reason is None:
        pytest.skip("TensorRT and a GPU are present: the GPU tests cover the engine")
    with pytest.raises(ConfigError, match="backend 'tensorrt' is not usable here") as info:
        prepare_graph(_spec(), StageConfig(precision="fp16", backend="tensorrt"), stage="toy", device="cpu")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"backend": {"workspace": 4}}, "wav2lip.options.backend.workspace: unknown option"),
        ({"backend": {"int8": {"min_cosine": 2}}}, "wav2lip.options.backend.int8.min_cosine"),
        ({"backend": {"compile_mode": "fastest"}}, "wav2lip.options.backend.compile_mode"),
        ({"backend": "yes"}, "wav2lip.options.backend: Input should be a valid dictionary"),
    ],
)
def test_backend_options_errors_name_the_key(options, fragment):
    with pytest.raises(ConfigError) as info:
        parse_pipeline_config({"wav2lip": {"options": options}})
    assert fragment in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_backend_options_defaults_and_values():
    opts = StageConfig(options={"backend": {"int8": {"calibration_samples": 64}}}).options.backend
    assert opts.int8.calibration_samples == 64
    assert opts.workspace_gb == 4.0
    assert not opts.aot


@pytest.mark.slow
def test_compile_backend_and_static_step_on_cpu():
    spec = _spec()
    x = torch.randn(2, 4, 16)
    expected = spec.module(x).detach()
    graph = prepare_graph(spec, StageConfig(precision="fp32", backend="compile"), stage="toy", device="cpu")
    torch.testing.assert_close(graph(x), expected, atol=1e-5, rtol=1e-5)

    cache = torch.zeros(1, 8)

    def step(token: torch.Tensor) -> torch.Tensor:  # a static-shape step over a preallocated buffer
        return torch.tanh(cache + token)

    compiled = compile_step(step)  # mode "reduce-overhead": CUDA graphs on a GPU, plain inductor here
    token = torch.randn(1, 8)
    torch.testing.assert_close(compiled(token), step(token))


@pytest.mark.parametrize(("autocast", "dtype"), [(False, torch.bfloat16), (True, torch.float32)])
def test_prepared_graph_casts_fp32_inputs_to_what_its_runner_computes_in(autocast, dtype):
    config = StageConfig(precision="bf16", backend="eager", options={"backend": {"autocast": autocast}})
    graph = prepare_graph(_spec(), config, stage="toy", device="cpu")
    assert graph.input_dtype == dtype
    seen = []
    graph.run = lambda *inputs: seen.append(inputs) or inputs[0]
    graph(torch.randn(2, 4, 16), torch.arange(3))
    floating, integer = seen[0]
    assert floating.dtype == dtype, "floating inputs take the runner's dtype"
    assert integer.dtype == torch.int64, "integer inputs keep theirs"


def test_a_fixed_profile_refuses_shapes_outside_it_before_the_runner_runs():
    calls = []
    graph = PreparedGraph(lambda x: calls.append(x) or x, "tensorrt", "fp16", torch.device("cpu"),
                          fixed_profile=_spec(), stage="toy")
    graph(torch.zeros(4, 4, 32))  # the largest shape of the profile
    with pytest.raises(InputError, match=r"toy: x has time=33, outside the 8..32 the tensorrt engine toy"):
        graph(torch.zeros(1, 4, 33))
    assert len(calls) == 1, "the runner never saw the refused input"
