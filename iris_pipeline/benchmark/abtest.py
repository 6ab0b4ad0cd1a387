"""A/B regression check: base and head measured in the same job, interleaved, judged by a rank test.

How: the base ref is exported with `git archive` into a temporary directory (no worktree, no change
to the repository's state); two long-lived worker processes (abworker.py) each load one checkout's
pipeline once, and the driver asks them for one job at a time, alternating A B, B A, A B, ... so
slow drift of the machine (clocks, heat, other tenants) falls on both sides alike and neither side
always runs first. Both get the same inputs (script, reference, avatar, seeds).

Decision: a REGRESSION only when all three hold:
  1. the median slowdown (median_head / median_base - 1) is above `threshold` (default 5 %);
  2. the median difference is above `floor_ms` (default 2 ms), so sub-millisecond jitter of
     short clips cannot fail a PR;
  3. it is significant: one-sided Mann-Whitney U test (head stochastically slower than base),
     p < `alpha` (default 0.05).
Why Mann-Whitney U rather than a bootstrap of the median difference: latency samples are skewed
and carry outliers (a GC pause, another process), which a rank test shrugs off; its false-alarm
rate under "no change" is exactly alpha for any continuous distribution, with no resampling
assumptions that get shaky at the 10-30 runs a CI job can afford (a bootstrap of the median from
that few runs is coarse: the median can only take a handful of values). Its statistic is about
the whole distribution shifting, and conditions 1-2 tie the decision to the median. A bootstrap CI
of the slowdown is still reported, for information.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iris_pipeline.errors import InputError, IrisError

REGRESSION, OK, INVALID = "REGRESSION", "OK", "INVALID"
MIN_RUNS = 8
WORKER_SCRIPT = Path(__file__).resolve().parent / "abworker.py"


@dataclass(frozen=True)
class Comparison:
    verdict: str
    n_base: int
    n_head: int
    base_median: float
    head_median: float
    diff_ms: float
    slowdown: float  # fraction: 0.05 = 5 % slower
    p_value: float
    slowdown_ci_low: float
    slowdown_ci_high: float
    threshold: float
    floor_ms: float
    alpha: float
    test: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(base: list[float], head: list[float], threshold: float = 0.05, floor_ms: float = 2.0,
            alpha: float = 0.05, n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Judge head against base (latencies in ms) by the rules of the module docstring."""
    from scipy.stats import mannwhitneyu

    a, b = np.asarray(base, dtype=np.float64), np.asarray(head, dtype=np.float64)
    common = dict(threshold=threshold, floor_ms=floor_ms, alpha=alpha, test="Mann-Whitney U, one-sided (head > base)")
    if min(a.size, b.size) < MIN_RUNS:
        nan = float("nan")
        return Comparison(INVALID, int(a.size), int(b.size), nan, nan, nan, nan, nan, nan, nan, **common,
                          reason=f"{min(a.size, b.size)} runs per side; the check needs >= {MIN_RUNS}")
    med_a, med_b = float(np.median(a)), float(np.median(b))
    diff = med_b - med_a
    slowdown = diff / med_a
    p = float(mannwhitneyu(b, a, alternative="greater").pvalue)
    rng = np.random.default_rng(seed)
    ratios = (np.median(rng.choice(b, (n_boot, b.size)), axis=1) / np.median(rng.choice(a, (n_boot, a.size)), axis=1))
    low, high = (float(v) - 1 for v in np.percentile(ratios, [2.5, 97.5]))
    checks = [(slowdown > threshold, f"slowdown {slowdown:+.1%} {'>' if slowdown > threshold else '<='} "
                                     f"{threshold:.0%}"),
              (diff > floor_ms, f"difference {diff:+.3g} ms {'>' if diff > floor_ms else '<='} floor {floor_ms:g} ms"),
              (p < alpha, f"p = {p:.3g} {'<' if p < alpha else '>='} {alpha:g}")]
    verdict = REGRESSION if all(ok for ok, _ in checks) else OK
    return Comparison(verdict, int(a.size), int(b.size), med_a, med_b, diff, slowdown, p, low, high, **common,
                      reason="; ".join(text for _, text in checks))


def interleave(run_base: Callable[[int], float], run_head: Callable[[int], float], pairs: int,
               warmup: int = 1) -> tuple[list[float], list[float]]:
    """Warm both sides up, then `pairs` pairs in alternating order (A B, B A, ...). Each callable
    gets the run's index (its seed) and returns one latency in ms."""
    for i in range(warmup):
        run_base(-1 - i)
        run_head(-1 - i)
    base, head = [], []
    for i in range(pairs):
        if i % 2 == 0:
            base.append(run_base(i))
            head.append(run_head(i))
        else:
            head.append(run_head(i))
            base.append(run_base(i))
    return base, head


