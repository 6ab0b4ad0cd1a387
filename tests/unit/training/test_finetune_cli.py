from __future__ import annotations

import csv
import math

import pytest
import torch
from typer.testing import CliRunner

from iris_pipeline import models
from iris_pipeline.cli import app
from iris_pipeline.errors import ConfigError
from iris_pipeline.training.benchmark import BenchCase, run_benchmark, summarize, synthetic_batch
from iris_pipeline.training.run import FinetuneOptions, run_finetune
from iris_pipeline.training.step import TrainSettings


def options(data_dir, tmp_path, out, steps, **kw):
    return FinetuneOptions(data=data_dir, steps=steps, out=out, size="tiny", batch_size=3,
                           cache_dir=tmp_path / "cache", settings=TrainSettings(lr=2e-3, seed=1), **kw)


def test_finetune_command_reports_bad_pairs_trains_and_saves_a_loadable_checkpoint(data_dir, tmp_path, bad_pairs):
    out = tmp_path / "ft.pt"
    result = CliRunner().invoke(app, ["finetune", "--data", str(data_dir), "--steps", "4", "--size", "tiny",
                                      "--batch-size", "3", "--lr", "2e-3", "--precision", "bf16",
                                      "--no-checkpointing", "--out", str(out), "--max-seconds", "3",
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    for name in bad_pairs:
        assert f"skipped {name}: " in result.output
    assert "6 utterance(s)" in result.output
    assert "step 4, loss" in result.output
    models.load("vallex", out, "tiny")


def test_finetune_command_refuses_bad_options_with_one_line(data_dir, tmp_path):
    result = CliRunner().invoke(app, ["finetune", "--data", str(data_dir), "--steps", "1", "--size", "tiny",
                                      "--precision", "int4", "--out", str(tmp_path / "x.pt")])
    assert isinstance(result.exception, ConfigError)
    assert "--precision must be one of" in str(result.exception)
    with pytest.raises(ConfigError, match="--resume needs --init"):
        run_finetune(options(data_dir, tmp_path, tmp_path / "y.pt", 1, resume=True))
    assert not (tmp_path / "x.pt").exists()
    assert not (tmp_path / "y.pt").exists()


def test_resumed_run_equals_the_uninterrupted_run(data_dir, tmp_path):
    whole = run_finetune(options(data_dir, tmp_path, tmp_path / "whole.pt", 5))
    part = run_finetune(options(data_dir, tmp_path, tmp_path / "part.pt", 3))
    rest = run_finetune(options(data_dir, tmp_path, tmp_path / "rest.pt", 2, init=tmp_path / "part.pt", resume=True))
    assert [r.step for r in rest.results] == [4, 5]
    assert [r.loss for r in part.results] == pytest.approx([r.loss for r in whole.results[:3]], rel=1e-5)
    assert [r.loss for r in rest.results] == pytest.approx([r.loss for r in whole.results[3:]], rel=1e-5)
    a = torch.load(tmp_path / "whole.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "rest.pt", weights_only=True)["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_benchmark_rows_on_the_cpu_show_what_checkpointing_saves(tmp_path):
    cases = [BenchCase(False, "fp32"), BenchCase(True, "fp32")]
    rows = run_benchmark("tiny", "cpu", batch_size=2, seconds=2.0, cases=cases, warmup=1, steps=2)
    assert [(r["checkpointing"], r["precision"]) for r in rows] == [(False, "fp32"), (True, "fp32")]
    for row in rows:
        assert row["step_ms_median"] > 0
        assert row["finite_losses"]
        assert math.isnan(row["torch_peak_allocated_gb"])  # no allocator peak on the CPU: said, not faked
    plain, checkpointed = rows
    assert checkpointed["saved_activations_gb"] < plain["saved_activations_gb"]
    assert checkpointed["model_state_gb"] == plain["model_state_gb"]
    (summary,) = summarize(rows)
    assert summary["memory_saved_pct"] > 0


def test_finetune_bench_command_writes_a_csv_with_context(tmp_path):
    out = tmp_path / "bench.csv"
    result = CliRunner().invoke(app, ["finetune-bench", "--size", "tiny", "--device", "cpu", "--batch-size", "1",
                                      "--seconds", "1", "--warmup", "0", "--steps", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["checkpointing"], r["precision"]) for r in rows] == [
        ("false", "fp32"), ("true", "fp32"), ("false", "bf16"), ("true", "bf16")]
    for key in ("git_commit", "torch_version", "cpu_model", "timestamp_utc", "step_ms_median", "saved_activations_gb"):
        assert rows[0][key] not in ("", None), key
    assert "checkpointing saves" in result.output


def test_synthetic_benchmark_batch_has_the_requested_shape():
    batch = synthetic_batch(3, 10.0)
    assert batch.codes.shape == (3, 750, 8)
    assert batch.text.shape == (3, 150)
    with pytest.raises(ConfigError):
        synthetic_batch(0, 1.0)
