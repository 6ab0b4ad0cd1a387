"""`iris report`: the note's numbers are the CSV's, the HTML fragment is pasteable, plots are PNGs."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from iris_pipeline.errors import InputError
from iris_pipeline.report import ALLOWED_HTML_TAGS, load_results, write_report
from iris_pipeline.report.note import DECIMALS

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "bench_sample"
REPO = Path(__file__).resolve().parents[3]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns, restval="n/a")
        writer.writeheader()
        writer.writerows(rows)
    return path


def markdown_table(markdown: str, caption_start: str) -> list[dict[str, str]]:
    """The table under the bold caption that starts with `caption_start`, as dicts by header."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"**{caption_start}"))
    table = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split(" | ")])
    header, rows = table[0], table[2:]
    return [dict(zip(header, row, strict=True)) for row in rows]


def assert_shown(shown: str, csv_value: str, kind: str) -> None:
    """A report cell equals the CSV value at the report's precision ("n/a" stays "n/a")."""
    if csv_value == "n/a":
        assert shown == "n/a"
        return
    assert shown != "n/a", f"report shows n/a where the CSV has {csv_value}"
    assert math.isclose(float(shown), float(csv_value), abs_tol=0.5 * 10 ** -DECIMALS[kind] + 1e-9), \
        f"report shows {shown}, CSV has {csv_value}"


@pytest.fixture(scope="module")
def ko_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report_ko")
    return write_report(load_results(SAMPLE), out, lang="ko", author="강철수", reviewer=None,
                        stage_of_research="1단계 – 기초연구 단계")


@pytest.fixture(scope="module")
def en_report(tmp_path_factory):
    return write_report(load_results(SAMPLE / "bench.csv"), tmp_path_factory.mktemp("report_en"), lang="en")


def _e2e_rows() -> dict[float, dict[str, str]]:
    return {float(r["clip_s"]): r for r in csv_rows(SAMPLE / "bench.csv") if r["stage"] == "e2e"}


def _targets() -> dict[tuple[float, str], float]:
    summary = json.loads((SAMPLE / "summary.json").read_text(encoding="utf-8"))
    return {(float(v["clip_s"]), v["figure"]): float(v["target"]) for v in summary["gates"]
            if v["statistic"] in ("median", "peak", "rate_sat")}


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_results_table_numbers_equal_the_csv(lang, ko_report, en_report) -> None:
    files = ko_report if lang == "ko" else en_report
    table = markdown_table(files.markdown.read_text(encoding="utf-8"), "표 1" if lang == "ko" else "Table 1")
    expected = _e2e_rows()
    targets = _targets()
    assert [float(row[next(iter(row))]) for row in table] == sorted(expected)
    for row in table:
        cells = list(row.values())
        clip = float(cells[0])
        source = expected[clip]
        assert int(cells[1]) == int(source["n_runs"])
        assert_shown(cells[2], source["latency_ms_p50"], "ms")
        low, high = cells[3].split("–")
        assert_shown(low, source["latency_ms_ci_low"], "ms")
        assert_shown(high, source["latency_ms_ci_high"], "ms")
        assert_shown(cells[4], str(targets[(clip, "latency_ms")]), "ms")
        assert_shown(cells[5], source["first_chunk_ms_p50"], "ms")
        assert_shown(cells[6], str(targets[(clip, "first_chunk_ms")]), "ms")
        assert_shown(cells[7], source["throughput_cps_c1"], "cps")
        assert_shown(cells[8], source["throughput_cps_sat"], "cps")
        assert int(cells[9]) == int(float(source["saturating_concurrency"]))
        assert_shown(cells[10], str(targets[(clip, "throughput_cps")]), "cps")
        assert_shown(cells[11], source["peak_mem_gb"], "gb")
        assert_shown(cells[12], str(targets[(clip, "peak_mem_gb")]), "gb")
        assert_shown(cells[13], source["gpu_busy_pct"], "pct")  # the sample has no sm_active_pct (A100)
    headers = list(table[0])
    assert "gpu_busy_pct" in headers[13]
    assert "sm_active_pct" not in headers[13]


