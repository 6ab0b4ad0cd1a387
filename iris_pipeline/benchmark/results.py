"""From measurements to files: bench.csv and throughput.csv rows, bench.json, verdicts, summary.json
(formats: schema.py).

bench.json:
    {"format": "iris-bench/1", "context": {...}, "settings": {...}, "config": {...}, "placement": {...},
     "notes": [...], "engines": {...}, "build_memory": {...},
     "clips": [{"clip_s", "n_runs", "n_warmup",
                "latency_ms" | "first_chunk_ms" | "encode_ms": {"n", "confidence", "mean", "p50", ..., "ci_high"},
                "rtf", "stages": {name: {"n_runs", stats...}}, "cold_stage_ms": {...first warm-up...},
                "throughput": {"c1_cps", "sat_cps", "saturating_concurrency", "phases": [...], "note"},
                "memory": {"peak_mem_gb", "mem_method", "reason", "torch_peak_reserved_gb", "per_device"},
                "utilisation": {"gpu_busy_pct", "gpu_busy_period_s", "sample_period_s", "sm_active_pct",
                                "sm_occupancy_pct", "gpm_reason"},
                "runs": [{"index", "seed", "latency_ms", "first_chunk_ms", "stage_ms", "encode_ms", ...}],
                "warmup_runs": [...]}],
     "rows": [the bench.csv rows], "scheduler": the configured tts scheduler,
     "throughput_rows": [the throughput.csv rows without the context]}
summary.json:
    {"format": "iris-bench-summary/1", "verdict": "PASS|FAIL|INVALID", "counts": {...},
     "rules": "...", "gates": [Verdict.as_dict() ...], "targets_file", "gpu", "targets_key",
     "settings": {...}, "seeds": {...}, "notes": [...], "context": {...}, "files": {...}}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from iris_pipeline.benchmark import schema, verdicts
from iris_pipeline.benchmark.runner import ClipMeasurement
from iris_pipeline.benchmark.session import BenchResult
from iris_pipeline.metrics import Summary, append_history, write_csv, write_json

RULES = verdicts.__doc__


def clip_summaries(result: BenchResult, clip: ClipMeasurement) -> dict[str, Summary | None]:
    s = result.resolved.settings
    return {figure: clip.figure_summary(figure, s.n_boot, s.seed, s.confidence)
            for figure in ("latency_ms", "first_chunk_ms", "encode_ms")}


def _memory(clip: ClipMeasurement) -> dict[str, Any]:
    nv = clip.nvml_all
    return {"peak_mem_gb": nv.peak_mem_gb if nv.available else math.nan, "peak_host_mem_gb": clip.peak_host_mem_gb,
            "mem_method": nv.mem_method if nv.available else "unavailable",
            "reason": nv.reason, "torch_peak_reserved_gb": clip.torch_peak_reserved_gb,
            "per_device": nv.peak_mem_gb_per_device, "baseline_gb_per_device": nv.baseline_gb_per_device}


def _utilisation(clip: ClipMeasurement) -> dict[str, Any]:
    nv = clip.nvml_runs
    return {"gpu_busy_pct": nv.gpu_busy_pct, "gpu_busy_period_s": nv.driver_busy_period_s,
            "sample_period_s": nv.sample_period_s, "n_samples": nv.n_samples, "window_s": nv.window_s,
            "sm_active_pct": nv.sm_active_pct, "sm_occupancy_pct": nv.sm_occupancy_pct,
            "gpm_reason": nv.gpm_reason, "reason": nv.reason}


def _throughput(clip: ClipMeasurement) -> dict[str, Any]:
    c1 = clip.phase(1)
    sat = clip.phase(clip.saturating_concurrency)
    return {"c1_cps": c1.rate_cps if c1 else math.nan, "sat_cps": sat.rate_cps if sat else math.nan,
            "saturating_concurrency": clip.saturating_concurrency, "phases": [p.as_dict() for p in clip.phases],
            "note": clip.ramp_note}


def _engine_cells(result: BenchResult) -> dict[str, Any]:
    total = result.engines.get("total") if result.engines.get("available") else None
    if total is None:
        return {"engine_build_attempted": math.nan, "engine_build_succeeded": math.nan,
                "engine_cache_hits": math.nan, "engine_build_s": math.nan}
    return {"engine_build_attempted": int(total["attempts"]), "engine_build_succeeded": int(total["successes"]),
            "engine_cache_hits": int(total["hits"]), "engine_build_s": float(total["build_seconds"])}


def _stage_samples(result: BenchResult, clip: ClipMeasurement) -> dict[str, list[float]]:
    """Per-run times of every stage of the config (empty where it did not run in the measured runs,
    e.g. RVC with a cached voice) and of any other timed region (vallex_prompt, speech_mel)."""
    measured = clip.stage_samples()
    names = [n for n in result.config.get("stages", []) if n in schema.STAGE_NAMES]
    names += [n for n in measured if n not in names]
    return {n: measured.get(n, []) for n in names}


def csv_rows(result: BenchResult) -> list[dict[str, Any]]:
    """One e2e row and one row per stage, per clip length; every row carries the context."""
    s = result.resolved.settings
    rows = []
    for clip in result.clips:
        stats = clip_summaries(result, clip)
        latency = stats["latency_ms"]
        mem, util, thr = _memory(clip), _utilisation(clip), _throughput(clip)
        e2e: dict[str, Any] = {"clip_s": clip.clip_s, "stage": schema.E2E, "n_runs": len(clip.runs)}
        e2e.update(schema.stat_cells("latency_ms", latency))
        e2e.update(schema.stat_cells("stage_ms", None))
        e2e.update(schema.stat_cells("first_chunk_ms", stats["first_chunk_ms"]))
        e2e.update({
            "encode_ms_p50": stats["encode_ms"].p50 if stats["encode_ms"] else math.nan,
            "rtf": latency.p50 / 1e3 / clip.clip_s if latency else math.nan,
            "throughput_cps_c1": thr["c1_cps"], "throughput_cps_sat": thr["sat_cps"],
            "saturating_concurrency": thr["saturating_concurrency"],
            "peak_mem_gb": mem["peak_mem_gb"], "mem_method": mem["mem_method"],
            "torch_peak_reserved_gb": mem["torch_peak_reserved_gb"],
            "peak_host_mem_gb": clip.peak_host_mem_gb,
            "gpu_busy_pct": util["gpu_busy_pct"], "gpu_busy_period_s": util["gpu_busy_period_s"],
            "sm_active_pct": util["sm_active_pct"], "sm_occupancy_pct": util["sm_occupancy_pct"],
        })
        e2e.update(_engine_cells(result))
        rows.append(e2e)
        for stage, samples in _stage_samples(result, clip).items():
            summary = (Summary.from_samples(samples, n_boot=s.n_boot, seed=s.seed, confidence=s.confidence)
                       if samples else None)
            row: dict[str, Any] = {"clip_s": clip.clip_s, "stage": stage, "n_runs": len(samples)}
            row.update(schema.stat_cells("latency_ms", None))
            row.update(schema.stat_cells("stage_ms", summary))
            row.update(schema.stat_cells("first_chunk_ms", None))
            row.update(dict.fromkeys(schema.E2E_FIGURES, math.nan))
            rows.append(row)
    columns = schema.csv_columns(list(result.context))
    return [{c: {**row, **result.context}.get(c, math.nan) for c in columns} for row in rows]


def throughput_rows(result: BenchResult, context: bool = True) -> list[dict[str, Any]]:
    """throughput.csv: per clip length and concurrency, the configured scheduler's phase and, beside
    it, each other scheduler's (`--schedulers`); every row carries the context unless `context` is False."""
    measured = [(result.scheduler, clip.clip_s, clip.phases) for clip in result.clips]
    measured += [(other.scheduler, other.clip_s, other.phases) for other in result.other_schedulers]
    order = list(dict.fromkeys(name for name, _, _ in measured))
    rows = [{"clip_s": clip_s, "scheduler": name, "concurrency": p.concurrency, "clips_per_s": p.rate_cps,
             "p50_ms": p.latency_percentile(50), "p99_ms": p.latency_percentile(99), "completed": p.counted,
             "valid": p.valid, "source": p.source}
            for name, clip_s, phases in measured for p in phases]
    rows.sort(key=lambda r: (r["clip_s"], r["concurrency"], order.index(r["scheduler"])))
    if not context:
        return rows
    columns = schema.throughput_columns(list(result.context))
    return [{c: {**row, **result.context}.get(c, math.nan) for c in columns} for row in rows]


