"""Gate rules: named statistic and confidence, INVALID instead of an unfounded pass."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iris_pipeline.benchmark import verdicts
from iris_pipeline.benchmark.verdicts import FAIL, INVALID, PASS, Gate
from iris_pipeline.config import ClipTargets
from iris_pipeline.metrics import min_samples_for_percentile


def _gate(stat="median", target=100.0, figure="latency_ms"):
    return Gate(figure, 5.0, target, stat, "<=", 0.95)


def _samples(center, n=30, spread=0.02, seed=0):
    return list(center * (1 + spread * np.random.default_rng(seed).standard_normal(n)))


def test_median_pass_needs_the_ci_upper_bound_within_target():
    v = verdicts.judge_time(_gate(), _samples(80))
    assert v.verdict == PASS and v.statistic == "median" and v.confidence == 0.95
    assert v.ci_high <= 100 and v.bound == v.ci_high and v.note is None


def test_median_above_target_fails_with_figure_measured_and_target_in_the_message():
    v = verdicts.judge_time(_gate(), _samples(130))
    assert v.verdict == FAIL and v.measured > 100 and "confirmed" in v.note
    msg = v.message("NVIDIA H100")
    assert msg.startswith("FAIL: latency_ms (median) = 1") and "target <= 100 ms" in msg
    assert "clip 5 s on NVIDIA H100" in msg


def test_marginal_median_is_a_noted_pass_or_invalid_by_policy():
    samples = [90, 92, 95, 97, 99, 99.5, 101, 104, 110, 120]  # median 99.25, CI reaches above 100
    passed = verdicts.judge_time(_gate(), samples)
    assert passed.verdict == PASS and passed.note.startswith("marginal") and passed.ci_high > 100
    strict = verdicts.judge_time(_gate(), samples, marginal="invalid")
    assert strict.verdict == INVALID and "more runs" in strict.reason


@pytest.mark.parametrize("stat,q", [("p90", 90), ("p99", 99)])
def test_percentile_from_too_few_runs_is_invalid_with_the_count_it_needs(stat, q):
    needed = min_samples_for_percentile(q, 0.95)
    v = verdicts.judge_time(_gate(stat), _samples(10, n=needed - 1))  # far below target: still no pass
    assert v.verdict == INVALID and v.needed == needed and str(needed) in v.reason
    ok = verdicts.judge_time(_gate(stat), _samples(10, n=needed))
    assert ok.verdict == PASS and ok.bound <= 100


def test_median_from_fewer_than_five_runs_is_invalid():
    v = verdicts.judge_time(_gate(), [1.0, 1.0, 1.0, 1.0])
    assert v.verdict == INVALID and v.needed == 5


def test_memory_without_nvml_is_invalid_never_a_pass():
    gate = Gate("peak_mem_gb", 5.0, 60.0, "peak", "<=")
    v = verdicts.judge_memory(gate, math.nan, False, "NVML unavailable: Driver Not Loaded")
    assert v.verdict == INVALID and v.measured is None and v.reason.startswith("unavailable: NVML unavailable")
    assert verdicts.judge_memory(gate, 10.0, True, None).verdict == PASS
    assert verdicts.judge_memory(gate, 61.0, True, None).verdict == FAIL


def test_throughput_gate_is_invalid_when_the_phase_was_short():
    gate = Gate("throughput_cps", 5.0, 2.5, "rate_sat", ">=")
    assert verdicts.judge_throughput(gate, 3.0, None).verdict == PASS
    assert verdicts.judge_throughput(gate, 2.0, None).verdict == FAIL
    assert verdicts.judge_throughput(gate, 3.0, "phase too short").verdict == INVALID


def test_gates_follow_the_targets_and_the_chosen_statistics():
    targets = ClipTargets(latency_ms=360, first_chunk_ms=360, throughput_cps=2.5, peak_mem_gb=60)
    gates = verdicts.gates_for(targets, 5, {"latency_ms": "p99"})
    assert [(g.figure, g.statistic, g.comparison) for g in gates] == [
        ("latency_ms", "p99", "<="), ("first_chunk_ms", "median", "<="), ("peak_mem_gb", "peak", "<="),
        ("throughput_cps", "rate_sat", ">=")]
    with pytest.raises(ValueError, match="statistic 'p42' for latency_ms"):
        verdicts.check_statistic_choice({"latency_ms": "p42"})


def test_overall_verdict():
    p = verdicts.judge_time(_gate(), _samples(50))
    f = verdicts.judge_time(_gate(), _samples(150))
    i = verdicts.judge_time(_gate(), [1.0])
    assert verdicts.overall([p, i]) == INVALID and verdicts.overall([p, i, f]) == FAIL and verdicts.overall([p]) == PASS
