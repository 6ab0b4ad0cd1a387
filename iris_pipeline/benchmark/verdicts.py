"""Verdicts that can be trusted: each gate names its statistic and confidence, decides only when its
confidence interval is on one side of the target, and says when it cannot be decided instead of passing.

Rules (one gate = one figure at one clip length against one target):

- Time figures (`latency_ms`, `first_chunk_ms`), "<= target", over the measured runs:
  - statistic `median` (default): valid from `min_samples_for_percentile(50, confidence)` runs (5 at
    95 %). Bootstrap CI of the median (percentile bootstrap, seeded, `n_boot` resamples).
  - statistic `p90` / `p95` / `p99`: fewer runs than `min_samples_for_percentile(q, confidence)`
    (29 / 59 / 299 at 95 %) -> INVALID, with the reason and the count needed, never a pass. Else the
    distribution-free order-statistic bounds of the percentile (metrics.percentile_lower_bound /
    percentile_upper_bound) are its interval and the sample percentile its point estimate.
  - PASS when the interval's upper end <= target; FAIL when its lower end > target; otherwise the
    interval straddles the target: the benchmark takes more runs (sequentially, up to the settings'
    `max_runs`, see `needs_more_runs`), and what is still undecided there is MARGINAL.
- `throughput_cps` ">= target": the steady-state rate at the saturating concurrency (statistic
  `rate_sat`, or `rate_c1`) with a bootstrap interval over the phase's completion gaps: PASS when the
  interval's lower end >= target, FAIL when its upper end < target, else MARGINAL. Not measured, or a
  phase shorter than its minimum -> INVALID.
- `peak_mem_gb` "<= target": the NVML peak of the clip length's window (statistic `peak`, no
  sampling confidence: it is a maximum). NVML unavailable -> INVALID with NVML's reason.

MARGINAL is decided by the gate policy (`marginal:` in the targets file, `pass` or `fail`; default
`fail`), which the verdict line names: "MARGINAL (policy fail: counts as FAIL)".

The overall verdict is FAIL if any gate fails (MARGINAL under policy fail included), else INVALID if
any gate is invalid or there is no gate at all (nothing was checked), else PASS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from iris_pipeline.metrics import (
    bootstrap_median_ci,
    min_samples_for_percentile,
    percentile_lower_bound,
    percentile_upper_bound,
)

PASS, FAIL, INVALID, MARGINAL = "PASS", "FAIL", "INVALID", "MARGINAL"
TIME_STATISTICS = {"median": 50, "p90": 90, "p95": 95, "p99": 99}
THROUGHPUT_STATISTICS = ("rate_sat", "rate_c1")
DEFAULT_STATISTIC = {"latency_ms": "median", "first_chunk_ms": "median", "peak_mem_gb": "peak",
                     "throughput_cps": "rate_sat"}
UNITS = {"latency_ms": "ms", "first_chunk_ms": "ms", "peak_mem_gb": "GB", "throughput_cps": "clips/s"}
MarginalPolicy = Literal["pass", "fail"]
DEFAULT_MARGINAL_POLICY: MarginalPolicy = "fail"


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
    verdict: str  # PASS / FAIL / MARGINAL / INVALID
    reason: str
    n: int
    needed: int | None = None  # runs a valid verdict needs (INVALID for too few runs)
    bound: float | None = None  # the confidence bound used (CI upper of the median, percentile UCB)
    ci_low: float | None = None
    ci_high: float | None = None
    note: str | None = None
    policy: MarginalPolicy = DEFAULT_MARGINAL_POLICY  # what a MARGINAL verdict counts as

    @property
    def outcome(self) -> str:
        """PASS / FAIL / INVALID: MARGINAL resolved by the gate policy."""
        if self.verdict == MARGINAL:
            return FAIL if self.policy == "fail" else PASS
        return self.verdict

    @property
    def label(self) -> str:
        """The verdict as printed: MARGINAL names its policy and what it counts as."""
        if self.verdict == MARGINAL:
            return f"MARGINAL (policy {self.policy}: counts as {self.outcome})"
        return self.verdict

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outcome": self.outcome}

    def message(self, gpu: str | None = None) -> str:
        """One line: figure, statistic, measured value, target, clip length, GPU, verdict and why."""
        unit = UNITS.get(self.figure, "")
        measured = "n/a" if self.measured is None or math.isnan(self.measured) else f"{self.measured:.4g} {unit}"
        where = f"clip {self.clip_s:g} s" + (f" on {gpu}" if gpu else "")
        return (f"{self.label}: {self.figure} ({self.statistic}) = {measured}, target {self.comparison} "
                f"{self.target:g} {unit}, {where}: {self.reason}")


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def time_interval(gate: Gate, values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float, str]:
    """Point estimate, interval (low, high) and its description for a time gate's statistic."""
    q = TIME_STATISTICS[gate.statistic]
    point = float(np.percentile(values, q))
    if q == 50:
        low, high = bootstrap_median_ci(values, n_boot=n_boot, seed=seed, confidence=gate.confidence)
        return point, low, high, f"{gate.confidence:.0%} bootstrap CI of the median [{low:.4g}, {high:.4g}]"
    low = percentile_lower_bound(values, q, gate.confidence)
    high = percentile_upper_bound(values, q, gate.confidence)
    return point, low, high, (f"{gate.confidence:.0%} order-statistic bounds of {gate.statistic} "
                              f"[{low:.4g}, {high:.4g}]")


