"""pytest plugin: command-line options of the GPU perf suite (tests/perf). Registered from
tests/conftest.py, because pytest only reads options of conftest files it loads at start-up."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iris-perf", "iris_pipeline perf gates")
    group.addoption("--bench-runs", type=int, default=30, help="measured runs per clip length (default 30)")
    group.addoption("--bench-warmup", type=int, default=3, help="warm-up rounds per clip length (default 3)")
    group.addoption("--gate-statistic", action="append", default=[], metavar="FIGURE=STAT",
                    help="statistic of a gate, e.g. latency_ms=p90 (default: median)")
    group.addoption("--bench-out", default=None, metavar="DIR",
                    help="write bench.csv / bench.json / summary.json of the perf session here "
                         "(default: $IRIS_BENCH_OUT; not written when neither is set)")
    group.addoption("--ab-base", default=None, metavar="REF",
                    help="A/B regression check: measure REF and the working tree interleaved in this job")
    group.addoption("--ab-pairs", type=int, default=None,
                    help="interleaved A/B pairs per clip length (default: chosen from the calibration after a pilot)")
    group.addoption("--profile", default=None, metavar="NAME|FILE",
                    help="profile the perf session measures (default: optimised with a GPU, eager without)")
