"""The measurement loop: per clip length, warm-up, measured runs, throughput phases, memory.

It drives any object with the `Pipeline` API (`submit(job) -> handle` with `chunks()` and
`result()`), so the suite measures exactly what users call. Per clip length L:

1. warm-up runs (not counted);
2. measured runs, one job at a time: `latency_ms` = submit -> last chunk (speech + frames) on the
   host, devices synchronised; `first_chunk_ms` = submit -> first chunk on the host; stage times
   from `RenderResult.stage_ms`; the first `encode_runs` results are encoded to mp4 (`encode_ms`,
   outside the latency). While a time gate's interval still straddles its target (`more_runs`),
   more runs follow, half the planned count at a time, up to `max_runs`;
3. throughput: closed loops of c clients (each submits its next job when its last one finished),
   c = 1, 2, 4, ... until the rate improves by less than `saturation_gain` (or `max_concurrency`),
   or exactly the `concurrencies` of the settings when they are given (the fastest one saturates).
   The first c completions of a phase fill the pipeline and are not counted; the rate is the
   completions after them over the time they took, and their latencies (submit -> whole result)
   give the phase's p50 / p99. The measured runs are themselves the c = 1 loop: where they meet
   the phase minimum, c = 1 is taken from them (runs / summed latency). Another setting (e.g. the
   other tts scheduler) is measured at the same concurrencies by `throughput_phases`;
4. memory and utilisation, one window per L (`open_window`): before L's warm-up the previous
   window's caches are released (the pipeline's own caches where it offers `release_caches()`,
   Python garbage, the torch allocator's unused blocks); after the warm-up the NVML, allocator and
   host (RSS) peaks are reset. So `peak_mem_gb` of L is what L's measured runs and throughput phases
   needed on top of the loaded pipeline and L's warm-up, never a leftover of an earlier L. Busy / SM
   figures cover the measured runs.
"""

from __future__ import annotations

import gc
import math
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iris_pipeline.benchmark.hostmem import HostMemorySampler
from iris_pipeline.benchmark.settings import Resolved
from iris_pipeline.metrics import NvmlSampler, Summary, reset_torch_peaks, synchronize, torch_peak_gb

Progress = Callable[[str], None]
MoreRuns = Callable[[list["RunSample"]], bool]  # True while the runs so far leave a gate undecided


@dataclass
class BenchTarget:
    """What is measured: a prepared pipeline and how to make the job of one run."""

    pipeline: Any
    make_job: Callable[[float, int], Any]  # (clip seconds, run seed) -> Job
    devices: list[torch.device] = field(default_factory=list)  # synchronised around each run


