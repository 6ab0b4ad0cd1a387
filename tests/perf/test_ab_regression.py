"""A/B regression gate (with --ab-base REF): the working tree must not be slower than REF, judged by
iris_pipeline.benchmark.abtest.compare (paired log-ratios, Hodges-Lehmann estimate, the one-sided
99 % Wilcoxon bound above +0.2 % and the difference above 2 ms). A failure reads "PERF REGRESSION
latency_ms <base> ms -> <head> ms (+x%), ...". The A/B table and ab.csv go to Allure."""

from __future__ import annotations

import io

import pytest

from iris_pipeline.benchmark import abrun, abtest

try:
    import allure

    from tests.perf.allure_support import record_figures, regression_failure
except ImportError:  # pragma: no cover - allure-pytest is in the test extra
    allure = None

    def record_figures(figures):
        return None

    def regression_failure(figure, base, head, unit, detail):
        return f"PERF REGRESSION {figure} {base:.6g} {unit} -> {head:.6g} {unit}, {detail}"

pytestmark = pytest.mark.gpu


def _attach(ref: str, run: abrun.ABRun) -> None:
    if allure is None:
        return
    from rich.console import Console

    console = Console(record=True, width=160, file=io.StringIO())
    console.print(abrun.ab_table(run, ref))
    for note in run.notes:
        console.print(f"note: {note}")
    allure.attach(console.export_text(), name="A/B table", attachment_type=allure.attachment_type.TEXT)
    from iris_pipeline.metrics import to_csv_text

    allure.attach(to_csv_text(abrun.ab_rows(run, {}, ref, "")), name="ab.csv",
                  attachment_type=allure.attachment_type.CSV)


def test_no_latency_regression(clip_s, ab_results):
    ref, run = ab_results
    clip = next(c for c in run.clips if c.clip_s == clip_s)
    c = clip.comparison
    record_figures({k: v for k, v in c.as_dict().items() if k not in ("test", "reason")} | {"pairs_how": clip.plan.how})
    _attach(ref, run)
    assert c.verdict != abtest.REGRESSION, regression_failure(
        "latency_ms", c.base_median, c.head_median, "ms", f"head/base {c.ratio:.4f}, clip {clip_s:g} s against "
                                                           f"{ref}: {c.reason}")
    assert c.verdict != abtest.INVALID, f"A/B check undecidable at clip {clip_s:g} s: {c.reason}"
