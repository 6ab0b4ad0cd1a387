"""GPU perf gates per clip length (--clip-lengths): median latency, first-chunk latency, peak memory
(NVML) and throughput against the targets file (--targets). The measurement is the session's one
benchmark (`perf_result`, the same code as `iris bench`); each gate test only reads its verdict, judged
by iris_pipeline.benchmark.verdicts (named statistic and confidence; too few runs -> INVALID, never a
pass; an interval still across the target at the run cap -> MARGINAL, decided by the targets file's
policy). Every figure goes into Allure as excluded parameters; a failed gate reads "PERF GATE
<verdict>: <figure> (<statistic>) = <measured>, target <op> <target>, clip <L> s on <GPU>: <why>"."""

from __future__ import annotations

import math

import pytest

from iris_pipeline.benchmark import verdicts
from iris_pipeline.benchmark.runner import time_job

try:  # Allure where allure-pytest is installed (the test extra)
    from tests.perf.allure_support import attach_results, record_figures
except ImportError:  # pragma: no cover - without allure the figures stay in the results files only
    attach_results = None

    def record_figures(figures):
        return None

pytestmark = pytest.mark.gpu
PERF_GATE = "PERF GATE"


def _check(perf_result, clip_s, figure):
    verdict = perf_result.verdict(clip_s, figure)
    record_figures({**perf_result.figures(clip_s), "verdict": verdict.label, "reason": verdict.reason})
    assert verdict.outcome == verdicts.PASS, f"{PERF_GATE} {verdict.message(perf_result.gpu)}"


def test_median_latency(clip_s, perf_result):
    _check(perf_result, clip_s, "latency_ms")


def test_first_chunk_latency(clip_s, perf_result):
    _check(perf_result, clip_s, "first_chunk_ms")


def test_peak_memory(clip_s, perf_result):
    _check(perf_result, clip_s, "peak_mem_gb")


def test_throughput(clip_s, perf_result):
    _check(perf_result, clip_s, "throughput_cps")


def test_gates_exist(perf_result):
    """An empty set of gates is INVALID, never a pass: the targets file must gate these clip lengths."""
    assert perf_result.verdicts, (f"{PERF_GATE} INVALID: no gate for clip lengths "
                                  f"{[c.clip_s for c in perf_result.result.clips]} in the targets file")


def test_benchmark_record(clip_s, perf_result, benchmark):
    """pytest-benchmark's record: the session's samples and figures in `extra_info` (what the gates
    read), and pytest-benchmark's own timing of one more job of this clip length after the session.
    The gates never depend on this test (it is skipped under --benchmark-skip)."""
    from iris_pipeline.benchmark.runner import BenchTarget

    clip = next(c for c in perf_result.result.clips if c.clip_s == clip_s)
    figures = perf_result.figures(clip_s)
    benchmark.extra_info.update({k: None if isinstance(v, float) and math.isnan(v) else v
                                 for k, v in figures.items()})
    benchmark.extra_info["latency_ms_samples"] = [r.latency_ms for r in clip.runs]
    benchmark.extra_info["first_chunk_ms_samples"] = [r.first_chunk_ms for r in clip.runs]
    benchmark.extra_info["phases"] = [p.as_dict() for p in clip.phases]
    target = perf_result.target
    assert isinstance(target, BenchTarget)
    benchmark.pedantic(lambda: time_job(target, target.make_job(clip_s, 90_000)), rounds=1, iterations=1)


def test_results_attached(perf_result):
    """Allure gets what docs/reporting.md promises: bench.csv, summary.json and the report's plots."""
    if attach_results is None:
        pytest.skip("allure-pytest is not installed (the test extra)")
    attach_results(perf_result.out_dir)
    assert (perf_result.out_dir / "bench.csv").is_file() and (perf_result.out_dir / "summary.json").is_file()
