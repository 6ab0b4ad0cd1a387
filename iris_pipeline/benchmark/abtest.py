"""The A/B decision: is the head slower than the base? Paired log-ratios, a robust location, and a
confidence bound against a small threshold; plus the simulation that states its power.

Input: two equal-length sequences of end-to-end latencies in ms, `base[i]` and `head[i]` measured as
one interleaved pair (A B or B A, adjacent in time), so slow drift of the machine cancels in the pair.

Rule (`compare`):
  1. d_i = ln(head_i / base_i), one per pair (a ratio, so clip length and machine speed drop out);
  2. the slowdown estimate is the Hodges-Lehmann location of d (the median of all pairwise means
     (d_i + d_j) / 2, i <= j): `ratio` = exp(HL), the paired estimate of head / base;
  3. its confidence interval is the Wilcoxon signed-rank interval (order statistics of those means,
     exact null distribution): one-sided level 1 - `alpha` for the lower bound, so `ci` is the
     two-sided 1 - 2 `alpha` interval of the ratio;
  4. REGRESSION when the lower bound is above 1 + `min_slowdown` (the head is slower with confidence
     1 - alpha, by more than min_slowdown) and the estimated difference on the base's median is above
     `floor_ms` (sub-millisecond jitter of short clips never fails a change);
  5. fewer than MIN_PAIRS pairs, or unequal lengths: INVALID.

Why: latencies are skewed and carry outliers (a GC pause, another tenant). Log-ratios make the noise
near-symmetric; the Hodges-Lehmann estimator keeps ~95 % of the mean's efficiency on normal noise
yet a few outliers barely move it, and its signed-rank interval is distribution-free for symmetric
noise. Comparing the point estimate with the threshold itself (the former rule) flags a true
slowdown of exactly that size half of the time; comparing a confidence bound with a smaller
threshold detects it with the power the simulation states. The false-alarm rate stays at most alpha
at any noise level and pair count (exact signed-rank bound, symmetric noise).

Power (`simulate`, `calibrate`; `iris ab-calibrate` prints it): lognormal run-to-run noise of a
given CV, a few outliers (OUTLIER_RATE of runs x1.3-2), interleaved pairs. Defaults (alpha 1 %,
one-sided, min_slowdown 0.2 %) were chosen so that 60 pairs at CV 5 % detect a true +5 % >= 95 % of the
time and alarm on no change <= 1 % of the time (tests/unit/bench/test_bench_ab.py checks both).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

REGRESSION, OK, INVALID = "REGRESSION", "OK", "INVALID"
MIN_PAIRS = 8
ALPHA = 0.01
MIN_SLOWDOWN = 0.002
FLOOR_MS = 2.0
# what the defaults are sized for: a true SIZED_SLOWDOWN found with SIZED_POWER at SIZED_CV noise
SIZED_SLOWDOWN = 0.05
SIZED_POWER = 0.95
SIZED_CV = 0.05
SIZED_PAIRS = 60
OUTLIER_RATE = 0.03
OUTLIER_FACTOR = (1.3, 2.0)
# the benchmark's pair count: a pilot measures the noise, the count is chosen up to the cap
PILOT_PAIRS = 12
MAX_PAIRS = 120
# pair counts the calibration tries, smallest first
PAIR_GRID = (12, 16, 20, 24, 30, 36, 44, 52, 60, 70, 80, 100, 120, 150, 200)
# beyond this many pairs the signed-rank null is its normal approximation (exact below)
_EXACT_MAX_PAIRS = 400
TEST_NAME = "Hodges-Lehmann of paired log-ratios, Wilcoxon signed-rank bound"


@dataclass(frozen=True)
class Comparison:
    """The decision on one clip length. `ratio` is head / base as the paired estimate (exp of the
    Hodges-Lehmann location of ln(head_i / base_i)), not a ratio of medians; `ci` its two-sided
    1 - 2 alpha interval, whose lower end is the one-sided 1 - alpha bound the rule uses."""

    verdict: str
    regressed: bool
    n_pairs: int
    ratio: float
    ci: tuple[float, float]
    base_median: float
    head_median: float
    diff_ms: float  # (ratio - 1) x base median: the estimated slowdown in ms
    p_value: float  # one-sided Wilcoxon signed-rank (head slower), for information
    alpha: float
    min_slowdown: float
    floor_ms: float
    reason: str
    test: str = TEST_NAME

    @property
    def slowdown(self) -> float:
        """ratio - 1: 0.05 = the head is 5 % slower."""
        return self.ratio - 1.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci_low"], data["ci_high"] = data.pop("ci")
        data["slowdown"] = self.slowdown
        return data


@functools.lru_cache(maxsize=256)
def _signed_rank_critical(n: int, alpha: float) -> int:
    """Largest c with P(T+ <= c) <= alpha under the null (T+ = the signed-rank sum of n pairs), or -1
    when no c qualifies. The lower bound of the interval is then the (c + 1)-th smallest Walsh mean."""
    if n > _EXACT_MAX_PAIRS:
        mean, sd = n * (n + 1) / 4, math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
        from scipy.stats import norm

        return int(math.floor(mean + norm.ppf(alpha) * sd - 0.5))
    # exact distribution: each rank k is in the positive set with probability 1/2
    prob = np.zeros(n * (n + 1) // 2 + 1)
    prob[0] = 1.0
    for k in range(1, n + 1):
        prob[k:] = 0.5 * prob[k:] + 0.5 * prob[:-k].copy()
        prob[:k] *= 0.5
    cdf = np.cumsum(prob)
    below = np.nonzero(cdf <= alpha)[0]
    return int(below[-1]) if below.size else -1


def _walsh_bounds(d: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hodges-Lehmann location and the signed-rank interval bounds of each row of `d` (..., n)."""
    n = d.shape[-1]
    i, j = np.triu_indices(n)
    walsh = np.sort((d[..., i] + d[..., j]) / 2, axis=-1)
    c = _signed_rank_critical(n, alpha)
    m = walsh.shape[-1]
    low = walsh[..., c] if c >= 0 else np.full(d.shape[:-1], -np.inf)
    high = walsh[..., m - 1 - c] if c >= 0 else np.full(d.shape[:-1], np.inf)
    return np.median(walsh, axis=-1), low, high


