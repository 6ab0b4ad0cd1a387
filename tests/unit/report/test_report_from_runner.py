"""End to end on the CPU: the benchmark runner's own files (real Pipeline around the stand-in stages of
tests/unit/bench/bench_fakes.py) -> `iris report`; the report's numbers are the CSV's."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import pytest

from iris_pipeline.report import load_results, write_report

FAKES = Path(__file__).resolve().parents[1] / "bench" / "bench_fakes.py"
CLIP_S = 1.0


def _fakes():
    if not FAKES.is_file():
        pytest.skip(f"{FAKES} (the benchmark's stand-in stages) is not in this checkout")
    spec = importlib.util.spec_from_file_location("report_bench_fakes", FAKES)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


class _NoNvml:
    class NVMLError(Exception):
        pass

    def nvmlInit(self):
        raise self.NVMLError("Driver Not Loaded")


@pytest.fixture(scope="module")
def runner_output(tmp_path_factory) -> Path:
    from iris_pipeline.benchmark import results
    from iris_pipeline.benchmark.session import build_config, run_benchmark
    from iris_pipeline.benchmark.settings import BenchSettings
    from iris_pipeline.config import parse_targets

    settings = BenchSettings(clip_lengths=[CLIP_S], runs=8, warmup=1, encode_runs=0, throughput=False, n_boot=200)
    result = run_benchmark(settings, build_config(device="cpu", size="tiny"),
                           stage_factory=_fakes().stage_factory(), nvml=_NoNvml())
    targets = parse_targets({"default": {"clips": {CLIP_S: {"latency_ms": 1e-3, "peak_mem_gb": 60}}}})
    out = tmp_path_factory.mktemp("bench_out")
    results.write_outputs(result, results.evaluate(result, targets), out, "test targets")
    return out


def test_report_of_a_runner_output_shows_the_csv_numbers_and_the_verdicts(runner_output: Path, tmp_path) -> None:
    files = write_report(load_results(runner_output), tmp_path, lang="en")
    text = files.markdown.read_text(encoding="utf-8")
    with open(runner_output / "bench.csv", newline="", encoding="utf-8") as fh:
        e2e = next(r for r in csv.DictReader(fh) if r["stage"] == "e2e")
    lines = text.splitlines()
    header_at = next(i for i, line in enumerate(lines) if line.startswith("| clip (s) | runs |"))
    header = [c.strip() for c in lines[header_at].strip("|").split(" | ")]
    row = dict(zip(header, [c.strip() for c in lines[header_at + 2].strip("|").split(" | ")], strict=True))
    assert float(row["clip (s)"]) == CLIP_S
    assert int(row["runs"]) == int(e2e["n_runs"]) == 8
    assert math.isclose(float(row["latency p50 (ms)"]), float(e2e["latency_ms_p50"]), abs_tol=0.05)
    assert math.isclose(float(row["first chunk p50 (ms)"]), float(e2e["first_chunk_ms_p50"]), abs_tol=0.05)
    assert row["peak memory (GB)"] == "n/a"
    assert row["latency target (ms)"] == "0.0"
    assert row["verdict"] == "FAIL (latency_ms)"
    problems = text.split("## 4.")[1].split("## 5.")[0]
    assert "1 s clip latency: measured" in problems
    assert "→ missed" in problems
    assert "1 s clip memory (peak): cannot be decided (INVALID) — unavailable" in problems
