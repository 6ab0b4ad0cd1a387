"""The files an Allure results directory carries besides test results: environment, categories, executor.

Plain files, no allure package needed: the perf suite's pytest plugin writes them at the end of a
session, and `scripts/allure-report.sh` hands the categories to the Allure 3 CLI as well.

Failure messages of the perf suite start with agreed prefixes, so reports can tell a slower build
from a broken one:
- "PERF GATE ..."        a figure missed its target (figure, measured, target, clip length, GPU);
- "PERF REGRESSION ..."  the A/B check found the head significantly slower than the base.
Everything else that fails is a functional failure.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iris_pipeline.metrics.records import atomic_open

PERF_GATE_PREFIX = "PERF GATE"
PERF_REGRESSION_PREFIX = "PERF REGRESSION"
ENVIRONMENT_FILE = "environment.properties"
CATEGORIES_FILE = "categories.json"
EXECUTOR_FILE = "executor.json"

# [\s\S] instead of "." with a DOTALL flag: the same pattern must work in Java (Allure 2, whole-message
# match) and JavaScript (Allure 3, search); a message may start with "AssertionError: " and span lines.
_ANY = r"[\s\S]*"
CATEGORIES: list[dict[str, Any]] = [
    {"name": "Performance regressions (A/B)", "matchedStatuses": ["failed", "broken"],
     "messageRegex": f"{_ANY}{PERF_REGRESSION_PREFIX}{_ANY}"},
    {"name": "Performance targets missed", "matchedStatuses": ["failed", "broken"],
     "messageRegex": f"{_ANY}{PERF_GATE_PREFIX}{_ANY}"},
    {"name": "Functional failures", "matchedStatuses": ["failed"],
     "messageRegex": f"^(?!{_ANY}PERF (?:GATE|REGRESSION)){_ANY}$"},
    {"name": "Broken tests (errors outside assertions)", "matchedStatuses": ["broken"],
     "messageRegex": f"^(?!{_ANY}PERF (?:GATE|REGRESSION)){_ANY}$"},
]

# environment.properties key -> capture_context() key
ENVIRONMENT_KEYS = {
    "gpu": "gpu_name",
    "gpu_count": "gpu_count",
    "driver": "driver_version",
    "cuda_runtime": "cuda_runtime_version",
    "cuda_driver": "cuda_driver_version",
    "torch": "torch_version",
    "tensorrt": "tensorrt_version",
    "commit": "git_commit",
    "commit_dirty": "git_dirty",
    "host": "host",
    "python": "python_version",
}


def category_of(message: str | None, status: str = "failed") -> str | None:
    """The category a failure lands in (first match, as Allure 3 assigns them); None if none."""
    for category in CATEGORIES:
        if status in category["matchedStatuses"] and re.fullmatch(category["messageRegex"], message or ""):
            return category["name"]
    return None


def _escape_property(text: str, key: bool = False) -> str:
    """Java .properties escaping (what Allure reads): backslash, separators, and line breaks."""
    out = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    for char in ("=", ":", "#", "!") + ((" ",) if key else ()):
        out = out.replace(char, f"\\{char}")
    return out


def environment_properties(context: Mapping[str, Any]) -> str:
    """The text of environment.properties from a `metrics.capture_context()` dict."""
    lines = []
    for name, key in ENVIRONMENT_KEYS.items():
        value = context.get(key)
        shown = "n/a" if value is None else ("true" if value is True else "false" if value is False else str(value))
        lines.append(f"{_escape_property(name, key=True)}={_escape_property(shown)}")
    return "\n".join(lines) + "\n"


def executor_info(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """executor.json for a GitHub Actions run (names the build in Allure's trend), else None."""
    env = os.environ if environ is None else environ
    if env.get("GITHUB_ACTIONS") != "true":
        return None
    server = env.get("GITHUB_SERVER_URL", "https://github.com")
    run_url = f"{server}/{env.get('GITHUB_REPOSITORY', '')}/actions/runs/{env.get('GITHUB_RUN_ID', '')}"
    info: dict[str, Any] = {
        "name": "GitHub Actions", "type": "github",
        "buildName": f"{env.get('GITHUB_WORKFLOW', 'perf')} #{env.get('GITHUB_RUN_NUMBER', '?')}",
        "buildOrder": int(env["GITHUB_RUN_NUMBER"]) if env.get("GITHUB_RUN_NUMBER", "").isdigit() else None,
        "buildUrl": run_url,
    }
    if env.get("ALLURE_REPORT_URL"):
        info["reportUrl"] = env["ALLURE_REPORT_URL"]
    return {k: v for k, v in info.items() if v is not None}


def write_allure_metadata(results_dir: str | Path, context: Mapping[str, Any],
                          environ: Mapping[str, str] | None = None) -> list[Path]:
    """Write environment.properties, categories.json (and executor.json on CI) into `results_dir`."""
    directory = Path(results_dir)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    with atomic_open(directory / ENVIRONMENT_FILE) as fh:
        fh.write(environment_properties(context))
    written.append(directory / ENVIRONMENT_FILE)
    with atomic_open(directory / CATEGORIES_FILE) as fh:
        json.dump(CATEGORIES, fh, indent=2)
        fh.write("\n")
    written.append(directory / CATEGORIES_FILE)
    executor = executor_info(environ)
    if executor is not None:
        with atomic_open(directory / EXECUTOR_FILE) as fh:
            json.dump(executor, fh, indent=2)
            fh.write("\n")
        written.append(directory / EXECUTOR_FILE)
    return written