def _finite_values(samples: Sequence[float]) -> np.ndarray:
    return np.asarray([v for v in samples if _finite(v)], dtype=np.float64)


def needs_more_runs(gate: Gate, samples: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> bool:
    """True while a time gate cannot be decided from `samples`: too few runs for its statistic, or an
    interval that straddles the target (the benchmark then takes more runs, up to its cap)."""
    values = _finite_values(samples)
    if values.size < min_samples_for_percentile(TIME_STATISTICS[gate.statistic], gate.confidence):
        return True
    _, low, high, _ = time_interval(gate, values, n_boot, seed)
    return not (high <= gate.target or (_finite(low) and low > gate.target))


def judge_time(gate: Gate, samples: Sequence[float], *, n_boot: int = 2000, seed: int = 0,
               policy: MarginalPolicy = DEFAULT_MARGINAL_POLICY) -> Verdict:
    """A "<= target" gate on a time figure from its per-run samples (see the module docstring)."""
    if gate.statistic not in TIME_STATISTICS:
        raise ValueError(f"statistic {gate.statistic!r} for {gate.figure}; allowed: {', '.join(TIME_STATISTICS)}")
    values = _finite_values(samples)
    q = TIME_STATISTICS[gate.statistic]
    needed = min_samples_for_percentile(q, gate.confidence)
    common = dict(figure=gate.figure, clip_s=gate.clip_s, statistic=gate.statistic, confidence=gate.confidence,
                  comparison=gate.comparison, target=gate.target, n=int(values.size), policy=policy)
    if values.size < needed:
        point = float(np.percentile(values, q)) if values.size else None
        return Verdict(**common, measured=point, verdict=INVALID, needed=needed,
                       reason=f"{values.size} runs cannot support a {gate.statistic} claim at "
                              f"{gate.confidence:.0%} confidence; it needs >= {needed}")
    point, low, high, how = time_interval(gate, values, n_boot, seed)
    common.update(measured=point, bound=high, ci_low=low if _finite(low) else None, ci_high=high)
    if high <= gate.target:
        return Verdict(**common, verdict=PASS, reason=f"{how} <= target {gate.target:g}")
    if _finite(low) and low > gate.target:
        return Verdict(**common, verdict=FAIL, note="confirmed: the whole interval is above the target",
                       reason=f"measured {point:.4g} > target {gate.target:g} ({how})")
    return Verdict(**common, verdict=MARGINAL, note="undecided at the run cap",
                   reason=f"point {point:.4g}, {how} straddles the target {gate.target:g} after {values.size} runs")


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


def judge_throughput(gate: Gate, rate: float | None, why_invalid: str | None,
                     interval: tuple[float, float] | None = None,
                     policy: MarginalPolicy = DEFAULT_MARGINAL_POLICY) -> Verdict:
    """A ">= target" gate on a phase's rate, with its interval (None: a point without an interval,
    judged by the point alone)."""
    common = dict(figure=gate.figure, clip_s=gate.clip_s, statistic=gate.statistic,
                  confidence=gate.confidence if interval else None, comparison=gate.comparison, target=gate.target,
                  n=1 if _finite(rate) else 0, policy=policy)
    if not _finite(rate) or why_invalid:
        return Verdict(**common, measured=rate if _finite(rate) else None, verdict=INVALID,
                       reason=why_invalid or "throughput not measured")
    low, high = interval if interval else (rate, rate)
    common.update(measured=rate, ci_low=low, ci_high=high, bound=low)
    how = (f"{gate.confidence:.0%} bootstrap interval [{low:.4g}, {high:.4g}] clips/s" if interval
           else f"{rate:.4g} clips/s")
    if low >= gate.target:
        return Verdict(**common, verdict=PASS, reason=f"{how} >= target {gate.target:g}")
    if high < gate.target:
        return Verdict(**common, verdict=FAIL, reason=f"{how} < target {gate.target:g}")
    return Verdict(**common, verdict=MARGINAL, note="the interval straddles the target",
                   reason=f"rate {rate:.4g} clips/s, {how} straddles the target {gate.target:g}")


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


def undecided_rule(clip_targets: Any, clip_s: float, statistics: dict[str, str] | None, confidence: float,
                   n_boot: int, seed: int) -> Callable[[Sequence[Any]], bool] | None:
    """For the runner: given the runs so far (objects with the figures as attributes), is any time
    gate of this clip length still undecided? None when the clip length has no time gate."""
    gates = [g for g in gates_for(clip_targets, clip_s, statistics, confidence) if g.statistic in TIME_STATISTICS]
    if not gates:
        return None

    def undecided(runs: Sequence[Any]) -> bool:
        return any(needs_more_runs(g, [getattr(r, g.figure) for r in runs], n_boot=n_boot, seed=seed) for g in gates)

    return undecided


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
    """FAIL if any gate's outcome fails, else INVALID if any is invalid or there are no gates, else PASS."""
    found = {v.outcome for v in verdicts}
    if FAIL in found:
        return FAIL
    if INVALID in found or not found:
        return INVALID
    return PASS
