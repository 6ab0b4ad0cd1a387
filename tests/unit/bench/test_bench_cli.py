"""`iris bench` / `python -m iris_pipeline.benchmark_runner`: bad options end in one clear line."""

from __future__ import annotations

import sys

import pytest

from iris_pipeline import benchmark_runner
from iris_pipeline.benchmark.session import build_config


def _run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["benchmark_runner", *args])
    with pytest.raises(SystemExit) as exit_info:
        benchmark_runner.main()
    return exit_info.value.code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("args,expected", [
    (["--clip-lengths", "5,x"], "--clip-lengths '5,x': expected numbers"),
    (["--clip-lengths", "5,-1"], "every clip length must be > 0"),
    (["--statistic", "latency_ms=p42"], "statistic 'p42' for latency_ms"),
    (["--statistic", "latency_ms"], "--statistic 'latency_ms': expected KEY=VALUE"),
    (["--stage-precision", "foo=fp16"], "--stage-precision foo=...: unknown stage"),
    (["--precision", "fp8"], "precision: not allowed"),
    (["--schedulers", "continuous,"], "schedulers: an empty scheduler name"),
    (["--concurrencies", "1,x"], "--concurrencies '1,x': expected whole numbers"),
    (["--concurrencies", "1,0"], "--concurrencies '1,0': every concurrency must be > 0"),
    (["--schedulers", "continuous,static,fifo", "--clip-lengths", "1"], "vallex.options.scheduler"),
    (["--ab-base-set", "vallex.options.scheduler"], "--ab-base-set 'vallex.options.scheduler': expected KEY=VALUE"),
])
def test_bad_options_give_one_line_and_a_non_zero_exit(monkeypatch, capsys, args, expected):
    code, err = _run(monkeypatch, capsys, "--device", "cpu", *args)
    assert code != 0
    assert expected in err, err
    assert len(err.splitlines()) == 1, err


def test_config_flags_override_the_file_and_size_defaults_to_tiny_without_a_gpu(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("vallex: {precision: bf16}\nchunking: {chunk_seconds: 5}\n")
    cfg = build_config(path, device="cpu", precision="fp32", stage_backend={"wav2lip": "compile"})
    assert cfg.size == "tiny"
    assert cfg.chunking.chunk_seconds == 5
    assert cfg.vallex.precision == "fp32"
    assert cfg.wav2lip.backend == "compile"
    assert cfg.rvc.backend == "eager"
    assert build_config(path, device="cpu", stage_precision={"vallex": "fp16"}).vallex.precision == "fp16"


def test_gate_exit_codes_fail_before_invalid_before_pass():
    from iris_pipeline.benchmark import verdicts
    from iris_pipeline.commands.bench import EXIT_FAIL, EXIT_INVALID, gate_outcome

    gate = verdicts.Gate("latency_ms", 5.0, 100.0, "median", "<=")
    passed = verdicts.judge_time(gate, [50.0] * 10)
    failed = verdicts.judge_time(gate, [150.0] * 10)
    invalid = verdicts.judge_time(gate, [50.0] * 3)
    assert gate_outcome([passed], "GPU") == (0, [])
    code, lines = gate_outcome([passed, invalid], "GPU")
    assert code == EXIT_INVALID
    assert len(lines) == 1
    assert lines[0].startswith("PERF GATE INVALID: latency_ms")
    code, lines = gate_outcome([invalid, failed], "GPU")
    assert code == EXIT_FAIL
    assert lines == [f"PERF GATE {failed.message('GPU')}"]


def test_bench_section_of_the_config_file_holds_settings(tmp_path):
    from iris_pipeline.benchmark.settings import parse_settings
    from iris_pipeline.commands.bench import _split_config
    from iris_pipeline.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("size: tiny\nbench: {runs: 7, clip_lengths: [5, 120], statistics: {latency_ms: p90}}\n")
    settings, pipeline = _split_config(path)
    assert pipeline["data"] == {"size": "tiny"}
    parsed = parse_settings(settings)
    assert parsed.runs == 7
    assert parsed.clip_lengths == [5.0, 120.0]
    assert parsed.statistics == {"latency_ms": "p90"}
    with pytest.raises(ConfigError, match="bench settings: runss: unknown key"):
        parse_settings({"runss": 3})
