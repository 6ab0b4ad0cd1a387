"""Statistics over measured runs: mean, percentiles, spread, and a bootstrap CI of the median.

Percentiles use numpy's default "linear" method (type 7 of Hyndman & Fan: linear interpolation
between the closest ranks), the same as `np.percentile(x, q)`. `std` is the sample standard
deviation (ddof=1; NaN for one sample). The median's 95 % confidence interval is a percentile
bootstrap: resample the runs with replacement `n_boot` times (seeded), take each resample's median,
and report the 2.5th and 97.5th percentiles of those medians.

For gates on high percentiles, `min_samples_for_percentile` and `percentile_upper_bound` give the
distribution-free (order-statistic, binomial) view: how many runs a claim "p99 <= target" needs at
all, and a value the true percentile stays under with the stated confidence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as scipy_stats

PERCENTILES = (50, 90, 95, 99)
# Bound on resampled values held at once, so large runs x n_boot stay small in memory.
_BOOT_BLOCK_VALUES = 4_000_000


def bootstrap_median_ci(
    samples: np.ndarray, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median of `samples` (1-D, finite)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    n = samples.size
    rng = np.random.default_rng(seed)
    medians = np.empty(n_boot)
    block = max(1, _BOOT_BLOCK_VALUES // n)
    for first in range(0, n_boot, block):
        count = min(block, n_boot - first)
        picks = rng.integers(0, n, size=(count, n))
        medians[first:first + count] = np.median(samples[picks], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Summary:
    """Statistics of one figure over `n` runs (same unit as the samples)."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float
    median_ci_low: float
    median_ci_high: float
    confidence: float = 0.95
    n_boot: int = 2000
    seed: int = 0

    @property
    def median(self) -> float:
        return self.p50

    @classmethod
    def from_samples(
        cls, samples: Iterable[float], n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
    ) -> Summary:
        values = np.asarray(list(samples), dtype=np.float64).ravel()
        if values.size == 0:
            raise ValueError("cannot summarise an empty list of samples")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"samples must be finite numbers; got {int((~np.isfinite(values)).sum())} NaN/inf")
        p50, p90, p95, p99 = (float(v) for v in np.percentile(values, PERCENTILES))
        low, high = bootstrap_median_ci(values, n_boot=n_boot, seed=seed, confidence=confidence)
        return cls(
            n=int(values.size),
            mean=float(values.mean()),
            std=float(values.std(ddof=1)) if values.size > 1 else math.nan,
            min=float(values.min()),
            max=float(values.max()),
            p50=p50,
            p90=p90,
            p95=p95,
            p99=p99,
            median_ci_low=low,
            median_ci_high=high,
            confidence=confidence,
            n_boot=n_boot,
            seed=seed,
        )

    def as_dict(self, prefix: str = "") -> dict[str, float | int]:
        """Flat dict for a result row; with prefix "latency_ms", keys are "latency_ms_p50" etc."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("n_boot", "seed")}
        return {f"{prefix}_{k}" if prefix else k: v for k, v in fields.items()}


def min_samples_for_percentile(q: float, confidence: float = 0.95) -> int:
    """Fewest runs for which the largest one bounds the q-th percentile from above with `confidence`.

    With n runs, P(all n fall below the true q-th percentile) = (q/100)**n; a claim needs that
    chance <= 1 - confidence: n >= log(1 - confidence) / log(q / 100). 95 %: p50 5, p90 29,
    p95 59, p99 299. With fewer runs a gate on that percentile cannot be decided.
    """
    if not 0 < q < 100:
        raise ValueError(f"percentile q must be in (0, 100), got {q!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return int(math.ceil(math.log(1 - confidence) / math.log(q / 100) - 1e-12))


def percentile_upper_bound(samples: Iterable[float], q: float, confidence: float = 0.95) -> float:
    """Distribution-free upper confidence bound of the q-th percentile: the smallest order
    statistic x_(k) with P(Binomial(n, q/100) < k) >= confidence. NaN when n is too small
    (fewer than `min_samples_for_percentile(q, confidence)` runs)."""
    values = np.sort(np.asarray(list(samples), dtype=np.float64).ravel())
    n = values.size
    if n == 0 or n < min_samples_for_percentile(q, confidence):
        return math.nan
    # k-th smallest (1-based) with binom.cdf(k - 1, n, p) >= confidence
    k = int(scipy_stats.binom.ppf(confidence, n, q / 100)) + 1
    while k > 1 and scipy_stats.binom.cdf(k - 2, n, q / 100) >= confidence:
        k -= 1
    while k <= n and scipy_stats.binom.cdf(k - 1, n, q / 100) < confidence:
        k += 1
    return float(values[k - 1]) if k <= n else math.nan


def percentile_lower_bound(samples: Iterable[float], q: float, confidence: float = 0.95) -> float:
    """Distribution-free lower confidence bound of the q-th percentile: the largest order statistic
    x_(k) with P(Binomial(n, q/100) >= k) >= confidence (the mirror of `percentile_upper_bound`).
    NaN when no order statistic qualifies (too few runs)."""
    values = np.sort(np.asarray(list(samples), dtype=np.float64).ravel())
    n = values.size
    if n == 0:
        return math.nan
    # P(X >= k) = 1 - cdf(k - 1); the largest k with that >= confidence
    ks = np.arange(1, n + 1)
    ok = scipy_stats.binom.sf(ks - 1, n, q / 100) >= confidence
    return float(values[ks[ok][-1] - 1]) if ok.any() else math.nan
