"""Load a benchmark results directory (bench.csv + summary.json) into what a report needs.

Layout written by the benchmark runner (docs/figures.md defines each figure):

- `bench.csv`: one row per clip length and stage, plus one `stage == "e2e"` row per clip length.
  Columns: `clip_s`, `stage`, `n_runs`; the row's time figure (`latency_ms` on e2e rows, `stage_ms`
  on stage rows) as `<figure>_mean/_p50/_p90/_p95/_p99/_min/_max/_std/_ci_low/_ci_high`; e2e rows also
  `first_chunk_ms_*`, throughput, memory, utilisation and `engine_build_*` columns; then the context
  columns of `iris_pipeline.metrics.capture_context`. Missing values are "n/a".
- `throughput.csv` (optional beside the CSV; `iris_pipeline.benchmark.schema`): one row per clip
  length, concurrency and tts scheduler: `clip_s`, `scheduler`, `concurrency`, `clips_per_s`,
  `p50_ms`, `p99_ms`, `completed`, `valid`, `source`, then the context columns.
- `summary.json` (optional beside the CSV; `iris_pipeline.benchmark.results.summary_json`):
  `{"format": "iris-bench-summary/1", "verdict": PASS|FAIL|INVALID, "gates": [{"figure", "clip_s",
  "statistic", "confidence", "comparison", "target", "measured", "verdict", "reason", "n", "needed",
  "note", ...}, ...], "targets_file", "gpu", ...}`.

The parser ignores columns and keys it does not use, and is strict about those it does: a missing
column or a cell that is not a number (or "n/a") is an `InputError` naming the file, row and column.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iris_pipeline.benchmark.schema import THROUGHPUT_CSV
from iris_pipeline.errors import InputError
from iris_pipeline.metrics.records import NA, parse_number, read_csv

CSV_NAME = "bench.csv"
SUMMARY_NAME = "summary.json"
E2E = "e2e"
STAGE_ORDER = ("rvc", "vallex_prompt", "vallex", "fastpitch", "speech_mel", "wav2lip")
VERDICTS = ("PASS", "FAIL", "MARGINAL", "INVALID")
# Gated figures, in the order the targets file lists them.
TARGET_FIGURES = ("latency_ms", "first_chunk_ms", "throughput_cps", "peak_mem_gb")
TARGET_OPS = {"latency_ms": "<=", "first_chunk_ms": "<=", "throughput_cps": ">=", "peak_mem_gb": "<="}
# statistics the results table shows next to the targets (latency p50, NVML peak, saturated rate)
TABLE_STATISTICS = ("median", "peak", "rate_sat")

_STATS = ("mean", "p50", "p90", "p95", "p99", "min", "max", "std", "ci_low", "ci_high")
# `metrics.stats.Summary.as_dict` names the interval median_ci_low/high; accept either spelling.
_STAT_ALIASES = {"ci_low": ("ci_low", "median_ci_low"), "ci_high": ("ci_high", "median_ci_high")}
_E2E_NUMBERS = (
    "encode_ms_p50", "rtf", "throughput_cps_c1", "throughput_cps_sat", "saturating_concurrency",
    "peak_mem_gb", "torch_peak_reserved_gb", "gpu_busy_pct", "gpu_busy_period_s", "sm_active_pct",
    "sm_occupancy_pct", "engine_build_attempted", "engine_build_succeeded", "engine_cache_hits",
    "engine_build_s",
)
_E2E_TEXT = ("mem_method",)
_CONTEXT_KEYS = (
    "timestamp_utc", "git_commit", "git_dirty", "gpu_name", "gpu_count", "driver_version",
    "cuda_driver_version", "cuda_runtime_version", "torch_version", "tensorrt_version", "host",
    "cpu_model", "config_hash", "size", "device",
)


@dataclass(frozen=True)
class StageRow:
    clip_s: float
    stage: str
    n_runs: int
    stage_ms: dict[str, float]


@dataclass(frozen=True)
class E2ERow:
    clip_s: float
    n_runs: int
    latency_ms: dict[str, float]
    first_chunk_ms: dict[str, float]
    numbers: dict[str, float]
    texts: dict[str, str]


@dataclass(frozen=True)
class Verdict:
    clip_s: float
    figure: str
    verdict: str
    target: float
    measured: float
    statistic: str
    confidence: float
    op: str
    reason: str
    note: str = ""


@dataclass(frozen=True)
class ThroughputRow:
    clip_s: float
    scheduler: str
    concurrency: int
    clips_per_s: float
    p50_ms: float
    p99_ms: float
    completed: int
    valid: bool


@dataclass
class BenchResults:
    """Everything a report shows, as read from the files (nothing computed that is not there)."""

    csv_path: Path
    summary_path: Path | None
    e2e: list[E2ERow]
    stages: list[StageRow]
    context: dict[str, str]
    stage_settings: dict[str, dict[str, str]]
    verdicts: list[Verdict] = field(default_factory=list)
    overall_verdict: str | None = None
    targets_source: str | None = None
    throughput: list[ThroughputRow] = field(default_factory=list)  # throughput.csv, when beside the CSV

    @property
    def clip_lengths(self) -> list[float]:
        return [row.clip_s for row in self.e2e]

    def stage_names(self) -> list[str]:
        names = list(dict.fromkeys(r.stage for r in self.stages))
        known = [s for s in STAGE_ORDER if s in names]
        return known + [s for s in names if s not in known]

    def verdicts_for(self, clip_s: float) -> list[Verdict]:
        return [v for v in self.verdicts if v.clip_s == clip_s]

    def gate(self, clip_s: float, figure: str) -> Verdict | None:
        """The gate of `figure` at `clip_s`: the one on the table's statistic (median / peak /
        saturated rate) where there are several, else the first."""
        found = [v for v in self.verdicts if v.clip_s == clip_s and v.figure == figure]
        for v in found:
            if v.statistic in TABLE_STATISTICS:
                return v
        return found[0] if found else None

    def target(self, clip_s: float, figure: str) -> float:
        """The target of `figure` at `clip_s` from the summary (NaN when not gated)."""
        gate = self.gate(clip_s, figure)
        return gate.target if gate is not None else math.nan


def _cell(row: dict[str, str], names: tuple[str, ...], where: str) -> str:
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    raise InputError(f"{where}: missing column {names[0]!r}")


def _number(row: dict[str, str], names: tuple[str, ...] | str, where: str) -> float:
    names = (names,) if isinstance(names, str) else names
    text = _cell(row, names, where).strip()
    try:
        return parse_number(text)
    except ValueError:
        raise InputError(f"{where}: column {names[0]!r} is {text!r}, not a number or {NA!r}") from None


def _stats(row: dict[str, str], figure: str, where: str) -> dict[str, float]:
    return {
        stat: _number(row, tuple(f"{figure}_{a}" for a in _STAT_ALIASES.get(stat, (stat,))), where)
        for stat in _STATS
    }


def _count(row: dict[str, str], where: str) -> int:
    value = _number(row, "n_runs", where)
    if math.isnan(value) or value < 0 or value != int(value):
        raise InputError(f"{where}: column 'n_runs' must be a whole number >= 0, got {row['n_runs']!r}")
    return int(value)


def _parse_rows(csv_path: Path, rows: list[dict[str, str]]) -> tuple[list[E2ERow], list[StageRow]]:
    e2e: list[E2ERow] = []
    stages: list[StageRow] = []
    for index, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{csv_path}: line {index}"
        clip_s = _number(row, "clip_s", where)
        if not clip_s > 0:
            raise InputError(f"{where}: column 'clip_s' must be a clip length > 0 s, got {row['clip_s']!r}")
        stage = _cell(row, ("stage",), where).strip()
        if not stage:
            raise InputError(f"{where}: column 'stage' is empty")
        n_runs = _count(row, where)
        if stage == E2E:
            e2e.append(E2ERow(
                clip_s=clip_s, n_runs=n_runs,
                latency_ms=_stats(row, "latency_ms", where),
                first_chunk_ms=_stats(row, "first_chunk_ms", where),
                numbers={name: _number(row, name, where) for name in _E2E_NUMBERS},
                texts={name: _cell(row, (name,), where) for name in _E2E_TEXT},
            ))
        else:
            stages.append(StageRow(clip_s=clip_s, stage=stage, n_runs=n_runs,
                                   stage_ms=_stats(row, "stage_ms", where)))
    if not e2e:
        raise InputError(f"{csv_path}: no 'e2e' row: the file holds no end-to-end result")
    clips = [r.clip_s for r in e2e]
    if len(set(clips)) != len(clips):
        raise InputError(f"{csv_path}: more than one 'e2e' row for the same clip length")
    e2e.sort(key=lambda r: r.clip_s)
    return e2e, stages


def _context(csv_path: Path, rows: list[dict[str, str]]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Context columns of the first e2e row (every row of one run carries the same context)."""
    first = next(r for r in rows if r.get("stage", "").strip() == E2E)
    where = f"{csv_path}: line {rows.index(first) + 2}"
    context = {key: _cell(first, (key,), where) for key in _CONTEXT_KEYS}
    settings: dict[str, dict[str, str]] = {}
    for column, value in first.items():
        for part in ("precision", "backend", "device"):
            suffix = f"_{part}"
            if column and column.endswith(suffix) and column[: -len(suffix)]:
                stage = column[: -len(suffix)]
                settings.setdefault(stage, {})[part] = value
    # only stages with a full (precision, backend) pair; keeps unrelated *_device columns out
    settings = {s: v for s, v in settings.items() if "precision" in v and "backend" in v}
    return context, settings


