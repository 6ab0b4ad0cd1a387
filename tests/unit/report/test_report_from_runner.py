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


def test_the_report_shows_throughput_csv_beside_bench_csv(runner_output: Path, tmp_path) -> None:
    """throughput.csv (two schedulers at two concurrencies) becomes a table of its numbers; a cell
    that is not what the column holds is one clear error naming the file and line."""
    import shutil

    from iris_pipeline.benchmark import schema
    from iris_pipeline.errors import InputError
    from iris_pipeline.metrics import write_csv

    out = tmp_path / "out"
    shutil.copytree(runner_output, out)
    rows = [{"clip_s": CLIP_S, "scheduler": name, "concurrency": c, "clips_per_s": rate, "p50_ms": p50,
             "p99_ms": p50 * 1.5, "completed": 6, "valid": c == 1, "source": "closed loop"}
            for c, name, rate, p50 in ((1, "continuous", 2.5, 400.0), (1, "static", 2.25, 440.0),
                                       (2, "continuous", 4.75, 420.0), (2, "static", 3.5, 570.0))]
    write_csv(out / schema.THROUGHPUT_CSV, rows, schema.throughput_columns([]))
    results = load_results(out)
    assert [(r.scheduler, r.concurrency, r.valid) for r in results.throughput] == \
        [("continuous", 1, True), ("static", 1, True), ("continuous", 2, False), ("static", 2, False)]
    text = write_report(results, tmp_path / "report", lang="en").markdown.read_text(encoding="utf-8")
    assert "Table 3. Throughput per concurrency and tts scheduler" in text
    assert "| 1 | static | 2 | 3.50 | 570.0 | 855.0 | 6 | no |" in text
    (out / schema.THROUGHPUT_CSV).write_text((out / schema.THROUGHPUT_CSV).read_text().replace(",true,", ",yes,", 1))
    with pytest.raises(InputError, match=r"throughput.csv: line 2: column 'valid' must be true or false"):
        load_results(out)
