"""Verdicts that can be trusted: each gate names its statistic and confidence, and says when it
cannot be decided instead of passing.

Rules (one gate = one figure at one clip length against one target):

- Time figures (`latency_ms`, `first_chunk_ms`), "<= target", over the measured runs:
  - statistic `median` (default): valid from `min_samples_for_percentile(50, confidence)` runs (5 at
    95 %). Bootstrap CI of the median (percentile bootstrap, seeded, `n_boot` resamples):
    PASS when the CI's upper bound <= target (confirmed); FAIL when the point estimate > target
    (the note says whether the CI's lower bound is above the target too, i.e. a confirmed miss);
    otherwise (point <= target < CI upper) the result is MARGINAL: PASS with the note "marginal"
    under the default policy `marginal="pass"`, INVALID (needs more runs) under `marginal="invalid"`.
  - statistic `p90` / `p95` / `p99`: fewer runs than `min_samples_for_percentile(q, confidence)`
    (29 / 59 / 299 at 95 %) -> INVALID, with the reason and the count needed, never a pass. Else the
    distribution-free upper confidence bound of the percentile (an order statistic) plays the part
    of the CI's upper bound above, and the sample percentile the point estimate.
- `peak_mem_gb` "<= target": the NVML peak over the measured window (statistic `peak`, no
  sampling confidence: it is a maximum). NVML unavailable -> INVALID with NVML's reason.
- `throughput_cps` ">= target": the steady-state rate at the saturating concurrency (statistic
  `rate_sat`, or `rate_c1`). Not measured, or a phase shorter than its minimum -> INVALID.

The overall verdict is FAIL if any gate fails, else INVALID if any gate is invalid, else PASS.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from iris_pipeline.metrics import bootstrap_median_ci, min_samples_for_percentile, percentile_upper_bound

PASS, FAIL, INVALID = "PASS", "FAIL", "INVALID"
TIME_STATISTICS = {"median": 50, "p90": 90, "p95": 95, "p99": 99}
THROUGHPUT_STATISTICS = ("rate_sat", "rate_c1")
DEFAULT_STATISTIC = {"latency_ms": "median", "first_chunk_ms": "median", "peak_mem_gb": "peak",
                     "throughput_cps": "rate_sat"}
UNITS = {"latency_ms": "ms", "first_chunk_ms": "ms", "peak_mem_gb": "GB", "throughput_cps": "clips/s"}
Marginal = Literal["pass", "invalid"]


@dataclass(frozen=True)
class Gate:
    figure: str
    clip_s: float
    target: float
    statistic: str
    comparison: str  # "<=" or ">="
    confidence: float = 0.95


@dataclass(frozen=True)
class Verdict:
    figure: str
    clip_s: float
    statistic: str
    confidence: float | None
    comparison: str
    target: float
    measured: float | None  # the point estimate (None: not measured)
    verdict: str  # PASS / FAIL / INVALID
    reason: str
    n: int
    needed: int | None = None  # runs a valid verdict needs (INVALID for too few runs)
    bound: float | None = None  # the confidence bound used (CI upper of the median, percentile UCB)
    ci_low: float | None = None
    ci_high: float | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def message(self, gpu: str | None = None) -> str:
        """One line: figure, statistic, measured value, target, clip length, GPU, verdict and why."""
        unit = UNITS.get(self.figure, "")
        measured = "n/a" if self.measured is None or math.isnan(self.measured) else f"{self.measured:.4g} {unit}"
        where = f"clip {self.clip_s:g} s" + (f" on {gpu}" if gpu else "")
        return (f"{self.verdict}: {self.figure} ({self.statistic}) = {measured}, target {self.comparison} "
                f"{self.target:g} {unit}, {where}: {self.reason}")


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def judge_time(gate: Gate, samples: Sequence[float], *, n_boot: int = 2000, seed: int = 0,
               marginal: Marginal = "pass") -> Verdict:
    """A "<= target" gate on a time figure from its per-run samples (see the module docstring)."""
    if gate.statistic not in TIME_STATISTICS:
        raise ValueError(f"statistic {gate.statistic!r} for {gate.figure}; allowed: {', '.join(TIME_STATISTICS)}")
    values = np.asarray([v for v in samples if _finite(v)], dtype=np.float64)
    q = TIME_STATISTICS[gate.statistic]
    needed = min_samples_for_percentile(q, gate.confidence)
    common = dict(figure=gate.figure, clip_s=gate.clip_s, statistic=gate.statistic, confidence=gate.confidence,
                  comparison=gate.comparison, target=gate.target, n=int(values.size))
    if values.size < needed:
        point = float(np.percentile(values, q)) if values.size else None
        return Verdict(**common, measured=point, verdict=INVALID, needed=needed,
                       reason=f"{values.size} runs cannot support a {gate.statistic} claim at "
                              f"{gate.confidence:.0%} confidence; it needs >= {needed}")
    point = float(np.percentile(values, q))
    if q == 50:
        low, high = bootstrap_median_ci(values, n_boot=n_boot, seed=seed, confidence=gate.confidence)
        bound, how = high, f"{gate.confidence:.0%} bootstrap CI of the median [{low:.4g}, {high:.4g}]"
    else:
        low = math.nan
        high = bound = percentile_upper_bound(values, q, gate.confidence)
        how = f"{gate.confidence:.0%} upper confidence bound of {gate.statistic} {bound:.4g}"
    common.update(measured=point, bound=bound, ci_low=low if _finite(low) else None, ci_high=high)
    if point > gate.target:
        confirmed = _finite(low) and low > gate.target
        note = "confirmed: the whole CI is above the target" if confirmed else "the CI reaches below the target"
        return Verdict(**common, verdict=FAIL, note=note,
                       reason=f"measured {point:.4g} > target {gate.target:g} ({how})")
    if bound <= gate.target:
        return Verdict(**common, verdict=PASS, reason=f"{how} <= target {gate.target:g}")
    reason = f"point {point:.4g} <= target {gate.target:g} but {how} reaches above it"
    if marginal == "invalid":
        return Verdict(**common, verdict=INVALID, reason=f"{reason}; more runs needed to decide",
                       needed=None, note="marginal")
    return Verdict(**common, verdict=PASS, reason=reason, note="marginal: not confirmed at this confidence")


def judge_memory(gate: Gate, peak_gb: float | None, available: bool, why_unavailable: str | None) -> Verdict:
    common = dict(figure=gate.figure, clip_s=gate.clip_s, statistic=gate.statistic, confidence=None,
                  comparison=gate.comparison, target=gate.target, n=1 if available else 0)
    if not available or not _finite(peak_gb):
        return Verdict(**common, measured=None, verdict=INVALID,
                       reason=f"unavailable: {why_unavailable or 'no NVML memory sample'}; a memory gate never "
                              "passes without a measurement")
    if peak_gb <= gate.target:
        return Verdict(**common, measured=peak_gb, verdict=PASS,
                       reason=f"NVML peak {peak_gb:.4g} GB <= target {gate.target:g} GB")
    return Verdict(**common, measured=peak_gb, verdict=FAIL,
                   reason=f"NVML peak {peak_gb:.4g} GB > target {gate.target:g} GB")


def judge_throughput(gate: Gate, rate: float | None, why_invalid: str | None) -> Verdict:
    common = dict(figure=gate.figure, clip_s=gate.clip_s, statistic=gate.statistic, confidence=None,
                  comparison=gate.comparison, target=gate.target, n=1 if _finite(rate) else 0)
    if not _finite(rate) or why_invalid:
        return Verdict(**common, measured=rate if _finite(rate) else None, verdict=INVALID,
                       reason=why_invalid or "throughput not measured")
    if rate >= gate.target:
        return Verdict(**common, measured=rate, verdict=PASS, reason=f"{rate:.4g} clips/s >= target {gate.target:g}")
    return Verdict(**common, measured=rate, verdict=FAIL, reason=f"{rate:.4g} clips/s < target {gate.target:g}")


def gates_for(clip_targets: Any, clip_s: float, statistics: dict[str, str] | None = None,
              confidence: float = 0.95) -> list[Gate]:
    """The gates of one clip length from a `config.ClipTargets` (None targets are not gated)."""
    if clip_targets is None:
        return []
    chosen = {**DEFAULT_STATISTIC, **(statistics or {})}
    gates = []
    for figure in ("latency_ms", "first_chunk_ms", "peak_mem_gb", "throughput_cps"):
        target = getattr(clip_targets, figure, None)
        if target is None:
            continue
        comparison = ">=" if figure == "throughput_cps" else "<="
        gates.append(Gate(figure, float(clip_s), float(target), chosen[figure], comparison, confidence))
    return gates


def check_statistic_choice(statistics: dict[str, str]) -> None:
    """Raise ValueError naming the figure / statistic that cannot be chosen."""
    allowed = {"latency_ms": tuple(TIME_STATISTICS), "first_chunk_ms": tuple(TIME_STATISTICS),
               "peak_mem_gb": ("peak",), "throughput_cps": THROUGHPUT_STATISTICS}
    for figure, stat in statistics.items():
        if figure not in allowed:
            raise ValueError(f"statistic for {figure!r}: not a gated figure; allowed: {', '.join(allowed)}")
        if stat not in allowed[figure]:
            raise ValueError(f"statistic {stat!r} for {figure}: allowed: {', '.join(allowed[figure])}")


def overall(verdicts: Iterable[Verdict]) -> str:
    found = {v.verdict for v in verdicts}
    if FAIL in found:
        return FAIL
    if INVALID in found:
        return INVALID
    return PASS
