"""The benchmark's file formats: column names of bench.csv and the format tags of the JSON files.

bench.csv has one row per clip length and stage plus one `e2e` row per clip length, all with the
same header (a figure that does not apply to a row is "n/a"):

    clip_s, stage, n_runs,
    latency_ms_{mean,p50,p90,p95,p99,min,max,std,ci_low,ci_high}      e2e rows
    stage_ms_{...same...}                                              stage rows
    first_chunk_ms_{...same...}                                        e2e rows
    encode_ms_p50, rtf, throughput_cps_c1, throughput_cps_sat, saturating_concurrency,
    peak_mem_gb, mem_method, torch_peak_reserved_gb, peak_host_mem_gb, gpu_busy_pct, gpu_busy_period_s,
    sm_active_pct, sm_occupancy_pct, engine_build_attempted, engine_build_succeeded,
    engine_cache_hits, engine_build_s                                  e2e rows
    <every key of metrics.capture_context(config)>                     all rows

throughput.csv has one row per clip length, concurrency and tts scheduler (the configured one, and
those of `--schedulers` measured at the same concurrencies):

    clip_s, scheduler, concurrency, clips_per_s, p50_ms, p99_ms, completed, valid, source
    <every key of metrics.capture_context(config)>

Every column is defined in docs/figures.md (tests/unit/bench/test_figures_doc.py checks it).
`ci_low`/`ci_high` are the bounds of the bootstrap confidence interval of the median (95 % unless
the settings say otherwise). Other consumers (`iris report`, the Allure attachments) read these
names; change them only together with those readers and bump the format tags.
"""

from __future__ import annotations

import math
from typing import Any

from iris_pipeline.metrics import Summary

CSV_FORMAT = "iris-bench-csv/1"
BENCH_JSON_FORMAT = "iris-bench/1"
SUMMARY_FORMAT = "iris-bench-summary/1"

BENCH_CSV = "bench.csv"
BENCH_JSON = "bench.json"
SUMMARY_JSON = "summary.json"
THROUGHPUT_CSV = "throughput.csv"

E2E = "e2e"
STAT_SUFFIXES: tuple[str, ...] = ("mean", "p50", "p90", "p95", "p99", "min", "max", "std", "ci_low", "ci_high")
# stage names as RenderResult.stage_ms has them; "vallex_prompt" and "speech_mel" appear only where they ran
STAGE_NAMES: tuple[str, ...] = ("rvc", "vallex_prompt", "vallex", "fastpitch", "speech_mel", "wav2lip")

E2E_FIGURES: tuple[str, ...] = (
    "encode_ms_p50", "rtf", "throughput_cps_c1", "throughput_cps_sat", "saturating_concurrency",
    "peak_mem_gb", "mem_method", "torch_peak_reserved_gb", "peak_host_mem_gb", "gpu_busy_pct", "gpu_busy_period_s",
    "sm_active_pct", "sm_occupancy_pct", "engine_build_attempted", "engine_build_succeeded",
    "engine_cache_hits", "engine_build_s",
)


THROUGHPUT_FIGURES: tuple[str, ...] = (
    "clip_s", "scheduler", "concurrency", "clips_per_s", "p50_ms", "p99_ms", "completed", "valid", "source",
)


def throughput_columns(context_keys: list[str]) -> list[str]:
    """The full header of throughput.csv (context columns last)."""
    return [*THROUGHPUT_FIGURES, *(k for k in context_keys if k not in THROUGHPUT_FIGURES)]


def stat_columns(figure: str) -> list[str]:
    return [f"{figure}_{s}" for s in STAT_SUFFIXES]


def csv_columns(context_keys: list[str]) -> list[str]:
    """The full header of bench.csv (context columns last, in capture_context's order)."""
    columns = ["clip_s", "stage", "n_runs", *stat_columns("latency_ms"), *stat_columns("stage_ms"),
               *stat_columns("first_chunk_ms"), *E2E_FIGURES]
    return columns + [k for k in context_keys if k not in columns]


def stat_cells(figure: str, summary: Summary | None) -> dict[str, Any]:
    """`<figure>_mean ... <figure>_ci_high` of a Summary (NaN for every cell without samples)."""
    if summary is None:
        return {c: math.nan for c in stat_columns(figure)}
    values = {"mean": summary.mean, "p50": summary.p50, "p90": summary.p90, "p95": summary.p95,
              "p99": summary.p99, "min": summary.min, "max": summary.max, "std": summary.std,
              "ci_low": summary.median_ci_low, "ci_high": summary.median_ci_high}
    return {f"{figure}_{k}": values[k] for k in STAT_SUFFIXES}


def summary_dict(summary: Summary | None) -> dict[str, Any] | None:
    """The same statistics for bench.json (keys without the figure prefix, plus n and confidence)."""
    if summary is None:
        return None
    cells = stat_cells("x", summary)
    out: dict[str, Any] = {"n": summary.n, "confidence": summary.confidence}
    out.update({k[2:]: v for k, v in cells.items()})
    return out
