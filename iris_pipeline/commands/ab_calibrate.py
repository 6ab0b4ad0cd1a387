"""`iris ab-calibrate`: simulate the A/B decision rule and print its detection and false-alarm rates
per noise level (CV) and pair count, so users can size their A/B runs (`iris bench --ab-pairs`)."""

from __future__ import annotations

import sys

import typer

from iris_pipeline.benchmark.abtest import (
    ALPHA,
    MIN_SLOWDOWN,
    OUTLIER_RATE,
    SIZED_SLOWDOWN,
    CalibrationRow,
)


def ab_calibrate_command(
    cv: str = typer.Option("0.02,0.05,0.10", "--cv", help="run-to-run noise levels (coefficient of variation)"),
    pairs: str = typer.Option("20,30,60,120", "--pairs", help="pair counts"),
    slowdown: float = typer.Option(SIZED_SLOWDOWN, "--slowdown", help="the true slowdown to detect (0.05 = 5 %)"),
    trials: int = typer.Option(4000, "--trials", min=100, help="simulated A/B runs per cell"),
    seed: int = typer.Option(0, "--seed"),
    alpha: float = typer.Option(ALPHA, "--alpha", help="one-sided error level of the confidence bound"),
    min_slowdown: float = typer.Option(MIN_SLOWDOWN, "--min-slowdown", help="threshold of the confidence bound"),
    outliers: float = typer.Option(OUTLIER_RATE, "--outliers", min=0.0, max=0.5, help="share of runs x1.3-2"),
) -> None:
    """Detection of a true slowdown and false alarms on no change, simulated, per CV and pair count."""
    from rich.console import Console
    from rich.table import Table

    from iris_pipeline.benchmark import abtest
    from iris_pipeline.benchmark.settings import comma_separated
    from iris_pipeline.errors import InputError

    if not 0 < alpha < 0.5:
        raise InputError(f"--alpha {alpha}: must be in (0, 0.5)")
    counts = comma_separated(pairs, "--pairs", int)
    if min(counts) < abtest.MIN_PAIRS:
        raise InputError(f"--pairs {pairs!r}: the check needs >= {abtest.MIN_PAIRS} pairs")
    rows: list[CalibrationRow] = [
        abtest.calibrate(c, n, trials=trials, seed=seed, slowdown=slowdown, alpha=alpha, min_slowdown=min_slowdown,
                         outlier_rate=outliers)
        for c in comma_separated(cv, "--cv") for n in counts]
    table = Table(title=f"A/B decision rule, simulated ({trials} trials per cell, seed {seed})")
    for name in ("CV", "pairs", f"detection of +{slowdown:.0%}", "false alarm (no change)"):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(f"{row.cv:.1%}", str(row.pairs), f"{row.detection:.1%}", f"{row.false_alarm:.2%}")
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    console.print(f"rule: REGRESSION when the one-sided {1 - alpha:.0%} lower bound of head/base (Hodges-Lehmann "
                  f"of paired log-ratios, Wilcoxon signed-rank interval) > {1 + min_slowdown:g}; noise lognormal, "
                  f"{outliers:.0%} of runs x{abtest.OUTLIER_FACTOR[0]:g}-{abtest.OUTLIER_FACTOR[1]:g}")
