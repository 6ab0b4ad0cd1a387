"""Statistics over runs, checked against numpy (percentiles: numpy's default "linear" method)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from iris_pipeline.metrics import (
    Summary,
    bootstrap_median_ci,
    min_samples_for_percentile,
    percentile_upper_bound,
)


def _distributions() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    return {
        "normal": rng.normal(100.0, 5.0, 200),
        "lognormal": rng.lognormal(3.0, 0.8, 150),  # long right tail, like latencies
        "exponential": rng.exponential(20.0, 101),
        "uniform": rng.uniform(10.0, 11.0, 37),
        "bimodal": np.concatenate([rng.normal(50, 1, 60), rng.normal(80, 1, 40)]),
        "constant": np.full(31, 7.25),
    }


@pytest.mark.parametrize("name", list(_distributions()))
def test_summary_matches_numpy(name: str) -> None:
    x = _distributions()[name]
    s = Summary.from_samples(x, n_boot=500, seed=3)
    assert s.n == x.size
    assert s.mean == pytest.approx(np.mean(x), rel=1e-12)
    assert s.std == pytest.approx(np.std(x, ddof=1), rel=1e-12, abs=1e-12)
    assert s.min == np.min(x)
    assert s.max == np.max(x)
    for q, got in ((50, s.p50), (90, s.p90), (95, s.p95), (99, s.p99)):
        assert got == pytest.approx(np.percentile(x, q, method="linear"), rel=1e-12)
    assert s.median == s.p50 == pytest.approx(np.median(x), rel=1e-12)
    assert s.median_ci_low <= s.p50 <= s.median_ci_high


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=2, max_size=80))
def test_summary_matches_numpy_on_any_sample(values: list[float]) -> None:
    x = np.asarray(values)
    s = Summary.from_samples(values, n_boot=50, seed=0)
    np.testing.assert_allclose([s.p50, s.p90, s.p95, s.p99], np.percentile(x, [50, 90, 95, 99]), rtol=1e-9, atol=1e-6)
    assert s.mean == pytest.approx(float(np.mean(x)), rel=1e-9, abs=1e-6)
    assert s.std == pytest.approx(float(np.std(x, ddof=1)), rel=1e-9, abs=1e-6)
    assert s.min <= s.p50 <= s.p90 <= s.p95 <= s.p99 <= s.max
    assert s.min <= s.median_ci_low <= s.median_ci_high <= s.max


def test_bootstrap_ci_is_seeded_and_matches_a_direct_computation() -> None:
    x = np.random.default_rng(7).lognormal(2.0, 0.5, 60)
    a = Summary.from_samples(x, n_boot=1000, seed=11)
    b = Summary.from_samples(x, n_boot=1000, seed=11)
    assert (a.median_ci_low, a.median_ci_high) == (b.median_ci_low, b.median_ci_high)
    rng = np.random.default_rng(11)
    medians = np.median(x[rng.integers(0, x.size, size=(1000, x.size))], axis=1)
    expected = np.percentile(medians, [2.5, 97.5])
    assert (a.median_ci_low, a.median_ci_high) == pytest.approx(tuple(expected), rel=1e-12)


def test_bootstrap_ci_shrinks_with_more_runs() -> None:
    rng = np.random.default_rng(5)
    widths = []
    for n in (20, 200, 2000):
        x = rng.normal(100.0, 10.0, n)
        low, high = bootstrap_median_ci(x, n_boot=1000, seed=0)
        assert low <= np.median(x) <= high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] > 0
    # the median's standard error falls as 1/sqrt(n): 100x the runs -> about a tenth of the width
    assert widths[2] < widths[0] / 5


def test_bootstrap_ci_covers_the_true_median_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(99)
    hits = 0
    trials = 200
    for trial in range(trials):
        x = rng.exponential(1.0, 60)  # true median ln 2
        low, high = bootstrap_median_ci(x, n_boot=400, seed=trial)
        hits += low <= math.log(2) <= high
    assert 0.88 <= hits / trials <= 0.99


def test_single_sample_and_bad_input() -> None:
    s = Summary.from_samples([4.0])
    assert s.n == 1
    assert s.p99 == 4.0
    assert (s.median_ci_low, s.median_ci_high) == (4.0, 4.0)
    assert math.isnan(s.std)
    with pytest.raises(ValueError, match="empty"):
        Summary.from_samples([])
    with pytest.raises(ValueError, match="finite"):
        Summary.from_samples([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        Summary.from_samples([1.0, 2.0], confidence=1.5)


def test_as_dict_prefixes_every_figure() -> None:
    d = Summary.from_samples([1.0, 2.0, 3.0], n_boot=10).as_dict("latency_ms")
    assert d["latency_ms_p50"] == 2.0
    assert d["latency_ms_n"] == 3
    assert {"latency_ms_median_ci_low", "latency_ms_median_ci_high", "latency_ms_p99", "latency_ms_std"} <= set(d)


def test_runs_needed_for_a_percentile_claim() -> None:
    assert [min_samples_for_percentile(q) for q in (50, 90, 95, 99)] == [5, 29, 59, 299]
    for q in (50, 90, 95, 99):
        n = min_samples_for_percentile(q)
        assert (q / 100) ** n <= 0.05 < (q / 100) ** (n - 1)


def test_percentile_upper_bound_is_an_order_statistic_with_the_stated_coverage() -> None:
    rng = np.random.default_rng(3)
    assert math.isnan(percentile_upper_bound(rng.normal(size=100), 99))  # too few runs for p99
    x = rng.normal(size=400)
    bound = percentile_upper_bound(x, 90)
    k = int(np.searchsorted(np.sort(x), bound)) + 1  # bound is the k-th smallest run
    assert binom.cdf(k - 1, 400, 0.9) >= 0.95 > binom.cdf(k - 2, 400, 0.9)
    assert bound >= np.percentile(x, 90)
    # coverage over repeated draws: the true p90 of N(0, 1) lies under the bound ~95 % of the time
    true_p90 = 1.2815515655446004
    hits = sum(percentile_upper_bound(rng.normal(size=60), 90) >= true_p90 for _ in range(300))
    assert 0.90 <= hits / 300 <= 0.995