def test_stage_table_numbers_equal_the_csv(ko_report) -> None:
    table = markdown_table(ko_report.markdown.read_text(encoding="utf-8"), "표 2")
    labels = {"RVC": "rvc", "VALL-E X": "vallex", "FastPitch": "fastpitch", "Wav2Lip": "wav2lip"}
    source = {(float(r["clip_s"]), r["stage"]): r["stage_ms_p50"] for r in csv_rows(SAMPLE / "bench.csv")
              if r["stage"] != "e2e"}
    assert len(table) == 3
    for row in table:
        cells = list(row.items())
        clip = float(cells[0][1])
        for header, shown in cells[1:]:
            assert_shown(shown, source[(clip, labels[header])], "ms")


def test_verdicts_column_and_problems_come_from_the_summary(ko_report, en_report) -> None:
    table = markdown_table(ko_report.markdown.read_text(encoding="utf-8"), "표 1")
    verdicts = {float(list(r.values())[0]): list(r.values())[-1] for r in table}
    assert verdicts[5.0] == "PASS"
    assert verdicts[10.0] == "MARGINAL (latency_ms)"
    assert verdicts[30.0].startswith("FAIL")
    assert "throughput_cps" in verdicts[30.0]
    assert "peak_mem_gb" in verdicts[30.0]
    english = en_report.markdown.read_text(encoding="utf-8")
    problems = english.split("## 4. Problems and resolution")[1].split("## 5.")[0]
    assert "30 s clip throughput: measured 0.40 clips/s, target ≥ 0.42 clips/s" in problems
    assert "30 s clip memory: measured 63.40 GB, target ≤ 60.00 GB" in problems
    assert "30 s clip latency (p99): cannot be decided (INVALID)" in problems
    assert "needs >= 299" in problems
    assert "10 s clip latency (median): MARGINAL, its confidence interval still straddles the target" in problems
    assert "1 engine build(s) failed (19 of 20 succeeded)" in problems
    assert "Engine builds succeeded 95% (19 of 20)." in english


def test_header_environment_and_settings_come_from_the_context_columns(ko_report) -> None:
    text = ko_report.markdown.read_text(encoding="utf-8")
    first_lines = text.splitlines()[:4]
    assert first_lines[0].startswith("📅 날짜: 2026년 11월 25일 (수)")
    assert first_lines[1].startswith("✍️ 작성자: 강철수 / ✅ 확인: ○")
    assert first_lines[2].startswith("🔬 진행 단계: 1단계 – 기초연구 단계")
    row = _e2e_rows()[5.0]
    for column in ("gpu_name", "driver_version", "cuda_runtime_version", "torch_version", "tensorrt_version"):
        assert row[column] in text
    assert "FastPitch int8/tensorrt (cuda:1)" in text
    assert "VALL-E X fp16/compile (cuda:0)" in text
    assert "5초 clip 목표: 지연 (median) ≤ 360.0 ms" in text


class _TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list]] = []
        self.open: list[str] = []
        self.unbalanced: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))
        if tag not in ("br", "hr"):
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.unbalanced.append(tag)


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_html_fragment_uses_only_the_allowed_tags(lang, ko_report, en_report) -> None:
    files = ko_report if lang == "ko" else en_report
    fragment = files.html.read_text(encoding="utf-8")
    parser = _TagCollector()
    parser.feed(fragment)
    parser.close()
    used = {tag for tag, _ in parser.tags}
    assert used <= ALLOWED_HTML_TAGS, used - ALLOWED_HTML_TAGS
    assert {"p", "br", "hr", "h3", "ol", "ul", "li", "sup"} <= used
    assert all(not attrs for _, attrs in parser.tags), "no attributes (styles, links) in the fragment"
    assert not parser.open
    assert not parser.unbalanced
    for forbidden in ("<script", "<style", "<table", "<img", "style=", "<a "):
        assert forbidden not in fragment.lower()


