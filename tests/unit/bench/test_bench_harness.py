"""The suite checks itself (CPU, tiny config): the real Pipeline and benchmark runner around stand-in
stages with controlled costs (bench_fakes.py). An injected delay must fail the latency gate for the
right reason, an unchanged run must pass targets set from a measured baseline, missing NVML must
give "unavailable" and an INVALID memory gate, and the files must keep their formats."""

from __future__ import annotations

import csv
import json
import math

import bench_fakes  # beside this file (pytest's rootdir-relative import puts this directory on sys.path)
import pytest

from iris_pipeline.benchmark import results, schema, verdicts
from iris_pipeline.benchmark.session import build_config, run_benchmark
from iris_pipeline.benchmark.settings import BenchSettings
from iris_pipeline.config import parse_targets

CLIP_S = 1.0


class _NoNvml:
    """A pynvml stand-in on a machine whose driver is missing."""

    class NVMLError(Exception):
        pass

    def nvmlInit(self):
        raise self.NVMLError("Driver Not Loaded")


def _settings(**kw):
    base = dict(clip_lengths=[CLIP_S], runs=10, warmup=1, encode_runs=1, throughput=False, n_boot=500)
    return BenchSettings(**{**base, **kw})


def _run(costs=None, nvml=None, targets=None, **kw):
    return run_benchmark(_settings(**kw), build_config(device="cpu", size="tiny"), targets=targets,
                         stage_factory=bench_fakes.stage_factory(costs), nvml=nvml or _NoNvml())


def _targets(latency_ms, first_chunk_ms=None, peak_mem_gb=None, throughput_cps=None):
    clip = {"latency_ms": latency_ms}
    for key, value in (("first_chunk_ms", first_chunk_ms), ("peak_mem_gb", peak_mem_gb),
                       ("throughput_cps", throughput_cps)):
        if value is not None:
            clip[key] = value
    return parse_targets({"default": {"clips": {CLIP_S: clip}}})


@pytest.fixture(scope="module")
def baseline():
    return _run()


def _verdict(found, figure):
    return next(v for v in found if v.figure == figure)


def test_unchanged_run_passes_targets_set_from_a_measured_baseline(baseline):
    """With the target 1.6x the baseline's median, an unchanged run never fails; on a loaded machine its
    interval may still straddle the target after the sequential runs (MARGINAL), which policy pass lets
    through."""
    median = results.clip_summaries(baseline, baseline.clips[0])["latency_ms"].p50
    targets = _targets(latency_ms=median * 1.6)  # headroom for a loaded shared machine
    again = _run(targets=targets, max_runs=20, marginal="pass")
    v = _verdict(results.evaluate(again, targets), "latency_ms")
    assert v.outcome == verdicts.PASS and v.verdict in (verdicts.PASS, verdicts.MARGINAL), v.message()
    assert v.statistic == "median" and v.n == len(again.clips[0].runs) >= 10 and v.measured <= v.target


def test_injected_delay_fails_the_latency_gate_for_the_right_reason(baseline):
    median = results.clip_summaries(baseline, baseline.clips[0])["latency_ms"].p50
    targets = _targets(latency_ms=median * 1.6)
    delay_ms = max(40.0, median * 2)  # one Wav2Lip call per chunk: +delay per clip
    slowed = _run(costs=bench_fakes.Costs(extra_ms={"wav2lip": delay_ms}))
    v = _verdict(results.evaluate(slowed, targets), "latency_ms")
    assert v.verdict == verdicts.FAIL
    assert v.figure == "latency_ms" and v.measured > v.target and v.ci_low > v.target
    assert "latency_ms (median)" in v.message("cpu") and f"clip {CLIP_S:g} s" in v.message("cpu")
    # the stage that was slowed is the one whose time grew
    stages = slowed.clips[0].stage_samples()
    base_stages = baseline.clips[0].stage_samples()
    assert min(stages["wav2lip"]) > max(base_stages["wav2lip"]) + 0.5 * delay_ms


def test_missing_nvml_gives_unavailable_memory_and_an_invalid_memory_gate(baseline, tmp_path):
    targets = _targets(latency_ms=1e6, peak_mem_gb=60)
    found = results.evaluate(baseline, targets)
    mem = _verdict(found, "peak_mem_gb")
    assert mem.verdict == verdicts.INVALID and mem.measured is None and "unavailable" in mem.reason
    assert "Driver Not Loaded" in mem.reason
    assert verdicts.overall(found) == verdicts.INVALID  # never a pass overall
    row = results.csv_rows(baseline)[0]
    assert row["mem_method"] == "unavailable" and math.isnan(row["peak_mem_gb"])
    assert math.isnan(row["gpu_busy_pct"]) and math.isnan(row["sm_active_pct"])  # n/a, never 0


