"""Shipped profiles and their resolution: per-stage fallback where TensorRT cannot run, named in the
results' context and notes; precedence profile < config file < flags; the speed-up rows."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from iris_pipeline import benchmark_runner, profiles
from iris_pipeline.benchmark.session import build_config
from iris_pipeline.errors import ConfigError

NO_TENSORRT = "the `tensorrt` Python module is not installed"


def _config(profile, data=None, **flags):
    return build_config({"data": profiles.profile_data(profile, data), "source": "test"}, device="cpu", **flags)


def test_shipped_profiles_are_optimised_and_eager():
    assert {"optimised", "eager"} <= set(profiles.shipped_profiles())
    optimised = profiles.load_profile("optimised")
    stages = optimised.stages
    assert (stages["vallex"].backend, stages["vallex"].precision) == ("compile", "fp16")
    for name in ("fastpitch", "wav2lip"):
        assert (stages[name].backend, stages[name].precision) == ("tensorrt", "int8")
        assert (stages[name].fallback.backend, stages[name].fallback.precision) == ("compile", "fp16")
    eager = profiles.load_profile("eager")
    assert {s.backend for s in eager.stages.values()} == {"eager"}
    assert profiles.default_profile_name(on_gpu=True) == "optimised"
    assert profiles.default_profile_name(on_gpu=False) == "eager"


def test_tensorrt_stages_fall_back_per_stage_and_say_why():
    optimised = profiles.load_profile("optimised")
    resolved = profiles.resolve(optimised, _config(optimised), unavailable=lambda device: NO_TENSORRT)
    cfg = resolved.config
    assert (cfg.fastpitch.backend, cfg.fastpitch.precision) == ("compile", "fp16")
    assert (cfg.wav2lip.backend, cfg.wav2lip.precision) == ("compile", "fp16")
    assert (cfg.vallex.backend, cfg.rvc.backend) == ("compile", "eager")  # untouched
    assert set(resolved.fallbacks) == {"fastpitch", "wav2lip"}
    context = resolved.context()
    assert context["profile"] == "optimised"
    assert "wav2lip: tensorrt int8 -> compile fp16" in context["profile_fallbacks"]
    assert NO_TENSORRT in context["profile_fallbacks"]
    assert len(resolved.notes()) == 2
    assert all("fell back" in n for n in resolved.notes())


def test_where_tensorrt_runs_nothing_falls_back():
    optimised = profiles.load_profile("optimised")
    resolved = profiles.resolve(optimised, _config(optimised), unavailable=lambda device: None)
    assert resolved.config.wav2lip.backend == "tensorrt"
    assert resolved.config.wav2lip.precision == "int8"
    assert resolved.fallbacks == {}
    assert resolved.context()["profile_fallbacks"] == "none"


def test_config_file_overrides_the_profile_and_flags_override_both():
    optimised = profiles.load_profile("optimised")
    file_data = {"wav2lip": {"precision": "fp16", "options": {"backend": {"workspace_gb": 2.0}}}}
    cfg = _config(optimised, file_data)
    assert (cfg.wav2lip.backend, cfg.wav2lip.precision) == ("tensorrt", "fp16")
    assert cfg.wav2lip.options.model_dump(exclude_unset=True) == {"backend": {"workspace_gb": 2.0}}
    flagged = _config(optimised, file_data, stage_backend={"wav2lip": "eager"})
    assert flagged.wav2lip.backend == "eager"
    assert flagged.fastpitch.backend == "tensorrt"


@pytest.mark.parametrize("text,expected", [
    ("stages: {lipsync: {backend: eager, precision: fp16}}", "unknown stage 'lipsync'"),
    ("stages: {rvc: {backend: onnx, precision: fp16}}", "stages.rvc.backend"),
    ("- a list", "a profile is a mapping"),
])
def test_bad_profiles_are_refused_with_one_line(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        profiles.load_profile(path)
    assert expected in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_bench_refuses_an_unknown_profile_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["benchmark_runner", "--device", "cpu", "--profile", "turbo"])
    with pytest.raises(SystemExit) as info:
        benchmark_runner.main()
    err = capsys.readouterr().err.strip()
    assert info.value.code != 0
    assert "--profile turbo: no such profile" in err
    assert len(err.splitlines()) == 1


def test_speedup_rows_compare_medians_of_the_same_run(tmp_path):
    def clip(clip_s, latencies):
        return SimpleNamespace(clip_s=clip_s, runs=[SimpleNamespace(latency_ms=v) for v in latencies])

    optimised = profiles.load_profile("optimised")
    resolved = profiles.resolve(optimised, _config(optimised), unavailable=lambda device: NO_TENSORRT)
    rows = profiles.speedup_rows(resolved, [clip(5.0, [100.0, 110.0, 90.0])], [clip(5.0, [140.0, 150.0, 130.0])])
    assert rows[0]["latency_ms_median"] == 100.0
    assert rows[0]["eager_latency_ms_median"] == 140.0
    assert rows[0]["speedup_vs_eager"] == 1.4
    assert "compile fp16" in rows[0]["profile_fallbacks"]
    path = profiles.write_speedup(rows, tmp_path)
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == list(profiles.SPEEDUP_COLUMNS)
    assert lines[1].startswith("5.0,optimised,100.0,140.0,1.4,")
