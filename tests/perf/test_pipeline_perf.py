"""GPU perf gates per clip length (--clip-lengths): median latency, first-chunk latency, peak memory
(NVML) and throughput against the targets file (--targets), judged by the rules of
iris_pipeline.benchmark.verdicts (named statistic and confidence; too few runs -> INVALID, never a
pass). Every figure goes into the benchmark's extra_info and into Allure as excluded parameters; a
failed gate reads "PERF GATE <verdict>: <figure> (<statistic>) = <measured>, target <op> <target>,
clip <L> s on <GPU>: <why>"."""

from __future__ import annotations

import math

import pytest

from iris_pipeline.benchmark import verdicts
from iris_pipeline.benchmark.runner import phase_from_runs, ramp, time_job
from iris_pipeline.metrics import Summary, reset_torch_peaks, torch_peak_gb

try:  # Allure parameters where allure-pytest is installed (the test extra)
    from tests.perf.allure_support import record_figures
except ImportError:  # pragma: no cover - without allure the figures stay in extra_info only
    def record_figures(figures):
        return None

pytestmark = pytest.mark.gpu
PERF_GATE = "PERF GATE"


def _gate(targets, session, clip_s, figure, resolved):
    s = resolved.settings
    clip_targets = targets.for_clip(clip_s, session.context.get("gpu_name"))
    gates = [g for g in verdicts.gates_for(clip_targets, clip_s, s.statistics, s.confidence) if g.figure == figure]
    if not gates:
        pytest.skip(f"no {figure} target for clip {clip_s:g} s in the targets file")
    return gates[0]


def _measure(clip_s, session, resolved, benchmark=None):
    """Warm-up + measured runs of one clip length, once per session (through pytest-benchmark when given)."""
    if clip_s in session.runs:
        return session.runs[clip_s]
    target, sampler = session.target, session.sampler
    warmup = resolved.warmup
    samples = []

    def start_window():
        # the NVML / allocator window opens with the first measured round (after the warm-up rounds)
        if len(samples) == warmup:
            sampler.reset()
            reset_torch_peaks(target.devices)

    def one_run():
        sample, _ = time_job(target, target.make_job(clip_s, resolved.settings.seed + len(samples)),
                             index=len(samples) - warmup)
        samples.append(sample)

    if benchmark is not None:
        benchmark.pedantic(one_run, setup=start_window, rounds=resolved.runs, warmup_rounds=warmup, iterations=1)
    else:
        for _ in range(warmup + resolved.runs):
            start_window()
            one_run()
    session.runs[clip_s] = (samples[warmup:], sampler.summary(), torch_peak_gb("reserved", target.devices))
    return session.runs[clip_s]


def _figures(clip_s, measured, nvml, torch_reserved, resolved):
    s = resolved.settings
    out = {"clip_s": clip_s, "n_runs": len(measured)}
    for figure in ("latency_ms", "first_chunk_ms"):
        summary = Summary.from_samples([getattr(r, figure) for r in measured], n_boot=s.n_boot, seed=s.seed,
                                       confidence=s.confidence)
        out.update(summary.as_dict(figure))
    stages: dict[str, list[float]] = {}
    for r in measured:
        for name, ms in r.stage_ms.items():
            stages.setdefault(name, []).append(ms)
    out.update({f"{name}_ms_p50": float(sorted(v)[len(v) // 2]) for name, v in stages.items()})
    out["rtf"] = out["latency_ms_p50"] / 1e3 / clip_s
    out.update(peak_mem_gb=nvml.peak_mem_gb, mem_method=nvml.mem_method if nvml.available else "unavailable",
               torch_peak_reserved_gb=torch_reserved, gpu_busy_pct=nvml.gpu_busy_pct,
               gpu_busy_period_s=nvml.driver_busy_period_s, sm_active_pct=nvml.sm_active_pct,
               sm_occupancy_pct=nvml.sm_occupancy_pct)
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def _check(verdict, session):
    assert verdict.verdict == verdicts.PASS, f"{PERF_GATE} {verdict.message(session.gpu)}"


def _record(benchmark, figures):
    if benchmark is not None:
        benchmark.extra_info.update(figures)
    record_figures(figures)


def test_median_latency(clip_s, perf_session, perf_settings, targets, synced_benchmark):
    gate = _gate(targets, perf_session, clip_s, "latency_ms", perf_settings)
    measured, nvml, reserved = _measure(clip_s, perf_session, perf_settings, synced_benchmark)
    _record(synced_benchmark, _figures(clip_s, measured, nvml, reserved, perf_settings))
    s = perf_settings.settings
    _check(verdicts.judge_time(gate, [r.latency_ms for r in measured], n_boot=s.n_boot, seed=s.seed,
                               marginal=s.marginal), perf_session)


def test_first_chunk_latency(clip_s, perf_session, perf_settings, targets):
    gate = _gate(targets, perf_session, clip_s, "first_chunk_ms", perf_settings)
    measured, nvml, reserved = _measure(clip_s, perf_session, perf_settings)
    _record(None, _figures(clip_s, measured, nvml, reserved, perf_settings))
    s = perf_settings.settings
    _check(verdicts.judge_time(gate, [r.first_chunk_ms for r in measured], n_boot=s.n_boot, seed=s.seed,
                               marginal=s.marginal), perf_session)


def test_peak_memory(clip_s, perf_session, perf_settings, targets):
    gate = _gate(targets, perf_session, clip_s, "peak_mem_gb", perf_settings)
    measured, nvml, reserved = _measure(clip_s, perf_session, perf_settings)
    _record(None, _figures(clip_s, measured, nvml, reserved, perf_settings))
    _check(verdicts.judge_memory(gate, nvml.peak_mem_gb, nvml.available, nvml.reason), perf_session)


def test_throughput(clip_s, perf_session, perf_settings, targets, synced_benchmark):
    gate = _gate(targets, perf_session, clip_s, "throughput_cps", perf_settings)
    measured, _, _ = _measure(clip_s, perf_session, perf_settings)
    first = phase_from_runs(measured, perf_settings.phase_min_seconds, perf_settings.phase_min_clips)
    found = {}

    def run_ramp():
        found["ramp"] = ramp(perf_session.target, clip_s, perf_settings, seed=50_000, first=first)

    synced_benchmark.pedantic(run_ramp, rounds=1, iterations=1)
    phases, saturating, note = found["ramp"]
    perf_session.throughput[clip_s] = found["ramp"]
    by_c = {p.concurrency: p for p in phases}
    sat = by_c[saturating]
    _record(synced_benchmark, {"clip_s": clip_s, "throughput_cps_c1": by_c[1].rate_cps,
                               "throughput_cps_sat": sat.rate_cps, "saturating_concurrency": saturating,
                               "ramp_note": note})
    synced_benchmark.extra_info["phases"] = [p.as_dict() for p in phases]
    phase = by_c[1] if gate.statistic == "rate_c1" else sat
    _check(verdicts.judge_throughput(gate, phase.rate_cps, None if phase.valid else phase.why_invalid),
           perf_session)