def evaluate(result: BenchResult, targets: Any) -> list[verdicts.Verdict]:
    """Every gate of the targets file (for this GPU) at every measured clip length. MARGINAL verdicts
    carry the policy: the settings' `marginal` where given, else the targets file's."""
    s = result.resolved.settings
    policy = s.marginal or targets.marginal
    out: list[verdicts.Verdict] = []
    for clip in result.clips:
        gates = verdicts.gates_for(targets.for_clip(clip.clip_s, result.gpu_name), clip.clip_s, s.statistics,
                                   s.confidence)
        for gate in gates:
            if gate.figure in ("latency_ms", "first_chunk_ms"):
                samples = [getattr(r, gate.figure) for r in clip.runs]
                out.append(verdicts.judge_time(gate, samples, n_boot=s.n_boot, seed=s.seed, policy=policy))
            elif gate.figure == "peak_mem_gb":
                nv = clip.nvml_all
                out.append(verdicts.judge_memory(gate, nv.peak_mem_gb, nv.available, nv.reason))
            elif gate.figure == "throughput_cps":
                out.append(_judge_throughput(gate, clip, s, policy))
    return out


def _judge_throughput(gate: verdicts.Gate, clip: ClipMeasurement, s: Any, policy: str) -> verdicts.Verdict:
    if not s.throughput:
        return verdicts.judge_throughput(gate, None, "throughput phase switched off (--no-throughput)")
    phase = clip.phase(1 if gate.statistic == "rate_c1" else clip.saturating_concurrency)
    if phase is None:
        return verdicts.judge_throughput(gate, None, "no throughput phase ran")
    return verdicts.judge_throughput(gate, phase.rate_cps, None if phase.valid else phase.why_invalid,
                                     phase.rate_interval(s.n_boot, s.seed, gate.confidence), policy)