def _float(value: Any, where: str, key: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"{where}: {key!r} must be a number or null, got {value!r}")
    try:
        return parse_number(value) if isinstance(value, str) else float(value)
    except ValueError:
        raise InputError(f"{where}: {key!r} must be a number or null, got {value!r}") from None


def _parse_verdict(item: Any, where: str) -> Verdict:
    if not isinstance(item, dict):
        raise InputError(f"{where}: each verdict must be an object, got {type(item).__name__}")
    for key in ("clip_s", "figure", "verdict", "target"):
        if key not in item:
            raise InputError(f"{where}: verdict without {key!r}")
    verdict = str(item["verdict"]).upper()
    if verdict not in VERDICTS:
        raise InputError(f"{where}: verdict {item['verdict']!r} is not one of {', '.join(VERDICTS)}")
    figure = str(item["figure"])
    confidence = _float(item.get("confidence"), where, "confidence")
    return Verdict(
        clip_s=_float(item["clip_s"], where, "clip_s"),
        figure=figure,
        verdict=verdict,
        target=_float(item["target"], where, "target"),
        measured=_float(item.get("measured"), where, "measured"),
        statistic=str(item.get("statistic") or NA),
        confidence=confidence,
        op=str(item.get("comparison") or item.get("op") or TARGET_OPS.get(figure, "")),
        reason=str(item.get("reason") or ""),
        note=str(item.get("note") or ""),
    )