def decide(base: np.ndarray, head: np.ndarray, alpha: float = ALPHA, min_slowdown: float = MIN_SLOWDOWN,
           floor_ms: float = FLOOR_MS) -> np.ndarray:
    """The rule on many trials at once: rows of `base` / `head` (trials, pairs) -> regressed (trials,)."""
    d = np.log(head) - np.log(base)
    hl, low, _ = _walsh_bounds(d, alpha)
    diff_ms = np.expm1(hl) * np.median(base, axis=-1)
    return (low > math.log1p(min_slowdown)) & (diff_ms > floor_ms)


def compare(base: Sequence[float], head: Sequence[float], alpha: float = ALPHA, min_slowdown: float = MIN_SLOWDOWN,
            floor_ms: float = FLOOR_MS) -> Comparison:
    """Judge the head against the base (latencies in ms, pair i = base[i], head[i]); see the module
    docstring for the rule."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(base, dtype=np.float64), np.asarray(head, dtype=np.float64)
    common = dict(alpha=alpha, min_slowdown=min_slowdown, floor_ms=floor_ms)
    bad = (a.shape != b.shape or a.ndim != 1 or a.size < MIN_PAIRS or not np.all(np.isfinite(a))
           or not np.all(np.isfinite(b)) or np.any(a <= 0) or np.any(b <= 0))
    if bad:
        why = (f"{a.size} base and {b.size} head runs: the check needs equal counts (pairs)" if a.shape != b.shape
               else f"{a.size} pairs; the check needs >= {MIN_PAIRS}" if a.size < MIN_PAIRS
               else "a latency is not a positive finite number")
        nan = math.nan
        return Comparison(INVALID, False, int(min(a.size, b.size)), nan, (nan, nan), nan, nan, nan, nan, **common,
                          reason=why)
    d = np.log(b) - np.log(a)
    hl, low, high = (float(v) for v in _walsh_bounds(d, alpha))
    ratio, ci = math.exp(hl), (math.exp(low), math.exp(high))
    base_median, head_median = float(np.median(a)), float(np.median(b))
    diff_ms = (ratio - 1.0) * base_median
    p_value = float(wilcoxon(d, alternative="greater").pvalue) if np.any(d != 0) else 1.0
    confident = ci[0] > 1.0 + min_slowdown
    large = diff_ms > floor_ms
    regressed = confident and large
    level = f"{1 - alpha:.0%}"
    reason = (f"head/base {ratio:.4f} ({ratio - 1:+.1%}); its {level} lower bound {ci[0]:.4f} "
              f"{'>' if confident else '<='} {1 + min_slowdown:g} (min slowdown {min_slowdown:.1%}); "
              f"difference {diff_ms:+.3g} ms {'>' if large else '<='} floor {floor_ms:g} ms")
    return Comparison(REGRESSION if regressed else OK, regressed, int(a.size), ratio, ci, base_median, head_median,
                      diff_ms, p_value, **common, reason=reason)


def simulate(rng: np.random.Generator, trials: int, pairs: int, cv: float, slowdown: float,
             outlier_rate: float = OUTLIER_RATE, base_ms: float = 1000.0) -> tuple[np.ndarray, np.ndarray]:
    """`trials` A/B runs of `pairs` pairs: lognormal run-to-run noise of coefficient of variation `cv`,
    the head `slowdown` slower (0.05 = 5 %), and `outlier_rate` of all runs multiplied by 1.3-2
    (a GC pause, another tenant). Returns base, head, each (trials, pairs), in ms."""
    sigma = math.sqrt(math.log1p(cv * cv))

    def side(scale: float) -> np.ndarray:
        runs = base_ms * scale * rng.lognormal(-sigma * sigma / 2, sigma, size=(trials, pairs))
        hit = rng.random((trials, pairs)) < outlier_rate
        return np.where(hit, runs * rng.uniform(*OUTLIER_FACTOR, size=(trials, pairs)), runs)

    return side(1.0), side(1.0 + slowdown)


@dataclass(frozen=True)
class CalibrationRow:
    cv: float
    pairs: int
    detection: float  # share of trials with a true `slowdown` flagged
    false_alarm: float  # share of trials with no change flagged
    slowdown: float
    trials: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(cv: float, pairs: int, trials: int = 4000, seed: int = 0, slowdown: float = SIZED_SLOWDOWN,
              alpha: float = ALPHA, min_slowdown: float = MIN_SLOWDOWN,
              outlier_rate: float = OUTLIER_RATE) -> CalibrationRow:
    """Detection and false-alarm rates of the rule, simulated (seeded) at one CV and pair count."""
    rng = np.random.default_rng(seed)
    rates = []
    for shift in (slowdown, 0.0):
        found = 0
        for first in range(0, trials, _block(pairs)):
            count = min(_block(pairs), trials - first)
            base, head = simulate(rng, count, pairs, cv, shift, outlier_rate)
            found += int(decide(base, head, alpha, min_slowdown, floor_ms=0.0).sum())
        rates.append(found / trials)
    return CalibrationRow(cv, pairs, rates[0], rates[1], slowdown, trials)


def _block(pairs: int) -> int:
    """Trials per simulated block, so the Walsh means of a block stay near 4 M values."""
    return max(1, 4_000_000 // (pairs * (pairs + 1) // 2))


@dataclass(frozen=True)
class PairPlan:
    """How many pairs a clip length gets and why."""

    pairs: int
    cv: float | None  # the noise the choice was sized for (None: fixed by the user)
    power: float | None  # simulated detection of SIZED_SLOWDOWN at that CV and pair count
    how: str
    notes: list[str] = field(default_factory=list)


def choose_pairs(cv: float, max_pairs: int, min_pairs: int = MIN_PAIRS, slowdown: float = SIZED_SLOWDOWN,
                 power: float = SIZED_POWER, trials: int = 1000, seed: int = 0) -> PairPlan:
    """The smallest pair count of PAIR_GRID (within [min_pairs, max_pairs]) whose simulated detection
    of `slowdown` at noise `cv` reaches `power`; `max_pairs` with a note when none does."""
    grid = sorted({p for p in PAIR_GRID if min_pairs <= p <= max_pairs} | {max(min_pairs, min(max_pairs, 200))})
    row = None
    for pairs in grid:
        row = calibrate(cv, pairs, trials=trials, seed=seed, slowdown=slowdown)
        if row.detection >= power:
            return PairPlan(pairs, cv, row.detection,
                            f"calibrated: {row.detection:.0%} detection of +{slowdown:.0%} at CV {cv:.1%}")
    assert row is not None
    return PairPlan(row.pairs, cv, row.detection,
                    f"capped at {row.pairs}: {row.detection:.0%} detection of +{slowdown:.0%} at CV {cv:.1%}",
                    [f"A/B power below {power:.0%}: at the measured CV {cv:.1%}, {row.pairs} pairs (--ab-max-pairs) "
                     f"detect a true +{slowdown:.0%} {row.detection:.0%} of the time"])


def paired_cv(base: Sequence[float], head: Sequence[float]) -> float:
    """The per-run CV that the pairs' noise amounts to: a robust spread (1.4826 x MAD) of the
    log-ratios, divided by sqrt(2) (a log-ratio carries the noise of two runs)."""
    d = np.log(np.asarray(head, dtype=np.float64)) - np.log(np.asarray(base, dtype=np.float64))
    mad = float(np.median(np.abs(d - np.median(d))))
    sigma = 1.4826 * mad / math.sqrt(2)
    return math.sqrt(math.expm1(sigma * sigma))