def test_html_fragment_holds_the_same_numbers_as_the_markdown(ko_report) -> None:
    markdown = ko_report.markdown.read_text(encoding="utf-8")
    fragment = ko_report.html.read_text(encoding="utf-8")
    for caption in ("표 1", "표 2"):
        for row in markdown_table(markdown, caption):
            assert "; ".join(f"{h}: {v}" for h, v in row.items()) in fragment


def test_plots_are_valid_pngs(ko_report) -> None:
    import matplotlib.image

    assert set(ko_report.plots) == {"stages", "latency", "memory"}
    markdown = ko_report.markdown.read_text(encoding="utf-8")
    for path in ko_report.plots.values():
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert data[12:16] == b"IHDR"
        image = matplotlib.image.imread(path)
        assert image.ndim == 3
        assert image.shape[0] > 100
        assert image.shape[1] > 100
        assert f"]({path.name})" in markdown


def _variant(tmp_path: Path, change) -> Path:
    rows = csv_rows(SAMPLE / "bench.csv")
    rows = change(rows) or rows
    return write_rows(tmp_path / "bench.csv", rows)


def test_extra_columns_are_ignored_and_missing_ones_are_named(tmp_path: Path) -> None:
    def add_column(rows):
        for r in rows:
            r["some_future_figure"] = "1.5"

    results = load_results(_variant(tmp_path, add_column))
    assert results.clip_lengths == [5.0, 10.0, 30.0]

    def drop_column(rows):
        return [{k: v for k, v in r.items() if k != "first_chunk_ms_p50"} for r in rows]

    with pytest.raises(InputError, match="missing column 'first_chunk_ms_p50'"):
        load_results(_variant(tmp_path, drop_column))


def test_a_bad_cell_is_named_with_file_line_and_column(tmp_path: Path) -> None:
    def corrupt(rows):
        next(r for r in rows if r["stage"] == "e2e")["peak_mem_gb"] = "lots"

    with pytest.raises(InputError, match=r"bench.csv: line \d+: column 'peak_mem_gb' is 'lots'"):
        load_results(_variant(tmp_path, corrupt))


def test_no_e2e_row_and_no_results_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no 'e2e' row"):
        load_results(_variant(tmp_path, lambda rows: [r for r in rows if r["stage"] != "e2e"]))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(InputError, match="without bench.csv"):
        load_results(empty_dir)
    with pytest.raises(InputError, match="no such results"):
        load_results(tmp_path / "missing")


def test_a_bad_summary_is_an_input_error(tmp_path: Path) -> None:
    shutil.copy(SAMPLE / "bench.csv", tmp_path / "bench.csv")
    (tmp_path / "summary.json").write_text(json.dumps({"verdicts": [{"clip_s": 5, "figure": "latency_ms",
                                                                      "verdict": "MAYBE", "target": 360}]}))
    with pytest.raises(InputError, match="verdict 'MAYBE' is not one of PASS, FAIL, MARGINAL, INVALID"):
        load_results(tmp_path)


def test_cpu_run_without_summary_shows_na_and_no_targets(tmp_path: Path) -> None:
    """A CPU run: no NVML memory, no utilisation, no engines, no summary: "n/a", never 0."""
    def cpu_run(rows):
        for r in rows:
            for column in ("peak_mem_gb", "torch_peak_reserved_gb", "gpu_busy_pct", "gpu_busy_period_s",
                           "sm_active_pct", "sm_occupancy_pct", "engine_build_attempted", "engine_build_succeeded",
                           "engine_cache_hits", "engine_build_s", "throughput_cps_sat", "saturating_concurrency"):
                if column in r:
                    r[column] = "n/a"
            r["gpu_name"] = "n/a"
            r["device"] = "cpu"

    results = load_results(_variant(tmp_path, cpu_run))
    assert results.verdicts == []
    files = write_report(results, tmp_path / "out", lang="en")
    text = files.markdown.read_text(encoding="utf-8")
    assert "No verdict summary (summary.json)" in text
    assert "Engine builds" not in text
    assert "No missed target" in text
    for row in markdown_table(text, "Table 1"):
        cells = list(row.values())
        assert cells[4] == cells[6] == cells[10] == cells[11] == cells[12] == cells[13] == cells[14] == "n/a"
        assert cells[2] != "n/a"
    assert files.plots["memory"].read_bytes().startswith(PNG_SIGNATURE)


