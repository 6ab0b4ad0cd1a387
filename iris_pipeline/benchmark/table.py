"""The rich tables printed at the end of a benchmark: figures per clip length, throughput per
concurrency and scheduler, verdicts per target."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from iris_pipeline.benchmark import schema
from iris_pipeline.benchmark.verdicts import FAIL, INVALID, MARGINAL, PASS, UNITS, Verdict

STYLE = {PASS: "green", FAIL: "bold red", INVALID: "yellow", MARGINAL: "magenta"}


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def figures_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Benchmark figures (e2e)", show_lines=False)
    for name in ("clip s", "runs", "latency p50 ms", "95% CI", "p90 ms", "first chunk p50 ms", "rtf",
                 "thr c1 /s", "thr sat /s (c)", "peak mem GB", "host RSS GB", "gpu busy %", "sm active %"):
        table.add_column(name, justify="right")
    for row in rows:
        if row["stage"] != schema.E2E:
            continue
        table.add_row(
            fmt(row["clip_s"]), fmt(row["n_runs"]), fmt(row["latency_ms_p50"]),
            f"[{fmt(row['latency_ms_ci_low'])}, {fmt(row['latency_ms_ci_high'])}]", fmt(row["latency_ms_p90"]),
            fmt(row["first_chunk_ms_p50"]), fmt(row["rtf"]), fmt(row["throughput_cps_c1"]),
            f"{fmt(row['throughput_cps_sat'])} ({fmt(row['saturating_concurrency'])})",
            f"{fmt(row['peak_mem_gb'])} ({row['mem_method']})", fmt(row["peak_host_mem_gb"]), fmt(row["gpu_busy_pct"]), fmt(row["sm_active_pct"]),
        )
    return table


def throughput_table(rows: list[dict[str, Any]]) -> Table:
    """throughput.csv as a table: the schedulers of one clip length and concurrency on adjacent lines."""
    table = Table(title="Throughput per concurrency (closed loops)")
    for name in ("clip s", "scheduler", "c", "clips/s", "p50 ms", "p99 ms", "completed", "valid"):
        table.add_column(name, justify="left" if name == "scheduler" else "right")
    for row in rows:
        table.add_row(fmt(row["clip_s"]), row["scheduler"], fmt(row["concurrency"]), fmt(row["clips_per_s"]),
                      fmt(row["p50_ms"]), fmt(row["p99_ms"]), fmt(row["completed"]), "yes" if row["valid"] else "no")
    return table


def verdict_table(found: list[Verdict], gpu: str | None) -> Table:
    table = Table(title=f"Targets ({gpu or 'no GPU'})")
    for name in ("clip s", "figure", "statistic", "measured", "target", "verdict", "reason"):
        table.add_column(name, justify="left" if name in ("figure", "reason") else "right", overflow="fold")
    for v in found:
        unit = UNITS.get(v.figure, "")
        table.add_row(fmt(v.clip_s), v.figure, v.statistic, f"{fmt(v.measured)} {unit}",
                      f"{v.comparison} {fmt(v.target)} {unit}", f"[{STYLE[v.verdict]}]{v.label}[/]",
                      v.reason + (f" [{v.note}]" if v.note else ""))
    return table


def print_report(rows: list[dict[str, Any]], found: list[Verdict], gpu: str | None, notes: list[str],
                 overall: str, console: Console | None = None,
                 throughput: list[dict[str, Any]] | None = None) -> None:
    console = console or Console()
    console.print(figures_table(rows))
    if throughput:
        console.print(throughput_table(throughput))
    console.print(verdict_table(found, gpu))
    for note in notes:
        console.print(f"[dim]note: {note}[/]")
    console.print(f"overall verdict: [{STYLE[overall]}]{overall}[/]")