def export_ref(repo: Path, ref: str, dest: Path) -> str:
    """The tree of `ref` (a commit-ish) extracted into `dest` by `git archive`; returns the commit sha."""
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InputError(f"--ab {ref!r}: not a commit in {repo}")
    sha = done.stdout.strip()
    dest.mkdir(parents=True, exist_ok=True)
    with subprocess.Popen(["git", "-C", str(repo), "archive", "--format=tar", sha], stdout=subprocess.PIPE) as proc:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            tar.extractall(dest, filter="data") if sys.version_info >= (3, 12) else tar.extractall(dest)  # noqa: S202
    if proc.returncode != 0:
        raise InputError(f"--ab {ref!r}: git archive failed (exit {proc.returncode})")
    return sha


class ABWorkerError(IrisError):
    """A worker could not load its checkout's pipeline or run a job (the message names the log)."""

    exit_code = 4


class WorkerProcess:
    """One side of the comparison: abworker.py serving one checkout."""

    def __init__(self, root: Path, label: str, log_dir: Path, python: str = sys.executable):
        self.label = label
        self.log_path = log_dir / f"ab-worker-{label}.log"
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([python, str(WORKER_SCRIPT), "--root", str(root)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=str(root))

    def request(self, **req: Any) -> dict[str, Any]:
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise ABWorkerError(f"A/B worker {self.label} died; see {self.log_path}: {self._tail()}")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise ABWorkerError(f"A/B worker {self.label}: {answer.get('error')} (log: {self.log_path})")
        return answer

    def _tail(self) -> str:
        self._log.flush()
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return lines[-1] if lines else "(empty log)"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.request(op="quit")
            except (ABWorkerError, OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class ABClip:
    clip_s: float
    base_ms: list[float]
    head_ms: list[float]
    comparison: Comparison


def run_ab(base_root: Path, head_root: Path, config: dict[str, Any], clip_lengths: list[float], pairs: int,
           warmup: int, scripts: dict[float, str], language: str, reference_wav: Path, transcript: str,
           avatar: Path, log_dir: Path, threshold: float = 0.05, floor_ms: float = 2.0, alpha: float = 0.05,
           factory: str | None = None, factory_args: tuple[dict, dict] = ({}, {}),
           progress: Callable[[str], None] | None = None) -> list[ABClip]:
    """Start one worker per checkout, interleave their runs per clip length, compare."""
    workers = [WorkerProcess(base_root, "base", log_dir), WorkerProcess(head_root, "head", log_dir)]
    try:
        for worker, args in zip(workers, factory_args, strict=True):
            if progress:
                progress(f"A/B: preparing the {worker.label} pipeline")
            worker.request(op="prepare", config=config, avatar=str(avatar), reference=str(reference_wav),
                           transcript=transcript, language=language, factory=factory, factory_args=args)
        out = []
        for clip_s in clip_lengths:
            def runner(worker: WorkerProcess, clip_s: float = clip_s) -> Callable[[int], float]:
                def run(seed: int) -> float:
                    return float(worker.request(op="run", text=scripts[clip_s], language=language, clip_s=clip_s,
                                                seed=seed)["latency_ms"])
                return run

            if progress:
                progress(f"A/B: clip {clip_s:g} s, {pairs} interleaved pairs")
            base, head = interleave(runner(workers[0]), runner(workers[1]), pairs, warmup)
            out.append(ABClip(clip_s, base, head, compare(base, head, threshold, floor_ms, alpha)))
        return out
    finally:
        for worker in workers:
            worker.close()


def ab_rows(clips: list[ABClip], context: dict[str, Any], base_ref: str, base_sha: str) -> list[dict[str, Any]]:
    """ab.csv: one row per clip length (context columns last)."""
    rows = []
    for clip in clips:
        c = clip.comparison
        row = {"clip_s": clip.clip_s, "base_ref": base_ref, "base_commit": base_sha, "n_base": c.n_base,
               "n_head": c.n_head, "base_latency_ms_p50": c.base_median, "head_latency_ms_p50": c.head_median,
               "diff_ms": c.diff_ms, "slowdown_pct": c.slowdown * 100, "slowdown_ci_low_pct": c.slowdown_ci_low * 100,
               "slowdown_ci_high_pct": c.slowdown_ci_high * 100, "p_value": c.p_value,
               "threshold_pct": c.threshold * 100, "floor_ms": c.floor_ms, "alpha": c.alpha, "test": c.test,
               "verdict": c.verdict, "reason": c.reason}
        row.update({k: v for k, v in context.items() if k not in row})
        rows.append(row)
    return rows


def make_temp_dir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=prefix)
