"""A/B regression gate (with --ab-base REF): the working tree must not be slower than REF, judged by
iris_pipeline.benchmark.abtest (median slowdown > 5 %, > 2 ms, and Mann-Whitney U p < 0.05). A
failure reads "PERF REGRESSION latency_ms <base> ms -> <head> ms (+x%), ..."."""

from __future__ import annotations

import pytest

from iris_pipeline.benchmark import abtest

try:
    from tests.perf.allure_support import record_figures
except ImportError:  # pragma: no cover
    def record_figures(figures):
        return None

pytestmark = pytest.mark.gpu


def test_no_latency_regression(clip_s, ab_results, pytestconfig):
    c = ab_results[clip_s].comparison
    record_figures({k: v for k, v in c.as_dict().items() if k not in ("test", "reason")})
    base = pytestconfig.getoption("--ab-base")
    assert c.verdict != abtest.REGRESSION, (
        f"PERF REGRESSION latency_ms {c.base_median:.6g} ms -> {c.head_median:.6g} ms ({c.slowdown:+.1%}), "
        f"clip {clip_s:g} s against {base}: {c.reason}")
    assert c.verdict != abtest.INVALID, f"A/B check undecidable at clip {clip_s:g} s: {c.reason}"
