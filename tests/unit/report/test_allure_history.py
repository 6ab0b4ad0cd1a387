"""Allure end to end: two runs of a perf-style test file -> two Allure 3 reports sharing one history.

Checks what the perf suite relies on: figures recorded as excluded parameters keep a test's history
id stable while their values change; the history file and the second report's trend hold both runs;
the categories separate "PERF GATE" / "PERF REGRESSION" failures from functional ones; the
environment (GPU, driver, CUDA, torch, TensorRT, commit) reaches the report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from iris_pipeline.report.allure_files import (
    CATEGORIES,
    ENVIRONMENT_KEYS,
    category_of,
    environment_properties,
)

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "allure-report.sh"
SAMPLE_RESULTS = REPO / "tests" / "data" / "bench_sample"

SAMPLE_TESTS = textwrap.dedent('''
    import os

    import allure
    import pytest

    from tests.perf.allure_support import (
        attach_file,
        attach_results,
        gate_failure,
        record_figures,
        regression_failure,
    )

    RUN = int(os.environ["SAMPLE_RUN"])


    @pytest.mark.parametrize("clip_s", [5.0])
    def test_latency_within_target(clip_s, tmp_path):
        record_figures({"latency_ms_p50": 100.0 + RUN, "n_runs": 30 + RUN})
        table = tmp_path / "bench.csv"
        table.write_text(f"clip_s,stage,latency_ms_p50\\n{clip_s},e2e,{100.0 + RUN}\\n")
        attach_file(table)
        attach_results(os.environ["SAMPLE_RESULTS"])


    def test_missed_target():
        record_figures({"latency_ms_p50": 400.0 + RUN})
        raise AssertionError(gate_failure("latency_ms", "median", 400.0 + RUN, "<=", 360.0, "ms", 5, "cpu"))


    def test_ab_regression():
        raise AssertionError(regression_failure("latency_ms", 100.0, 120.0 + RUN, "ms", "Mann-Whitney U p=0.001"))


    def test_functional():
        assert RUN < 0


    def test_included_parameter_changes_history_id():
        allure.dynamic.parameter("run", str(RUN))  # not excluded: a new history id every run
''')


def test_categories_sort_perf_failures_from_functional_ones() -> None:
    assert category_of("AssertionError: PERF GATE latency_ms median 412 ms, target <= 360 ms") \
        == "Performance targets missed"
    assert category_of("PERF REGRESSION latency_ms 100 ms -> 120 ms (+20.0%)\nmore") == "Performance regressions (A/B)"
    assert category_of("assert 1 == 2") == "Functional failures"
    assert category_of("RuntimeError: CUDA error", status="broken") == "Broken tests (errors outside assertions)"
    assert category_of("PERF GATE ...", status="passed") is None
    assert [c["name"] for c in CATEGORIES][:2] == ["Performance regressions (A/B)", "Performance targets missed"]


def test_environment_properties_name_the_software_and_escape_values() -> None:
    text = environment_properties({"gpu_name": "NVIDIA A100-SXM4-80GB", "driver_version": "550.54.15",
                                   "cuda_runtime_version": "12.1", "torch_version": "2.2.2+cu121",
                                   "tensorrt_version": "9.1.0", "git_commit": "abc", "git_dirty": False,
                                   "host": "a=b:c"})
    lines = dict(line.split("=", 1) for line in text.splitlines())
    assert list(lines) == list(ENVIRONMENT_KEYS)
    assert lines["gpu"] == "NVIDIA A100-SXM4-80GB"
    assert lines["tensorrt"] == "9.1.0"
    assert lines["commit"] == "abc"
    assert lines["commit_dirty"] == "false"
    assert lines["host"] == "a\\=b\\:c"
    assert lines["python"] == "n/a"


def _node_major() -> int | None:
    try:
        done = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.strip().lstrip("v")
    return int(text.split(".")[0]) if done.returncode == 0 and text[:1].isdigit() else None


@pytest.fixture(scope="module")
def allure_cli() -> None:
    if shutil.which("npm") is None or _node_major() is None:
        pytest.skip("needs node and npm for the Allure 3 CLI (npm package `allure`); not installed here")
    if _node_major() < 20:
        pytest.skip(f"the Allure 3 CLI needs node >= 20; this node is {_node_major()}")
    try:
        done = subprocess.run(["bash", str(SCRIPT), "--install"], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip("installing the Allure 3 CLI from npm took more than 10 minutes")
    if done.returncode != 0:
        pytest.skip(f"the allure npm package could not be installed: {done.stderr.strip()[-300:]}")


def _run_sample(tmp_path: Path, run: int) -> Path:
    results = tmp_path / f"allure-results-{run}"
    env = dict(os.environ, SAMPLE_RUN=str(run), PYTHONPATH=str(REPO), SAMPLE_RESULTS=str(SAMPLE_RESULTS))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.perf.allure_support",
         "-o", "addopts=", "--rootdir", str(tmp_path), "--alluredir", str(results), "test_sample_perf.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr  # three tests fail on purpose
    assert "3 failed, 2 passed" in done.stdout, done.stdout
    return results


def _report(results: Path, report: Path, history: Path) -> None:
    env = dict(os.environ, ALLURE_HISTORY=str(history), ALLURE_REPORT_NAME="sample perf")
    done = subprocess.run(["bash", str(SCRIPT), str(results), str(report)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (report / "index.html").is_file()


def _history_ids(entry: dict) -> dict[str, str]:
    return {item["name"]: history_id for history_id, item in entry["testResults"].items()}


@pytest.mark.slow
def test_two_runs_build_reports_whose_history_holds_both(tmp_path: Path, allure_cli) -> None:
    (tmp_path / "test_sample_perf.py").write_text(SAMPLE_TESTS, encoding="utf-8")
    history = tmp_path / "history" / "history.jsonl"
    runs = [_run_sample(tmp_path, run) for run in (1, 2)]
    for run, results in enumerate(runs, start=1):
        props = (results / "environment.properties").read_text(encoding="utf-8")
        assert all(f"{key}=" in props for key in ("gpu", "driver", "cuda_runtime", "torch", "tensorrt", "commit"))
        assert json.loads((results / "categories.json").read_text(encoding="utf-8")) == CATEGORIES
        passed = [json.loads(p.read_text(encoding="utf-8")) for p in results.glob("*-result.json")]
        within = next(r for r in passed if r["name"] == "test_latency_within_target[5.0]")
        attached = {a["name"]: a for a in within["attachments"]}
        assert {"bench.csv", "summary.json", "latency_by_stage.png", "latency_vs_clip.png",
                "memory_vs_clip.png"} <= set(attached)
        assert (results / attached["latency_vs_clip.png"]["source"]).read_bytes().startswith(b"\x89PNG")
        figures = {p["name"]: p for p in within["parameters"]}
        assert figures["latency_ms_p50"]["value"] == repr(100.0 + run)
        assert figures["latency_ms_p50"]["excluded"]
        _report(results, tmp_path / f"report-{run}", history)

    entries = [json.loads(line) for line in history.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(entries) == 2, "each generation appends its run to the history"
    first, second = (_history_ids(e) for e in entries)
    stable = ["test_latency_within_target[5.0]", "test_missed_target", "test_ab_regression", "test_functional"]
    assert all(first[name] == second[name] for name in stable), "excluded figures must not change history ids"
    changing = "test_included_parameter_changes_history_id"
    assert first[changing] != second[changing], "control: an included parameter does change the history id"

    charts = json.loads((tmp_path / "report-2" / "widgets" / "charts.json").read_text(encoding="utf-8"))
    dynamics = next(c for c in charts["general"].values() if c["type"] == "statusDynamics")["data"]
    assert {point["id"] for point in dynamics} == {entries[0]["uuid"], "current"}, "trend of report 2: both runs"
    assert all(point["statistic"]["total"] == 5 for point in dynamics)

    categories = json.loads((tmp_path / "report-2" / "widgets" / "categories.json").read_text(encoding="utf-8"))
    nodes = categories["nodes"]
    named = {n["name"]: n for n in nodes.values() if n["type"] == "category"}
    assert {"Performance targets missed", "Performance regressions (A/B)", "Functional failures"} <= set(named)

    def tests_under(node_id: str) -> set[str]:
        node = nodes[node_id]
        if node["type"] == "tr":
            return {node["name"]}
        return set().union(*(tests_under(child) for child in node.get("childrenIds", [])))

    assert tests_under(named["Performance targets missed"]["id"]) == {"test_missed_target"}
    assert tests_under(named["Performance regressions (A/B)"]["id"]) == {"test_ab_regression"}
    assert tests_under(named["Functional failures"]["id"]) == {"test_functional"}
    environment = json.loads((tmp_path / "report-2" / "widgets" / "allure_environment.json").read_text())
    assert {"gpu", "driver", "cuda_runtime", "torch", "tensorrt", "commit"} <= {item["name"] for item in environment}
