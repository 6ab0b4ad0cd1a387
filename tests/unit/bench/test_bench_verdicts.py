"""Gate rules: named statistic and confidence, INVALID instead of an unfounded pass, MARGINAL with its
policy when the interval straddles the target, per-figure `per_gpu` merging."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iris_pipeline.benchmark import verdicts
from iris_pipeline.benchmark.verdicts import FAIL, INVALID, MARGINAL, PASS, Gate
from iris_pipeline.config import ClipTargets, parse_targets
from iris_pipeline.metrics import min_samples_for_percentile


def _gate(stat="median", target=100.0, figure="latency_ms"):
    return Gate(figure, 5.0, target, stat, "<=", 0.95)


def _samples(center, n=30, spread=0.02, seed=0):
    return list(center * (1 + spread * np.random.default_rng(seed).standard_normal(n)))


def test_median_pass_needs_the_ci_upper_bound_within_target():
    v = verdicts.judge_time(_gate(), _samples(80))
    assert v.verdict == PASS
    assert v.statistic == "median"
    assert v.confidence == 0.95
    assert v.ci_high <= 100
    assert v.bound == v.ci_high
    assert v.note is None


def test_median_above_target_fails_with_figure_measured_and_target_in_the_message():
    v = verdicts.judge_time(_gate(), _samples(130))
    assert v.verdict == FAIL
    assert v.measured > 100
    assert v.ci_low > 100
    msg = v.message("NVIDIA H100")
    assert msg.startswith("FAIL: latency_ms (median) = 1")
    assert "target <= 100 ms" in msg
    assert "clip 5 s on NVIDIA H100" in msg


def test_a_median_whose_interval_straddles_the_target_is_marginal_and_the_policy_decides():
    samples = [90, 92, 95, 97, 99, 99.5, 101, 104, 110, 120]  # median 99.25, CI reaches above 100
    strict = verdicts.judge_time(_gate(), samples)
    assert strict.verdict == MARGINAL
    assert strict.ci_low <= 100 < strict.ci_high
    assert strict.policy == "fail"
    assert strict.outcome == FAIL  # the default policy
    assert strict.message().startswith("MARGINAL (policy fail: counts as FAIL): latency_ms (median)")
    lenient = verdicts.judge_time(_gate(), samples, policy="pass")
    assert lenient.verdict == MARGINAL
    assert lenient.outcome == PASS
    assert "policy pass" in lenient.label
    assert verdicts.overall([strict]) == FAIL
    assert verdicts.overall([lenient]) == PASS
    assert verdicts.needs_more_runs(_gate(), samples)  # the benchmark would take more runs first


def test_a_median_whose_interval_is_above_the_target_fails_even_near_it():
    v = verdicts.judge_time(_gate(), _samples(104, n=60, spread=0.01))
    assert v.verdict == FAIL
    assert v.ci_low > 100
    assert not verdicts.needs_more_runs(_gate(), _samples(104, 60, 0.01))


def test_percentile_gate_uses_both_order_statistic_bounds():
    samples = _samples(100, n=200, spread=0.05)
    v = verdicts.judge_time(_gate("p90", target=float(np.percentile(samples, 90))), samples)
    assert v.verdict == MARGINAL
    assert v.ci_low < v.measured < v.ci_high
    assert verdicts.judge_time(_gate("p90", target=200), samples).verdict == PASS
    assert verdicts.judge_time(_gate("p90", target=50), samples).verdict == FAIL


def test_no_gates_is_invalid_never_a_pass():
    assert verdicts.overall([]) == INVALID


def test_per_gpu_override_merges_per_clip_length_and_per_figure():
    targets = parse_targets({
        "default": {"clips": {5: {"latency_ms": 360, "first_chunk_ms": 360, "peak_mem_gb": 60},
                              10: {"latency_ms": 720}, 30: {"latency_ms": 2160}}},
        "per_gpu": {"A100": {"clips": {5: {"latency_ms": 300, "peak_mem_gb": None}, 60: {"latency_ms": 4000}}},
                    "A100-SXM4-80GB": {"clips": {5: {"first_chunk_ms": 200}}}}})
    a100 = targets.for_gpu("NVIDIA A100-PCIE-40GB")
    assert a100.clips[5.0] == ClipTargets(latency_ms=300, first_chunk_ms=360)  # overridden, kept, removed (null)
    assert a100.clips[10.0].latency_ms == 720
    assert a100.clips[30.0].latency_ms == 2160  # other lengths stay gated
    assert a100.clips[60.0].latency_ms == 4000  # a length of its own adds to the default's
    sxm = targets.for_gpu("NVIDIA A100-SXM4-80GB")  # the longest matching key wins
    assert sxm.clips[5.0].first_chunk_ms == 200
    assert sxm.clips[5.0].latency_ms == 360
    assert targets.for_gpu("NVIDIA H100 80GB HBM3") == targets.default
    assert targets.marginal == "fail"


@pytest.mark.parametrize("stat,q", [("p90", 90), ("p99", 99)])
def test_percentile_from_too_few_runs_is_invalid_with_the_count_it_needs(stat, q):
    needed = min_samples_for_percentile(q, 0.95)
    v = verdicts.judge_time(_gate(stat), _samples(10, n=needed - 1))  # far below target: still no pass
    assert v.verdict == INVALID
    assert v.needed == needed
    assert str(needed) in v.reason
    ok = verdicts.judge_time(_gate(stat), _samples(10, n=needed))
    assert ok.verdict == PASS
    assert ok.bound <= 100


def test_median_from_fewer_than_five_runs_is_invalid():
    v = verdicts.judge_time(_gate(), [1.0, 1.0, 1.0, 1.0])
    assert v.verdict == INVALID
    assert v.needed == 5


def test_memory_without_nvml_is_invalid_never_a_pass():
    gate = Gate("peak_mem_gb", 5.0, 60.0, "peak", "<=")
    v = verdicts.judge_memory(gate, math.nan, False, "NVML unavailable: Driver Not Loaded")
    assert v.verdict == INVALID
    assert v.measured is None
    assert v.reason.startswith("unavailable: NVML unavailable")
    assert verdicts.judge_memory(gate, 10.0, True, None).verdict == PASS
    assert verdicts.judge_memory(gate, 61.0, True, None).verdict == FAIL


def test_throughput_gate_is_invalid_when_the_phase_was_short_and_judged_by_its_interval():
    gate = Gate("throughput_cps", 5.0, 2.5, "rate_sat", ">=")
    assert verdicts.judge_throughput(gate, 3.0, None).verdict == PASS
    assert verdicts.judge_throughput(gate, 2.0, None).verdict == FAIL
    assert verdicts.judge_throughput(gate, 3.0, "phase too short").verdict == INVALID
    assert verdicts.judge_throughput(gate, 3.0, None, (2.7, 3.3)).verdict == PASS
    straddling = verdicts.judge_throughput(gate, 2.6, None, (2.3, 2.9))
    assert straddling.verdict == MARGINAL
    assert straddling.outcome == FAIL
    assert straddling.ci_low == 2.3
    assert verdicts.judge_throughput(gate, 2.0, None, (1.8, 2.2)).verdict == FAIL


def test_throughput_interval_from_the_completion_gaps():
    from iris_pipeline.benchmark.runner import Phase

    gaps = list(np.random.default_rng(0).uniform(0.35, 0.45, 200))
    phase = Phase(2, len(gaps) / sum(gaps), len(gaps), sum(gaps), 2, True, None, gaps_s=gaps)
    low, high = phase.rate_interval(2000, 0, 0.95)
    assert low < phase.rate_cps < high
    assert high - low < 0.1 * phase.rate_cps
    assert Phase(1, 1.0, 1, 1.0, 0, True, None, gaps_s=[1.0]).rate_interval(100, 0, 0.95) is None


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
    assert verdicts.overall([p, i]) == INVALID
    assert verdicts.overall([p, i, f]) == FAIL
    assert verdicts.overall([p]) == PASS
