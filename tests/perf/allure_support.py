"""Allure helpers for the perf suite, and a pytest plugin that writes the results' metadata.

Perf tests call:
- `record_figures({"latency_ms_p50": 342.1, ...})`: every figure as an Allure parameter marked
  `excluded`, so it shows in the report but stays out of the history id: a test keeps one history
  (and one trend) across runs although its measured values change every run;
- `attach_file(path)` / `attach_results(results_dir)`: the CSV, summary and the report plots.
- `gate_failure(...)` / `regression_failure(...)`: the failure messages the report's categories
  sort on ("PERF GATE ..." for a missed target, "PERF REGRESSION ..." for an A/B slowdown).

As a plugin (`-p tests.perf.allure_support`, or listed in a conftest's `pytest_plugins`), it writes
environment.properties (GPU, driver, CUDA, torch, TensorRT, commit), categories.json and, on
GitHub Actions, executor.json into the `--alluredir` directory when the session ends.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import allure
import pytest

from iris_pipeline.report.allure_files import PERF_GATE_PREFIX, PERF_REGRESSION_PREFIX, write_allure_metadata

_ATTACHMENT_TYPES = {
    ".csv": allure.attachment_type.CSV,
    ".json": allure.attachment_type.JSON,
    ".png": allure.attachment_type.PNG,
    ".md": allure.attachment_type.TEXT,
    ".html": allure.attachment_type.HTML,
    ".txt": allure.attachment_type.TEXT,
}


def _shown(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _parameter_value(value: Any) -> Any:
    """allure-pytest shows a parameter's repr(): numbers stay numbers (6 significant digits), so they
    read 342.1 rather than '342.1'; a missing figure reads 'n/a'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool) or isinstance(value, int):
        return value
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return str(value)


def record_figures(figures: Mapping[str, Any]) -> None:
    """Show each measured figure as a parameter that does not enter the test's history id."""
    for name, value in figures.items():
        allure.dynamic.parameter(name, _parameter_value(value), excluded=True)


def attach_file(path: str | Path, name: str | None = None) -> None:
    path = Path(path)
    kind = _ATTACHMENT_TYPES.get(path.suffix.lower(), allure.attachment_type.TEXT)
    allure.attach.file(str(path), name=name or path.name, attachment_type=kind)


def attach_results(results_dir: str | Path) -> None:
    """Attach bench.csv / summary.json of a results directory and the report's plots (drawn here,
    the results directory is left as it is)."""
    from iris_pipeline.report import load_results
    from iris_pipeline.report.plots import write_plots

    directory = Path(results_dir)
    for name in ("bench.csv", "summary.json"):
        if (directory / name).is_file():
            attach_file(directory / name)
    with tempfile.TemporaryDirectory(prefix="iris-plots-") as plots:  # attach copies each file
        for path in write_plots(load_results(directory), Path(plots)).values():
            attach_file(path)


def gate_failure(figure: str, statistic: str, measured: float, op: str, target: float, unit: str,
                 clip_s: float, gpu: str) -> str:
    """The message of a missed target, e.g. "PERF GATE latency_ms median 412.3 ms, target <= 360 ms
    (5 s clip, NVIDIA A100-SXM4-80GB)"."""
    return (f"{PERF_GATE_PREFIX} {figure} {statistic} {_shown(measured)} {unit}, target {op} {_shown(target)} {unit} "
            f"({clip_s:g} s clip, {gpu})")


def regression_failure(figure: str, base: float, head: float, unit: str, detail: str) -> str:
    """The message of an A/B regression: "PERF REGRESSION latency_ms median 360 ms -> 401 ms (+11.4%) ..."."""
    change = 100.0 * (head - base) / base if base else math.nan
    return (f"{PERF_REGRESSION_PREFIX} {figure} {_shown(base)} {unit} -> {_shown(head)} {unit} "
            f"({change:+.1f}%), {detail}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    results_dir = getattr(session.config.option, "allure_report_dir", None)
    if not results_dir or hasattr(session.config, "workerinput"):  # xdist workers: the controller writes
        return
    from iris_pipeline.metrics import capture_context

    write_allure_metadata(results_dir, capture_context())