def bench_json(result: BenchResult, rows: list[dict[str, Any]]) -> dict[str, Any]:
    clips = []
    s = result.resolved.settings
    for clip in result.clips:
        stats = clip_summaries(result, clip)
        stages = {}
        for stage, samples in _stage_samples(result, clip).items():
            summary = (Summary.from_samples(samples, n_boot=s.n_boot, seed=s.seed, confidence=s.confidence)
                       if samples else None)
            stages[stage] = {"n_runs": len(samples), **(schema.summary_dict(summary) or {})}
        clips.append({
            "clip_s": clip.clip_s, "n_runs": len(clip.runs), "n_warmup": len(clip.warmup),
            **{figure: schema.summary_dict(summary) for figure, summary in stats.items()},
            "rtf": stats["latency_ms"].p50 / 1e3 / clip.clip_s if stats["latency_ms"] else None,
            "stages": stages,
            "cold_stage_ms": clip.warmup[0].stage_ms if clip.warmup else None,
            "throughput": _throughput(clip), "memory": _memory(clip), "utilisation": _utilisation(clip),
            "runs": [r.as_dict() for r in clip.runs], "warmup_runs": [r.as_dict() for r in clip.warmup],
        })
    return {"format": schema.BENCH_JSON_FORMAT, "context": result.context, "settings": result.resolved.as_dict(),
            "config": result.config, "placement": result.placement, "notes": result.notes,
            "engines": result.engines, "build_memory": result.build_nvml.as_dict(),
            "started_utc": result.started_utc, "duration_s": result.duration_s, "clips": clips, "rows": rows,
            "scheduler": result.scheduler, "throughput_rows": throughput_rows(result, context=False)}


def summary_json(result: BenchResult, found: list[verdicts.Verdict], targets_file: str,
                 files: dict[str, str]) -> dict[str, Any]:
    counts = {v: sum(1 for x in found if x.verdict == v)
              for v in (verdicts.PASS, verdicts.FAIL, verdicts.MARGINAL, verdicts.INVALID)}
    s = result.resolved.settings
    return {
        "format": schema.SUMMARY_FORMAT, "verdict": verdicts.overall(found), "counts": counts,
        "rules": " ".join((RULES or "").split()), "gates": [v.as_dict() for v in found],
        "targets_file": targets_file, "gpu": result.gpu_name or "n/a",
        "settings": result.resolved.as_dict(), "config": result.config,
        "seeds": {"run_seed": s.seed, "bootstrap_seed": s.seed, "n_boot": s.n_boot,
                  "reference_seed": s.seed if s.reference is None else None,
                  "pipeline_seed": result.config.get("seed")},
        "notes": result.notes, "context": result.context, "files": files,
    }


def write_outputs(result: BenchResult, found: list[verdicts.Verdict], out_dir: Path, targets_file: str,
                  history: Path | None = None) -> dict[str, Path]:
    """bench.csv, throughput.csv, bench.json and summary.json in `out_dir` (each written atomically);
    rows appended to `history` when given."""
    out_dir = Path(out_dir)
    rows = csv_rows(result)
    columns = schema.csv_columns(list(result.context))
    paths = {"csv": out_dir / schema.BENCH_CSV, "throughput": out_dir / schema.THROUGHPUT_CSV,
             "json": out_dir / schema.BENCH_JSON, "summary": out_dir / schema.SUMMARY_JSON}
    write_csv(paths["csv"], rows, columns)
    write_csv(paths["throughput"], throughput_rows(result), schema.throughput_columns(list(result.context)))
    write_json(paths["json"], bench_json(result, rows))
    files = {k: str(p) for k, p in paths.items()}
    if history is not None:
        append_history(history, rows)
        paths["history"] = Path(history)
        files["history"] = str(history)
    write_json(paths["summary"], summary_json(result, found, targets_file, files))
    return paths
