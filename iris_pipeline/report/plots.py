"""The report's plots as PNG files: latency by stage, latency vs clip length, memory vs clip length.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, so no global state and no display
needed). Labels are English in every report language: matplotlib's default font has no Hangul.
A figure the run did not measure ("n/a") is left out of the plot, never drawn as 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from iris_pipeline.metrics.records import atomic_open
from iris_pipeline.report.results import BenchResults
from iris_pipeline.report.texts import STAGE_LABELS

PLOT_FILES = {"stages": "latency_by_stage.png", "latency": "latency_vs_clip.png", "memory": "memory_vs_clip.png"}
_DPI = 120


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=_DPI)
    return path


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def plot_stage_latency(results: BenchResults, path: Path) -> Path:
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    names = results.stage_names()
    by_key = {(r.clip_s, r.stage): r.stage_ms["p50"] for r in results.stages}
    clips = results.clip_lengths
    width = 0.8 / max(1, len(clips))
    x = np.arange(len(names))
    for i, clip in enumerate(clips):
        offset = (i - (len(clips) - 1) / 2) * width
        bars = [(x[j] + offset, by_key.get((clip, n), math.nan)) for j, n in enumerate(names)]
        bars = [(pos, h) for pos, h in bars if not math.isnan(h)]
        ax.bar([pos for pos, _ in bars], [h for _, h in bars], width, label=f"{clip:g} s clip")
    if not names:
        _no_data(ax, "no per-stage rows in the results")
    ax.set_xticks(x, [STAGE_LABELS.get(n, n) for n in names])
    ax.set_ylabel("stage time p50 (ms)")
    ax.set_title("Latency by stage (p50, summed per clip)")
    if clips and names:
        ax.legend()
    return _save(fig, path)


def _series(values: list[float], clips: list[float]) -> tuple[list[float], list[float]]:
    pairs = [(c, v) for c, v in zip(clips, values, strict=True) if not math.isnan(v)]
    return [c for c, _ in pairs], [v for _, v in pairs]


def plot_latency_vs_clip(results: BenchResults, path: Path) -> Path:
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    clips = results.clip_lengths
    rows = results.e2e
    p50 = [r.latency_ms["p50"] for r in rows]
    xs, ys = _series(p50, clips)
    if xs:
        low = [r.latency_ms["ci_low"] for r in rows if not math.isnan(r.latency_ms["p50"])]
        high = [r.latency_ms["ci_high"] for r in rows if not math.isnan(r.latency_ms["p50"])]
        err = np.array([[max(0.0, y - lo) if not math.isnan(lo) else 0.0 for y, lo in zip(ys, low, strict=True)],
                        [max(0.0, hi - y) if not math.isnan(hi) else 0.0 for y, hi in zip(ys, high, strict=True)]])
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, label="latency p50 (95% CI)")
    fx, fy = _series([r.first_chunk_ms["p50"] for r in rows], clips)
    if fx:
        ax.plot(fx, fy, marker="s", label="first chunk p50")
    for figure, style in (("latency_ms", "v"), ("first_chunk_ms", "^")):
        tx, ty = _series([results.target(c, figure) for c in clips], clips)
        if tx:
            ax.plot(tx, ty, linestyle="--", marker=style, alpha=0.7, label=f"target {figure}")
    if not xs and not fx:
        _no_data(ax, "latency: n/a")
    ax.set_xlabel("clip length (s)")
    ax.set_ylabel("ms")
    ax.set_title("Latency vs clip length")
    if xs or fx:
        ax.legend()
    return _save(fig, path)


def plot_memory_vs_clip(results: BenchResults, path: Path) -> Path:
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    clips = results.clip_lengths
    drawn = False
    for column, marker in (("peak_mem_gb", "o"), ("torch_peak_reserved_gb", "s")):
        xs, ys = _series([r.numbers[column] for r in results.e2e], clips)
        if xs:
            ax.plot(xs, ys, marker=marker, label=column)
            drawn = True
    tx, ty = _series([results.target(c, "peak_mem_gb") for c in clips], clips)
    if tx and drawn:
        ax.plot(tx, ty, linestyle="--", marker="v", alpha=0.7, label="target peak_mem_gb")
    if not drawn:
        _no_data(ax, "peak memory: n/a (no NVML or allocator figures in this run)")
    else:
        ax.legend()
    ax.set_xlabel("clip length (s)")
    ax.set_ylabel("GB")
    ax.set_title("Peak memory vs clip length")
    return _save(fig, path)


def write_plots(results: BenchResults, out_dir: Path) -> dict[str, Path]:
    """All plots into `out_dir`; returns {"stages"|"latency"|"memory": path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "stages": plot_stage_latency(results, out_dir / PLOT_FILES["stages"]),
        "latency": plot_latency_vs_clip(results, out_dir / PLOT_FILES["latency"]),
        "memory": plot_memory_vs_clip(results, out_dir / PLOT_FILES["memory"]),
    }