def test_output_files_keep_their_formats(baseline, tmp_path):
    targets = _targets(latency_ms=1e6)
    found = results.evaluate(baseline, targets)
    paths = results.write_outputs(baseline, found, tmp_path, "test targets", history=tmp_path / "history.csv")
    with open(paths["csv"], newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        header = reader.fieldnames
    assert header[:3] == ["clip_s", "stage", "n_runs"]
    assert header == schema.csv_columns(list(baseline.context))
    assert {"git_commit", "gpu_name", "torch_version", "config_hash", "vallex_precision"} <= set(header)
    e2e = [r for r in rows if r["stage"] == "e2e"]
    stages = {r["stage"] for r in rows} - {"e2e"}
    assert len(e2e) == 1 and {"rvc", "vallex", "fastpitch", "wav2lip"} <= stages
    rvc = next(r for r in rows if r["stage"] == "rvc")  # voice cached: measured in warm-up only
    assert rvc["n_runs"] == "0" and rvc["stage_ms_p50"] == "n/a"
    assert float(e2e[0]["latency_ms_ci_low"]) <= float(e2e[0]["latency_ms_p50"]) <= float(e2e[0]["latency_ms_ci_high"])
    assert e2e[0]["stage_ms_p50"] == "n/a" and e2e[0]["peak_mem_gb"] == "n/a"
    assert float(e2e[0]["rtf"]) == pytest.approx(float(e2e[0]["latency_ms_p50"]) / 1e3 / CLIP_S)
    assert e2e[0]["encode_ms_p50"] != "n/a"
    stage_row = next(r for r in rows if r["stage"] == "wav2lip")
    assert stage_row["latency_ms_p50"] == "n/a" and float(stage_row["stage_ms_p50"]) > 0
    bench = json.loads(paths["json"].read_text())
    assert bench["format"] == schema.BENCH_JSON_FORMAT and len(bench["clips"][0]["runs"]) == 10
    run = bench["clips"][0]["runs"][0]
    assert {"latency_ms", "first_chunk_ms", "stage_ms", "encode_ms", "seed"} <= set(run)
    summary = json.loads(paths["summary"].read_text())
    assert summary["format"] == schema.SUMMARY_FORMAT and summary["verdict"] == "PASS"
    gate = summary["gates"][0]
    assert {"figure", "statistic", "confidence", "measured", "target", "verdict", "reason", "needed"} <= set(gate)
    assert summary["settings"]["runs"] == 10 and summary["seeds"]["run_seed"] == 0
    assert any("CPU run" in n for n in summary["notes"])
    with open(tmp_path / "history.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)


def test_throughput_phases_ramp_and_are_judged():
    result = _run(runs=5, throughput=True, phase_min_clips=3, max_concurrency=2)
    clip = result.clips[0]
    assert [p.concurrency for p in clip.phases][0] == 1 and clip.saturating_concurrency in (1, 2)
    assert all(p.valid and p.counted >= 2 and p.rate_cps > 0 for p in clip.phases)
    row = results.csv_rows(result)[0]
    assert row["throughput_cps_sat"] >= row["throughput_cps_c1"] > 0
    found = results.evaluate(result, _targets(latency_ms=1e6, throughput_cps=1e6))
    assert _verdict(found, "throughput_cps").verdict == verdicts.FAIL


def test_nvml_memory_figure_reaches_the_row_and_the_memory_gate():
    """With an NVML that reports 3 GiB for this process: peak_mem_gb 3.0 (per-process method), busy
    40 %, SM figures n/a (no GPM), and the memory gate passes or fails on that figure."""
    result = _run(runs=5, nvml=bench_fakes.FakeNvml(own_bytes=3 * 2**30))
    # (sample_devices is the pipeline's GPUs by default; this CPU pipeline has none, so name GPU 0)
    assert math.isnan(results.csv_rows(result)[0]["peak_mem_gb"])
    result = run_benchmark(_settings(runs=5), build_config(device="cpu", size="tiny"),
                           stage_factory=bench_fakes.stage_factory(), nvml=bench_fakes.FakeNvml(3 * 2**30),
                           sample_devices=[0])
    row = results.csv_rows(result)[0]
    assert row["peak_mem_gb"] == pytest.approx(3.0) and row["mem_method"] == "per_process"
    assert row["gpu_busy_pct"] == pytest.approx(40.0) and math.isnan(row["sm_active_pct"])
    ok = _verdict(results.evaluate(result, _targets(latency_ms=1e6, peak_mem_gb=60)), "peak_mem_gb")
    over = _verdict(results.evaluate(result, _targets(latency_ms=1e6, peak_mem_gb=2)), "peak_mem_gb")
    assert ok.verdict == verdicts.PASS and over.verdict == verdicts.FAIL and over.measured == pytest.approx(3.0)


def test_runs_continue_while_a_gate_is_undecided_up_to_the_cap():
    """The runner's sequential rule: planned runs, then half as many again while `more_runs` says a
    gate is undecided, never past max_runs."""
    from iris_pipeline.benchmark.runner import BenchTarget, measure_clip
    from iris_pipeline.benchmark.settings import resolve
    from iris_pipeline.metrics import NvmlSampler
    from iris_pipeline.pipeline import Job, Pipeline

    config = build_config(device="cpu", size="tiny")
    pipeline = Pipeline(config, stage_factory=bench_fakes.stage_factory())
    pipeline.prepare()
    from iris_pipeline.benchmark import inputs

    avatar = pipeline.prepare_avatar(inputs.default_avatar_path())
    reference = inputs.synthetic_reference(0)

    def make_job(clip_s, seed):
        return Job(text=inputs.script_for(clip_s, "en"), language="en", reference=reference,
                   transcript=inputs.reference_transcript("en"), avatar=avatar, seconds=clip_s, seed=seed)

    target = BenchTarget(pipeline, make_job, [])
    resolved = resolve(_settings(runs=4, max_runs=9, encode_runs=0), on_gpu=False)
    sampler = NvmlSampler([], 0.05, nvml=_NoNvml())
    try:
        always = measure_clip(target, CLIP_S, resolved, sampler, more_runs=lambda runs: True)
        until_six = measure_clip(target, CLIP_S, resolved, sampler, more_runs=lambda runs: len(runs) < 6)
        never = measure_clip(target, CLIP_S, resolved, sampler, more_runs=lambda runs: False)
    finally:
        pipeline.close()
    assert len(always.runs) == 9 and always.planned_runs == 4  # 4, 6, 8, 9 (the cap)
    assert len(until_six.runs) == 6 and len(never.runs) == 4


def test_a_straddling_gate_gets_more_runs_and_the_note_says_so(baseline):
    median = results.clip_summaries(baseline, baseline.clips[0])["latency_ms"].p50
    targets = _targets(latency_ms=median)  # the target at the measured median: undecided at first
    result = run_benchmark(_settings(runs=6, max_runs=12), build_config(device="cpu", size="tiny"),
                           targets=targets, stage_factory=bench_fakes.stage_factory(), nvml=_NoNvml())
    clip = result.clips[0]
    v = _verdict(results.evaluate(result, targets), "latency_ms")
    if len(clip.runs) > 6:
        assert any("runs instead of 6" in n for n in result.notes)
    assert v.n == len(clip.runs) <= 12
    assert v.verdict in (verdicts.PASS, verdicts.FAIL) or (v.verdict == verdicts.MARGINAL and len(clip.runs) == 12)


def test_caches_are_released_before_each_window():
    from types import SimpleNamespace

    from iris_pipeline.benchmark.runner import BenchTarget, release_caches

    released = []
    release_caches(BenchTarget(SimpleNamespace(release_caches=lambda: released.append(1)), lambda c, s: None, []))
    release_caches(BenchTarget(SimpleNamespace(), lambda c, s: None, []))  # a pipeline without the hook
    assert released == [1]


def test_every_run_reports_the_host_memory_peak(baseline):
    row = results.csv_rows(baseline)[0]
    assert 0.01 < row["peak_host_mem_gb"] < 64  # this process's RSS, in GiB
    assert results.bench_json(baseline, [])["clips"][0]["memory"]["peak_host_mem_gb"] == row["peak_host_mem_gb"]


def test_no_gate_at_all_is_invalid_with_one_line():
    from iris_pipeline.commands.bench import EXIT_INVALID, gate_outcome

    code, lines = gate_outcome([], "GPU")
    assert code == EXIT_INVALID and lines == [
        "PERF GATE INVALID: no gate for these clip lengths in the targets file; nothing was checked"]