@dataclass
class RunSample:
    index: int
    seed: int
    latency_ms: float
    first_chunk_ms: float
    stage_ms: dict[str, float]
    chunks: int
    pipeline_latency_ms: float  # the pipeline's own figure (from its handle), for cross-checking
    encode_ms: float = math.nan
    speech_s: float = math.nan
    frames: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Phase:
    """One throughput phase: `concurrency` clients in a closed loop."""

    concurrency: int
    rate_cps: float
    counted: int
    window_s: float
    discarded: int
    valid: bool
    why_invalid: str | None
    source: str = "closed loop"  # or "latency runs" (c = 1 taken from the measured runs)
    gaps_s: list[float] = field(default_factory=list)  # the counted completions' spacing; sums to window_s
    latencies_ms: list[float] = field(default_factory=list)  # the counted jobs', submit -> whole result

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def latency_percentile(self, q: float) -> float:
        """The q-th percentile of the counted jobs' latencies (numpy's linear interpolation, as every
        percentile of the benchmark); NaN without counted jobs."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else math.nan

    def rate_interval(self, n_boot: int, seed: int, confidence: float) -> tuple[float, float] | None:
        """Bootstrap interval of the rate: resample the completion gaps (rate = 1 / their mean);
        None with fewer than 2 gaps."""
        gaps = np.asarray(self.gaps_s, dtype=np.float64)
        if gaps.size < 2 or not np.all(gaps > 0):
            return None
        rng = np.random.default_rng(seed)
        means = gaps[rng.integers(0, gaps.size, size=(n_boot, gaps.size))].mean(axis=1)
        tail = (1 - confidence) / 2 * 100
        low_mean, high_mean = np.percentile(means, [tail, 100 - tail])
        return float(1 / high_mean), float(1 / low_mean)


@dataclass
class ClipMeasurement:
    clip_s: float
    runs: list[RunSample]
    warmup: list[RunSample]
    phases: list[Phase]
    saturating_concurrency: int | None
    ramp_note: str | None
    nvml_runs: Any  # NvmlSummary over the measured runs
    nvml_all: Any  # NvmlSummary over runs + throughput phases
    torch_peak_reserved_gb: float
    encode_error: str | None = None
    peak_host_mem_gb: float = math.nan  # peak RSS of the window (hostmem.py)
    planned_runs: int = 0  # the runs planned before any sequential extension

    def figure_summary(self, figure: str, n_boot: int, seed: int, confidence: float) -> Summary | None:
        values = [getattr(r, figure) for r in self.runs if not math.isnan(getattr(r, figure))]
        return Summary.from_samples(values, n_boot=n_boot, seed=seed, confidence=confidence) if values else None

    def stage_samples(self) -> dict[str, list[float]]:
        names: list[str] = []
        for r in self.runs:
            names += [n for n in r.stage_ms if n not in names]
        return {n: [r.stage_ms[n] for r in self.runs if n in r.stage_ms] for n in names}

    def phase(self, concurrency: int | None) -> Phase | None:
        return next((p for p in self.phases if p.concurrency == concurrency), None)


def time_job(target: BenchTarget, job: Any, index: int = 0) -> tuple[RunSample, Any]:
    """Run one job; latency from submit until its last chunk is on the host, device synchronised."""
    start = _synced_now(target)
    handle = target.pipeline.submit(job)
    first = math.nan
    chunks = []
    for chunk in handle.chunks():
        if math.isnan(first):
            first = time.perf_counter()
        chunks.append(chunk)
    end = _synced_now(target)
    # Pipeline API: chunks() hands each chunk out once; assemble() builds the clip from them
    result = handle.assemble(chunks) if hasattr(handle, "assemble") else handle.result()
    speech = getattr(result, "speech", None)
    frames = getattr(result, "frames", None)
    sample = RunSample(
        index=index, seed=int(getattr(job, "seed", 0)), latency_ms=(end - start) * 1e3,
        first_chunk_ms=(first - start) * 1e3, stage_ms=dict(result.stage_ms), chunks=int(result.chunks),
        pipeline_latency_ms=float(result.latency_ms),
        speech_s=float(speech.seconds) if speech is not None else math.nan,
        frames=int(frames.shape[0]) if frames is not None and frames.ndim else 0,
    )
    return sample, result


def _synced_now(target: BenchTarget) -> float:
    synchronize(target.devices or None)
    return time.perf_counter()


def encode_result(result: Any, directory: Path) -> float:
    """mp4 encoding of a result (frames + speech), in ms; not part of latency."""
    from iris_pipeline.video import write_mp4

    start = time.perf_counter()
    write_mp4(directory / "clip.mp4", result.frames, result.fps, result.speech)
    return (time.perf_counter() - start) * 1e3


def phase_seed(seed: int) -> int:
    """The first job seed of the throughput phases of a run seeded `seed` (their own range)."""
    return seed + 10_000


def throughput_phase(target: BenchTarget, clip_s: float, concurrency: int, min_seconds: float, min_clips: int,
                     max_seconds: float, seed: int) -> Phase:
    """`concurrency` clients each run jobs back to back until the phase's minimum is met."""
    lock = threading.Lock()
    done_at: list[float] = []
    latencies: list[float] = []  # in completion order, beside done_at
    errors: list[BaseException] = []
    stop = threading.Event()
    seeds = iter(range(seed, seed + 10**9))

    def client() -> None:
        while not stop.is_set():
            with lock:
                job_seed = next(seeds)
            try:
                submitted = time.perf_counter()
                target.pipeline.submit(target.make_job(clip_s, job_seed)).result()
            except BaseException as exc:  # noqa: BLE001 - reported by the phase
                with lock:
                    errors.append(exc)
                stop.set()
                return
            with lock:
                done_at.append(time.perf_counter())
                latencies.append((done_at[-1] - submitted) * 1e3)

    threads = [threading.Thread(target=client, name=f"iris-bench-client-{i}", daemon=True)
               for i in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    valid, why = True, None
    stamps: list[float] = []
    while True:
        time.sleep(0.002)
        with lock:
            stamps = list(done_at)
            finished_ms = list(latencies)
        if errors:
            break
        counted = len(stamps) - concurrency
        if counted >= 2 and (stamps[-1] - stamps[concurrency - 1] >= min_seconds or counted >= min_clips):
            break
        if time.perf_counter() - started > max_seconds:
            valid, why = False, (f"phase stopped after {max_seconds:g} s (phase_max_seconds) before its minimum "
                                 f"(>= {min_seconds:g} s or >= {min_clips} clips)")
            break
    stop.set()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    # the rate counts the completions after the fill up to the stop decision: those that landed while
    # the clients wound down are left out (the loop was no longer closed)
    counted = max(0, len(stamps) - concurrency)
    window_s = stamps[-1] - stamps[concurrency - 1] if counted else math.nan
    rate = counted / window_s if counted and window_s > 0 else math.nan
    gaps = [float(g) for g in np.diff(stamps[concurrency - 1:])] if counted else []
    return Phase(concurrency, rate, counted, window_s, min(len(stamps), concurrency), valid, why, gaps_s=gaps,
                 latencies_ms=finished_ms[concurrency:])


def phase_from_runs(runs: list[RunSample], min_seconds: float, min_clips: int) -> Phase | None:
    """The measured runs as the concurrency-1 phase, when they meet the phase minimum: they are a
    closed loop with one job in flight (each submitted when the previous finished). The window is
    the sum of their latencies: the gaps between runs (mp4 encoding, bookkeeping) are not the
    pipeline's time. None when the runs are too few or too short."""
    busy_s = sum(r.latency_ms for r in runs) / 1e3
    if len(runs) < 2 or not (busy_s >= min_seconds or len(runs) >= min_clips):
        return None
    return Phase(1, len(runs) / busy_s, len(runs), busy_s, 0, True, None, source="latency runs",
                 gaps_s=[r.latency_ms / 1e3 for r in runs], latencies_ms=[r.latency_ms for r in runs])


def ramp(target: BenchTarget, clip_s: float, resolved: Resolved, seed: int,
         progress: Progress | None = None, first: Phase | None = None) -> tuple[list[Phase], int | None, str | None]:
    """Concurrency 1, 2, 4, ... while the rate still improves by more than `saturation_gain`
    (`first`: an already measured concurrency-1 phase)."""
    s = resolved.settings
    phases: list[Phase] = []
    concurrency = 1
    best: Phase | None = None
    note = None
    while concurrency <= resolved.max_concurrency:
        if concurrency == 1 and first is not None:
            phase = first
        else:
            phase = _closed_loop(target, clip_s, resolved, concurrency, seed, progress)
        phases.append(phase)
        improved = best is None or (not math.isnan(phase.rate_cps)
                                    and phase.rate_cps > best.rate_cps * (1 + s.saturation_gain))
        if best is None or (not math.isnan(phase.rate_cps) and phase.rate_cps > best.rate_cps):
            best = phase
        if not improved:
            break
        concurrency *= 2
    else:
        note = (f"the rate still improved at max_concurrency {resolved.max_concurrency}: the saturating "
                "concurrency may be higher")
    return phases, (best.concurrency if best is not None else None), note


def fixed_levels(target: BenchTarget, clip_s: float, resolved: Resolved, seed: int, progress: Progress | None = None,
                 first: Phase | None = None) -> tuple[list[Phase], int | None, str | None]:
    """The phases at exactly `settings.concurrencies` (no ramp; `first`: an already measured
    concurrency-1 phase); the saturating concurrency is the fastest of them."""
    phases = [first if c == 1 and first is not None else _closed_loop(target, clip_s, resolved, c, seed, progress)
              for c in resolved.settings.concurrencies]
    best = max((p for p in phases if not math.isnan(p.rate_cps)), key=lambda p: p.rate_cps, default=None)
    return phases, (best.concurrency if best is not None else None), None


def throughput_phases(target: BenchTarget, clip_s: float, resolved: Resolved, concurrencies: list[int], seed: int,
                      progress: Progress | None = None) -> list[Phase]:
    """One closed-loop phase at each of `concurrencies`, no ramp: another setting measured at the
    concurrencies a ramp chose, with the ramp's job seeds (`seed` as given to `ramp`)."""
    return [_closed_loop(target, clip_s, resolved, c, seed, progress) for c in concurrencies]


def _closed_loop(target: BenchTarget, clip_s: float, resolved: Resolved, concurrency: int, seed: int,
                 progress: Progress | None) -> Phase:
    if progress:
        progress(f"clip {clip_s:g} s: throughput at concurrency {concurrency}")
    return throughput_phase(target, clip_s, concurrency, resolved.phase_min_seconds, resolved.phase_min_clips,
                            resolved.settings.phase_max_seconds, seed + 100_000 * concurrency)


def release_caches(target: BenchTarget) -> None:
    """Drop what an earlier window left cached: the pipeline's own caches (where it has
    `release_caches()`), Python garbage, and the torch allocator's unused blocks on its devices."""
    release = getattr(target.pipeline, "release_caches", None)
    if callable(release):
        release()
    gc.collect()
    for device in target.devices:
        if torch.device(device).type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.empty_cache()


def reset_peaks(target: BenchTarget, sampler: NvmlSampler, host: HostMemorySampler | None) -> None:
    """Open a measurement window: NVML, allocator and host peaks start again from now."""
    synchronize(target.devices or None)
    sampler.reset()
    reset_torch_peaks(target.devices or None)
    if host is not None:
        host.reset()


def measure_clip(target: BenchTarget, clip_s: float, resolved: Resolved, sampler: NvmlSampler,
                 progress: Progress | None = None, host: HostMemorySampler | None = None,
                 more_runs: MoreRuns | None = None) -> ClipMeasurement:
    s = resolved.settings
    release_caches(target)
    warmup: list[RunSample] = []
    for i in range(resolved.warmup):
        if progress:
            progress(f"clip {clip_s:g} s: warm-up {i + 1}/{resolved.warmup}")
        sample, _ = time_job(target, target.make_job(clip_s, s.seed + i), index=-1 - i)
        warmup.append(sample)
    reset_peaks(target, sampler, host)
    runs: list[RunSample] = []
    encode_error = None
    planned = resolved.runs
    with tempfile.TemporaryDirectory(prefix="iris-bench-encode-") as tmp:
        while len(runs) < planned:
            i = len(runs)
            if progress:
                progress(f"clip {clip_s:g} s: run {i + 1}/{planned}")
            sample, result = time_job(target, target.make_job(clip_s, s.seed + 1000 + i), index=i)
            if i < s.encode_runs and encode_error is None:
                try:
                    sample.encode_ms = encode_result(result, Path(tmp))
                except Exception as exc:  # a broken encoder must not lose the latency figures
                    encode_error = f"{type(exc).__name__}: {exc}"
            del result
            runs.append(sample)
            if len(runs) == planned and planned < resolved.max_runs and more_runs is not None and more_runs(runs):
                planned = min(resolved.max_runs, planned + max(1, resolved.runs // 2))
    nvml_runs = sampler.summary()
    phases: list[Phase] = []
    saturating, note = None, None
    if s.throughput:
        first = phase_from_runs(runs, resolved.phase_min_seconds, resolved.phase_min_clips)
        levels = fixed_levels if s.concurrencies else ramp
        phases, saturating, note = levels(target, clip_s, resolved, phase_seed(s.seed), progress, first)
    nvml_all = sampler.summary()
    return ClipMeasurement(clip_s=clip_s, runs=runs, warmup=warmup, phases=phases,
                           saturating_concurrency=saturating, ramp_note=note, nvml_runs=nvml_runs,
                           nvml_all=nvml_all, torch_peak_reserved_gb=torch_peak_gb("reserved", target.devices or None)
                           if target.devices else math.nan, encode_error=encode_error,
                           peak_host_mem_gb=host.peak_gb() if host is not None else math.nan,
                           planned_runs=resolved.runs)
