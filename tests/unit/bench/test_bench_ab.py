"""A/B regression check: the decision rule, its detection and false-alarm rates on a controlled
workload, and the two-worker plumbing end to end."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from iris_pipeline.benchmark import abtest
from iris_pipeline.benchmark.abrun import run_ab_command
from iris_pipeline.benchmark.session import build_config
from iris_pipeline.benchmark.settings import BenchSettings
from iris_pipeline.metrics import read_csv, repository_root

TRIALS = 40
PAIRS = 12
SLOWDOWN = 0.15


def _simulated(scale: float, rng: np.random.Generator, machine: list[float]):
    """One 'run' of a 100 ms clip on a simulated machine: a slow drift of the machine's speed shared
    by both sides (2 % per run, a random walk), 5 % lognormal run-to-run noise, and 5 % outliers
    (x1.3 to x2: a GC pause, another tenant). Returns the run's latency in ms."""
    def run(_: int) -> float:
        machine[0] *= float(np.exp(rng.normal(0, 0.02)))
        ms = 100.0 * scale * machine[0] * float(rng.lognormal(0, 0.05))
        return ms * float(rng.uniform(1.3, 2.0)) if rng.random() < 0.05 else ms
    return run


def _sleeper(ms: float, rng: np.random.Generator):
    """One 'run' that really sleeps `ms` (3 % jitter on top of the OS's own); returns the measured ms."""
    def run(_: int) -> float:
        start = time.perf_counter()
        time.sleep(ms * float(rng.lognormal(0, 0.03)) / 1e3)
        return (time.perf_counter() - start) * 1e3
    return run


def _rate(make_runs, scale: float, seed: int, trials: int, floor_ms: float) -> float:
    rng = np.random.default_rng(seed)
    alarms = 0
    for _ in range(trials):
        base_run, head_run = make_runs(1.0, rng), make_runs(scale, rng)
        base, head = abtest.interleave(base_run, head_run, PAIRS, warmup=1)
        alarms += abtest.compare(base, head, threshold=0.05, floor_ms=floor_ms).verdict == abtest.REGRESSION
    return alarms / trials


def _report(capsys, what: str, detection: float, false_alarm: float, trials: int) -> None:
    with capsys.disabled():
        print(f"\nA/B check, {what}, {PAIRS} interleaved pairs, {trials} trials each: "
              f"detection of +{SLOWDOWN:.0%} = {detection:.0%}, A/A false alarms = {false_alarm:.0%}")


def test_detection_and_false_alarm_rates_on_a_simulated_workload(capsys):
    """Deterministic (seeded): the rates of the decision rule itself under drift, noise and outliers."""
    rates = []
    for scale, seed in ((1 + SLOWDOWN, 1), (1.0, 2)):
        rng = np.random.default_rng(seed)
        alarms = 0
        for _ in range(TRIALS):
            machine = [1.0]  # both sides of a trial run on one machine: they share its drift
            base, head = abtest.interleave(_simulated(1.0, rng, machine), _simulated(scale, rng, machine), PAIRS, 1)
            alarms += abtest.compare(base, head).verdict == abtest.REGRESSION
        rates.append(alarms / TRIALS)
    detection, false_alarm = rates
    _report(capsys, "simulated 100 ms clips (drift 2 %/run, noise 5 %, 5 % outliers)", detection, false_alarm, TRIALS)
    assert detection >= 0.85
    assert false_alarm <= 0.05


def test_detection_and_false_alarm_rates_on_a_real_sleep_workload(capsys):
    """Real timing (sleeps of 5 ms): includes this machine's scheduler noise, so the bounds are loose."""
    trials = 20
    detection = _rate(lambda scale, rng: _sleeper(5.0 * scale, rng), 1 + SLOWDOWN, 3, trials, floor_ms=0.3)
    false_alarm = _rate(lambda scale, rng: _sleeper(5.0 * scale, rng), 1.0, 4, trials, floor_ms=0.3)
    _report(capsys, "5 ms sleeps (floor 0.3 ms)", detection, false_alarm, trials)
    assert detection >= 0.5
    assert false_alarm <= 0.15


def test_two_worker_processes_interleave_and_flag_a_slower_head(tmp_path):
    """Both workers load this checkout (--ab-base-dir); the head's pipeline is 1.5x slower."""
    factory = f"{Path(__file__).with_name('bench_fakes.py')}:make_pipeline"
    settings = BenchSettings(clip_lengths=[1.0], warmup=1)
    config = build_config(device="cpu", size="tiny")
    code = run_ab_command(settings, config, tmp_path, None, repository_root(), pairs=abtest.MIN_RUNS,
                          threshold=0.05, floor_ms=1.0, alpha=0.05, console=Console(file=open("/dev/null", "w")),
                          progress=None, factory=factory, factory_args=({"scale": 1.0}, {"scale": 1.5}))
    rows = read_csv(tmp_path / "ab.csv")
    assert code == 1 and rows[0]["verdict"] == abtest.REGRESSION, rows[0]["reason"]
    assert int(rows[0]["n_base"]) == int(rows[0]["n_head"]) == abtest.MIN_RUNS
    assert float(rows[0]["head_latency_ms_p50"]) > float(rows[0]["base_latency_ms_p50"])
    assert (tmp_path / "ab.json").exists() and "git_commit" in rows[0]


def test_export_ref_refuses_an_unknown_ref(tmp_path):
    from iris_pipeline.errors import InputError

    with pytest.raises(InputError, match="not a commit"):
        abtest.export_ref(repository_root(), "no-such-ref-xyz", tmp_path / "base")
