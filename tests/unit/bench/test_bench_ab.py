"""A/B regression check: the decision rule's stated power and false-alarm rate (seeded simulation),
its parts, the pair count chosen from the calibration, options that only one side knows, and the
two-worker plumbing end to end."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict
from rich.console import Console

from iris_pipeline.benchmark import abrun, abtest
from iris_pipeline.benchmark.abworker import known_options
from iris_pipeline.benchmark.session import build_config
from iris_pipeline.benchmark.settings import BenchSettings
from iris_pipeline.metrics import read_csv, repository_root


def test_compare_meets_the_stated_power_and_false_alarm_rate(capsys):
    """60 interleaved pairs, lognormal noise of CV 5 %, 3 % outliers (x1.3-2): a true +5 % slowdown is
    flagged >= 95 % of the time, no change <= 1 % of the time (4000 seeded trials each)."""
    row = abtest.calibrate(abtest.SIZED_CV, abtest.SIZED_PAIRS, trials=4000, seed=2024)
    with capsys.disabled():
        print(f"\nA/B rule at CV {row.cv:.0%}, {row.pairs} pairs, {row.trials} trials: detection of "
              f"+{row.slowdown:.0%} = {row.detection:.2%}, false alarms = {row.false_alarm:.2%}")
    assert row.detection >= abtest.SIZED_POWER
    assert row.false_alarm <= 0.01


def test_compare_gives_the_paired_ratio_its_interval_and_the_decision():
    rng = np.random.default_rng(7)
    base, head = abtest.simulate(rng, 1, 60, cv=0.03, slowdown=0.10, base_ms=400.0)
    c = abtest.compare(list(base[0]), list(head[0]))
    assert c.regressed
    assert c.verdict == abtest.REGRESSION
    assert c.n_pairs == 60
    assert c.ci[0] < c.ratio < c.ci[1]
    assert 1.07 < c.ratio < 1.13
    assert c.ci[0] > 1 + abtest.MIN_SLOWDOWN
    assert c.diff_ms == pytest.approx((c.ratio - 1) * c.base_median)
    assert c.p_value < 0.01
    same = abtest.compare(list(base[0]), list(base[0] * rng.lognormal(0, 0.03, 60)))
    assert not same.regressed
    assert same.verdict == abtest.OK
    assert same.ci[0] < 1 + abtest.MIN_SLOWDOWN
    assert bool(abtest.decide(base, head)[0]) is c.regressed  # one rule for simulation and decision


def test_a_clear_but_tiny_slowdown_stays_under_the_floor():
    base = [1.0 + 0.001 * (i % 3) for i in range(30)]
    head = [b * 1.5 for b in base]  # +50 %, but +0.5 ms
    c = abtest.compare(base, head, floor_ms=2.0)
    assert c.ci[0] > 1.4
    assert not c.regressed
    assert "floor 2 ms" in c.reason


@pytest.mark.parametrize("base,head,why", [
    ([100.0] * 5, [110.0] * 5, "5 pairs; the check needs >= 8"),
    ([100.0] * 10, [110.0] * 9, "equal counts"),
    ([100.0] * 9 + [float("nan")], [110.0] * 10, "not a positive finite number"),
])
def test_too_few_unequal_or_broken_pairs_are_invalid(base, head, why):
    c = abtest.compare(base, head)
    assert c.verdict == abtest.INVALID
    assert not c.regressed
    assert why in c.reason


def test_the_signed_rank_critical_value_matches_enumeration():
    n = 10
    sums = np.array([sum(k + 1 for k in range(n) if mask >> k & 1) for mask in range(2**n)])
    for alpha in (0.01, 0.05, 0.1):
        c = abtest._signed_rank_critical(n, alpha)
        assert np.mean(sums <= c) <= alpha < np.mean(sums <= c + 1)


def test_pair_count_is_chosen_from_the_calibration():
    plan = abtest.choose_pairs(0.05, max_pairs=120, trials=400)
    assert plan.pairs <= abtest.SIZED_PAIRS
    assert plan.power >= abtest.SIZED_POWER
    assert not plan.notes
    assert "calibrated" in plan.how
    assert "CV 5.0%" in plan.how
    noisy = abtest.choose_pairs(0.25, max_pairs=30, trials=400)
    assert noisy.pairs == 30
    assert noisy.power < abtest.SIZED_POWER
    assert "power below" in noisy.notes[0]


def test_paired_cv_recovers_the_noise_of_one_run():
    base, head = abtest.simulate(np.random.default_rng(3), 1, 400, cv=0.08, slowdown=0.0, outlier_rate=0.0)
    assert abtest.paired_cv(base[0], head[0]) == pytest.approx(0.08, rel=0.15)


def test_interleave_alternates_the_order():
    calls = []
    base, head = abrun.interleave(lambda i: calls.append(("A", i)) or 1.0, lambda i: calls.append(("B", i)) or 2.0, 4)
    assert calls == [("A", 0), ("B", 0), ("B", 1), ("A", 1), ("A", 2), ("B", 2), ("B", 3), ("A", 3)]
    assert base == [1.0] * 4
    assert head == [2.0] * 4


class _OldChunking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chunk_seconds: float = 10.0


class _OldConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: str = "full"
    chunking: _OldChunking = _OldChunking()


def test_options_an_older_checkout_does_not_know_are_dropped_by_name():
    sent = {"size": "tiny", "chunking": {"chunk_seconds": 5, "first_chunk_seconds": 2}, "profile": "eager"}
    kept, dropped = known_options(_OldConfig, sent)
    assert kept == {"size": "tiny", "chunking": {"chunk_seconds": 5}}
    assert dropped == ["chunking.first_chunk_seconds", "profile"]
    _OldConfig.model_validate(kept)


def test_only_explicitly_set_options_travel():
    config = build_config({"data": {"chunking": {"chunk_seconds": 5}}}, device="cpu", size="tiny",
                          stage_precision={"vallex": "fp32"})
    assert abrun.explicit_options(config) == {"device": "cpu", "size": "tiny", "chunking": {"chunk_seconds": 5.0},
                                              "vallex": {"precision": "fp32"}}


PAIRS = 20


def test_two_worker_processes_interleave_flag_a_slower_head_and_note_dropped_options(tmp_path, monkeypatch):
    """Both workers load this checkout (--ab-base-dir); the head's pipeline is 2x slower (20 pairs, so
    a few pairs disturbed by a loaded machine cannot hide it). An option this checkout does not know is
    dropped on both sides with a note, never an error."""
    factory = f"{Path(__file__).with_name('bench_fakes.py')}:make_pipeline"
    settings = BenchSettings(clip_lengths=[1.0])
    config = build_config(device="cpu", size="tiny")
    monkeypatch.setattr(abrun, "explicit_options",
                        lambda cfg: {**cfg.model_dump(mode="json", exclude_unset=True),
                                     "chunking": {"option_of_a_later_release": 1}})
    console = Console(file=io.StringIO(), width=200)
    command = abrun.ABCommand(settings=settings, config=config, out_dir=tmp_path, ref=None,
                              base_dir=repository_root(), options=abrun.ABOptions(pairs=PAIRS, warmup=1, floor_ms=1.0))
    run = abrun.run_ab_command(command, console, None, factory=factory, factory_args=({"scale": 1.0}, {"scale": 2.0}))
    rows = read_csv(tmp_path / "ab.csv")
    assert run.verdict == abtest.REGRESSION, rows[0]["reason"]
    assert rows[0]["verdict"] == abtest.REGRESSION, rows[0]["reason"]
    assert int(rows[0]["pairs"]) == PAIRS
    assert rows[0]["pairs_how"] == "fixed by --ab-pairs"
    assert float(rows[0]["ratio"]) > 1.3
    assert float(rows[0]["head_latency_ms_p50"]) > float(rows[0]["base_latency_ms_p50"])
    assert (tmp_path / "ab.json").exists()
    assert "git_commit" in rows[0]
    assert [n for n in run.notes if "chunking.option_of_a_later_release" in n and "dropped" in n]
    printed = console.file.getvalue()
    assert "A/B: working tree vs" in printed
    assert f"{PAIRS} (fixed by --ab-pairs)" in printed
    assert "note: the base does not know the option chunking.option_of_a_later_release" in printed


def test_export_ref_refuses_an_unknown_ref(tmp_path):
    from iris_pipeline.errors import InputError

    with pytest.raises(InputError, match="not a commit"):
        abrun.export_ref(repository_root(), "no-such-ref-xyz", tmp_path / "base")


def test_bad_ab_options_are_input_errors():
    from iris_pipeline.errors import InputError

    for kwargs, match in (({"pairs": 3}, "--ab-pairs 3"), ({"max_pairs": 4}, "--ab-max-pairs 4"),
                          ({"alpha": 0.7}, "--ab-alpha")):
        with pytest.raises(InputError, match=match):
            abrun.ABOptions(**kwargs)


def _iris(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "iris_pipeline", *args], capture_output=True, text=True,
                          timeout=600, cwd=repository_root(), env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"})


def test_ab_calibrate_prints_detection_and_false_alarm_per_cv_and_pairs():
    proc = _iris("ab-calibrate", "--cv", "0.05", "--pairs", "60", "--trials", "2000", "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "5.0%" in line and "60" in line)
    detection, false_alarm = (float(v.rstrip("%")) for v in row.replace("│", " ").split()[2:4])
    expected = abtest.calibrate(0.05, 60, trials=2000, seed=5)
    assert detection == pytest.approx(100 * expected.detection, abs=0.05)
    assert detection >= 95
    assert false_alarm == pytest.approx(100 * expected.false_alarm, abs=0.005)
    assert false_alarm <= 1
    assert f"one-sided {1 - abtest.ALPHA:.0%} lower bound" in proc.stdout


@pytest.mark.parametrize("args,expected", [
    (["--pairs", "4"], "--pairs '4': the check needs >= 8 pairs"),
    (["--cv", "x"], "--cv 'x': expected numbers separated by commas"),
    (["--alpha", "0.9"], "--alpha 0.9: must be in (0, 0.5)"),
])
def test_ab_calibrate_bad_input_is_one_line(args, expected):
    proc = _iris("ab-calibrate", *args)
    assert proc.returncode != 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {expected}"], proc.stderr