def test_sm_active_pct_is_used_and_named_where_present(tmp_path: Path) -> None:
    def hopper(rows):
        for r in rows:
            if r["stage"] == "e2e":
                r["sm_active_pct"] = "55.25"

    files = write_report(load_results(_variant(tmp_path, hopper)), tmp_path / "out", lang="en")
    table = markdown_table(files.markdown.read_text(encoding="utf-8"), "Table 1")
    header = list(table[0])[13]
    assert "sm_active_pct" in header
    assert "gpu_busy" not in header
    assert all(list(r.values())[13] == "55.2" or list(r.values())[13] == "55.3" for r in table)


def test_cli_writes_the_report_and_refuses_an_unknown_language(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "iris_pipeline", "report", str(SAMPLE), "--lang", "en",
                           "--out", str(tmp_path), "--author", "Kim"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report.en.md").is_file()
    assert (tmp_path / "report.en.html").is_file()
    assert "Author: Kim" in (tmp_path / "report.en.md").read_text(encoding="utf-8")
    bad = subprocess.run([sys.executable, "-m", "iris_pipeline", "report", str(SAMPLE), "--lang", "fr",
                          "--out", str(tmp_path / "fr")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == ["error: --lang 'fr': not a report language; allowed: ko, en"]
    assert not (tmp_path / "fr").exists()


def test_reads_the_gates_the_benchmark_writes(tmp_path: Path) -> None:
    """The summary format of iris_pipeline.benchmark (Verdict.as_dict under "gates") loads as is."""
    verdicts = pytest.importorskip("iris_pipeline.benchmark.verdicts")
    gates = verdicts.gates_for(_clip_targets(), 5.0)
    found = [
        verdicts.judge_time(next(g for g in gates if g.figure == "latency_ms"), [300.0 + i for i in range(30)]),
        verdicts.judge_memory(next(g for g in gates if g.figure == "peak_mem_gb"), None, False, "NVML not found"),
        verdicts.judge_throughput(next(g for g in gates if g.figure == "throughput_cps"), 2.0, None),
    ]
    shutil.copy(SAMPLE / "bench.csv", tmp_path / "bench.csv")
    (tmp_path / "summary.json").write_text(json.dumps({"format": "iris-bench-summary/1",
                                                       "verdict": verdicts.overall(found),
                                                       "gates": [v.as_dict() for v in found]}))
    results = load_results(tmp_path)
    assert [(v.figure, v.verdict, v.op) for v in results.verdicts] == [
        ("latency_ms", "PASS", "<="), ("peak_mem_gb", "INVALID", "<="), ("throughput_cps", "FAIL", ">=")]
    target_cps = _clip_targets().throughput_cps
    assert results.target(5.0, "throughput_cps") == target_cps
    text = write_report(results, tmp_path / "out", lang="en").markdown.read_text(encoding="utf-8")
    assert "5 s clip memory (peak): cannot be decided (INVALID) — unavailable: NVML not found" in text
    assert f"5 s clip throughput: measured 2.00 clips/s, target ≥ {target_cps:.2f} clips/s (rate_sat) → missed." in text


def _clip_targets():
    from iris_pipeline.config import load_targets

    return load_targets().for_clip(5.0)