def load_summary(path: Path) -> tuple[list[Verdict], str | None, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the summary ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: the summary must be a JSON object")
    key = "gates" if "gates" in data else "verdicts"
    items = data.get(key, [])
    if not isinstance(items, list):
        raise InputError(f"{path}: {key!r} must be a list")
    verdicts = [_parse_verdict(item, f"{path}: {key}[{i}]") for i, item in enumerate(items)]
    overall = data.get("verdict")
    source = data.get("targets_source") or data.get("targets_file")
    return verdicts, (str(overall).upper() if overall else None), (str(source) if source else None)


def _whole(row: dict[str, str], name: str, where: str) -> int:
    value = _number(row, name, where)
    if math.isnan(value) or value < 0 or value != int(value):
        raise InputError(f"{where}: column {name!r} must be a whole number >= 0, got {row[name]!r}")
    return int(value)


def load_throughput(path: Path) -> list[ThroughputRow]:
    """throughput.csv's rows (strict about the columns it uses, as the bench.csv parser)."""
    try:
        rows = read_csv(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the throughput CSV ({exc})") from None
    out = []
    for index, row in enumerate(rows, start=2):
        where = f"{path}: line {index}"
        valid = _cell(row, ("valid",), where).strip()
        if valid not in ("true", "false"):
            raise InputError(f"{where}: column 'valid' must be true or false, got {valid!r}")
        out.append(ThroughputRow(
            clip_s=_number(row, "clip_s", where), scheduler=_cell(row, ("scheduler",), where).strip(),
            concurrency=_whole(row, "concurrency", where), clips_per_s=_number(row, "clips_per_s", where),
            p50_ms=_number(row, "p50_ms", where), p99_ms=_number(row, "p99_ms", where),
            completed=_whole(row, "completed", where), valid=valid == "true"))
    return out


def locate(path: str | Path) -> tuple[Path, Path | None]:
    """(bench.csv, summary.json or None) for a results directory or a CSV file."""
    path = Path(path)
    if path.is_dir():
        csv_path = path / CSV_NAME
        if not csv_path.is_file():
            raise InputError(f"{path}: results directory without {CSV_NAME}")
    elif path.is_file():
        csv_path = path
    else:
        raise InputError(f"{path}: no such results directory or CSV file")
    summary = csv_path.parent / SUMMARY_NAME
    return csv_path, (summary if summary.is_file() else None)


def load_results(path: str | Path) -> BenchResults:
    """Read a results directory (or its bench.csv; summary.json beside it is used when present)."""
    csv_path, summary_path = locate(path)
    try:
        rows = read_csv(csv_path)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{csv_path}: cannot read the results CSV ({exc})") from None
    if not rows:
        raise InputError(f"{csv_path}: the results CSV has no rows")
    e2e, stages = _parse_rows(csv_path, rows)
    context, settings = _context(csv_path, rows)
    verdicts, overall, source = load_summary(summary_path) if summary_path else ([], None, None)
    throughput_path = csv_path.parent / THROUGHPUT_CSV
    return BenchResults(csv_path=csv_path, summary_path=summary_path, e2e=e2e, stages=stages,
                        context=context, stage_settings=settings, verdicts=verdicts,
                        overall_verdict=overall, targets_source=source,
                        throughput=load_throughput(throughput_path) if throughput_path.is_file() else [])
