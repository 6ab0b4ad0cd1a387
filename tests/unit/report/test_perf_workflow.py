"""The GPU perf workflow keeps its contract (actionlint, run by .ci/run, checks its syntax and types)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

WORKFLOW = Path(__file__).resolve().parents[3] / ".github" / "workflows" / "perf-gpu.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def _steps(job: dict) -> dict[str, dict]:
    return {step.get("name", step.get("uses", "")): step for step in job["steps"]}


def test_triggers_runner_and_fork_guard(workflow) -> None:
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) == {"pull_request", "push", "workflow_dispatch"}
    assert triggers["push"]["branches"] == ["main"]
    perf = workflow["jobs"]["perf"]
    assert perf["runs-on"] == ["self-hosted", "linux", "gpu", "a100"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in perf["if"]
    assert workflow["concurrency"]["cancel-in-progress"] is False
    assert workflow["concurrency"]["group"].startswith("perf-gpu-")


def test_engine_cache_is_keyed_by_what_invalidates_engines(workflow) -> None:
    steps = _steps(workflow["jobs"]["perf"])
    for name in ("Restore the engine cache", "Save the engine cache"):
        key = steps[name]["with"]["key"]
        assert "steps.gpu.outputs.key" in key
        for part in ("iris_pipeline/models/**", "iris_pipeline/backends/**", "constraints.txt"):
            assert part in key
    assert "nvidia-smi --query-gpu=name" in steps["GPU identity (part of the engine cache key)"]["run"]


def test_runs_the_gpu_suite_with_allure_benchmark_json_and_ab_on_pull_requests(workflow) -> None:
    run = next(s["run"] for s in workflow["jobs"]["perf"]["steps"] if s.get("id") == "perf")
    assert "./scripts/test.sh -m gpu" in run
    for option in ("--alluredir allure-results", "--benchmark-json bench.json", "-p tests.perf.allure_support"):
        assert option in run
    assert '--ab-base "origin/$BASE_REF"' in run
    assert '"$EVENT" = "pull_request"' in run


def test_publishes_allure_with_history_comments_and_gates(workflow) -> None:
    steps = _steps(workflow["jobs"]["perf"])
    assert "scripts/allure-report.sh" in steps["Allure report with history"]["run"]
    assert steps["Upload the Allure report for GitHub Pages (main only)"]["uses"].startswith(
        "actions/upload-pages-artifact@")
    assert workflow["jobs"]["pages"]["steps"][0]["uses"].startswith("actions/deploy-pages@")
    assert workflow["jobs"]["pages"]["permissions"] == {"pages": "write", "id-token": "write"}
    assert "iris report" in steps["IRIS report (Markdown, HTML fragment, plots)"]["run"]
    assert "--lang en" in steps["IRIS report (Markdown, HTML fragment, plots)"]["run"]
    comment = steps["Post the summary table on the pull request"]
    assert comment["uses"].startswith("actions/github-script@")
    assert "createComment" in comment["with"]["script"]
    gate = steps["Gate"]
    assert gate["if"] == "always()"
    assert "exit 1" in gate["run"]
