"""Running an A/B check: the base checkout, two worker processes, interleaved pairs, the pair count,
and the files and table of `iris bench --ab REF` (the decision itself is abtest.compare).

How: the base ref is exported with `git archive` into a temporary directory (no worktree, no change
to the repository's state); two long-lived worker processes (abworker.py) each load one checkout's
pipeline once, and the driver asks them for one job at a time, alternating A B, B A, A B, ... so
slow drift of the machine (clocks, heat, other tenants) falls on both sides alike and neither side
always runs first. Both get the same inputs (script, reference, avatar, seeds).

Config: each side resolves its own defaults. Only the options set explicitly (the config file's
keys, the flags, the size the benchmark chose) travel to the workers; an option the base's code does
not know is dropped there, and the report says so in one line per option.

Two settings of one tree: `--ab-base-set KEY=VALUE` (repeatable; e.g. vallex.options.scheduler=static)
sets dotted config keys on the base side only. Without a ref or base directory the base is the
working tree itself, so the check compares the two settings with the same statistics.

Pairs: a pilot of abtest.PILOT_PAIRS pairs measures the noise (abtest.paired_cv); abtest.choose_pairs then
picks the smallest pair count whose simulated power reaches abtest.SIZED_POWER for a true
abtest.SIZED_SLOWDOWN at that noise, up to `max_pairs` (the pilot pairs count towards it).
`--ab-pairs N` fixes the count instead.

ab.csv: one row per clip length: clip_s, base_ref, base_commit, pairs, pairs_how, pilot_cv_pct,
power_pct, base_latency_ms_p50, head_latency_ms_p50, ratio, ratio_ci_low, ratio_ci_high, diff_ms,
p_value, alpha, min_slowdown_pct, floor_ms, test, verdict (REGRESSION / OK / INVALID), reason, then
the head's context columns. ab.json: {"format": "iris-ab/2", "verdict", "base_ref", "base_commit",
"settings", "notes", "rules", "clips": [{... the row ..., "base_ms": [...], "head_ms": [...]}], "context"}.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iris_pipeline.benchmark import abtest, inputs
from iris_pipeline.benchmark.session import with_setting
from iris_pipeline.benchmark.settings import BenchSettings
from iris_pipeline.config import PipelineConfig
from iris_pipeline.errors import InputError, IrisError

AB_FORMAT = "iris-ab/2"
WARMUP = 2
WORKER_SCRIPT = Path(__file__).resolve().parent / "abworker.py"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ABOptions:
    """How the check runs: a fixed pair count (None: chosen from the calibration), its cap, the rule."""

    pairs: int | None = None
    max_pairs: int = abtest.MAX_PAIRS
    pilot_pairs: int = abtest.PILOT_PAIRS
    warmup: int = WARMUP
    alpha: float = abtest.ALPHA
    min_slowdown: float = abtest.MIN_SLOWDOWN
    floor_ms: float = abtest.FLOOR_MS
    base_set: dict[str, Any] = field(default_factory=dict)  # dotted config key -> value, the base side only

    def __post_init__(self) -> None:
        if self.pairs is not None and self.pairs < abtest.MIN_PAIRS:
            raise InputError(f"--ab-pairs {self.pairs}: the check needs >= {abtest.MIN_PAIRS} pairs")
        if self.max_pairs < self.pilot_pairs:
            raise InputError(f"--ab-max-pairs {self.max_pairs}: must be >= the {self.pilot_pairs} pilot pairs")
        if not 0 < self.alpha < 0.5:
            raise InputError(f"--ab-alpha {self.alpha}: must be in (0, 0.5)")


def interleave(run_base: Callable[[int], float], run_head: Callable[[int], float], pairs: int, start: int = 0,
               base: list[float] | None = None, head: list[float] | None = None) -> tuple[list[float], list[float]]:
    """Pairs `start` .. `start + pairs - 1`, alternating the order (A B, B A, ...), appended to
    `base` / `head`. Each callable gets the run's index (its seed) and returns one latency in ms."""
    base, head = ([] if base is None else base), ([] if head is None else head)
    for i in range(start, start + pairs):
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
    plan: abtest.PairPlan
    comparison: abtest.Comparison


@dataclass
class ABRun:
    clips: list[ABClip]
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        found = {c.comparison.verdict for c in self.clips}
        return next((v for v in (abtest.REGRESSION, abtest.INVALID) if v in found), abtest.OK)


@dataclass(frozen=True)
class ABInputs:
    """What both workers get: the explicitly set options (the base's with `--ab-base-set` applied),
    the job's inputs, scripts per clip length."""

    options: dict[str, Any]
    clip_lengths: list[float]
    scripts: dict[float, str]
    language: str
    reference_wav: Path
    transcript: str
    avatar: Path
    base_options: dict[str, Any] | None = None  # None: the same as `options`


def parse_base_settings(items: list[str] | None) -> dict[str, Any]:
    """`--ab-base-set KEY=VALUE` items -> {dotted key: value}; the value is read as YAML (8, true, static)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or not text.strip():
            raise InputError(f"--ab-base-set {item!r}: expected KEY=VALUE, e.g. vallex.options.scheduler=static")
        try:
            out[key.strip()] = yaml.safe_load(text.strip())
        except yaml.YAMLError:
            raise InputError(f"--ab-base-set {item!r}: the value is not a YAML scalar") from None
    return out


def run_ab(base_root: Path, head_root: Path, job: ABInputs, opts: ABOptions, log_dir: Path,
           factory: str | None = None, factory_args: tuple[dict, dict] = ({}, {}),
           progress: Progress | None = None) -> ABRun:
    """Start one worker per checkout, interleave their runs per clip length, compare."""
    workers = [WorkerProcess(base_root, "base", log_dir), WorkerProcess(head_root, "head", log_dir)]
    notes: list[str] = []
    try:
        for worker, args in zip(workers, factory_args, strict=True):
            if progress:
                progress(f"A/B: preparing the {worker.label} pipeline")
            options = job.base_options if worker.label == "base" and job.base_options is not None else job.options
            answer = worker.request(op="prepare", config=options, avatar=str(job.avatar),
                                    reference=str(job.reference_wav), transcript=job.transcript,
                                    language=job.language, factory=factory, factory_args=args)
            notes += [f"the {worker.label} does not know the option {key}: dropped there (the other side runs it)"
                      for key in answer.get("dropped", [])]
        clips = [_measure_clip(workers, clip_s, job, opts, progress) for clip_s in job.clip_lengths]
        notes += [n for c in clips for n in c.plan.notes]
        return ABRun(clips, notes)
    finally:
        for worker in workers:
            worker.close()


def _measure_clip(workers: list[WorkerProcess], clip_s: float, job: ABInputs, opts: ABOptions,
                  progress: Progress | None) -> ABClip:
    def runner(worker: WorkerProcess) -> Callable[[int], float]:
        def run(seed: int) -> float:
            return float(worker.request(op="run", text=job.scripts[clip_s], language=job.language, clip_s=clip_s,
                                        seed=seed)["latency_ms"])
        return run

    run_base, run_head = runner(workers[0]), runner(workers[1])
    for i in range(opts.warmup):
        run_base(-1 - i)
        run_head(-1 - i)
    if opts.pairs is not None:
        plan = abtest.PairPlan(opts.pairs, None, None, "fixed by --ab-pairs")
        if progress:
            progress(f"A/B: clip {clip_s:g} s, {plan.pairs} interleaved pairs")
        base, head = interleave(run_base, run_head, plan.pairs)
    else:
        if progress:
            progress(f"A/B: clip {clip_s:g} s, {opts.pilot_pairs} pilot pairs (noise for the pair count)")
        base, head = interleave(run_base, run_head, opts.pilot_pairs)
        plan = abtest.choose_pairs(abtest.paired_cv(base, head), opts.max_pairs, min_pairs=opts.pilot_pairs)
        if progress:
            progress(f"A/B: clip {clip_s:g} s, {plan.pairs} pairs ({plan.how})")
        interleave(run_base, run_head, plan.pairs - len(base), start=len(base), base=base, head=head)
    comparison = abtest.compare(base, head, opts.alpha, opts.min_slowdown, opts.floor_ms)
    return ABClip(clip_s, base, head, plan, comparison)


def ab_rows(run: ABRun, context: dict[str, Any], base_ref: str, base_sha: str) -> list[dict[str, Any]]:
    """ab.csv: one row per clip length (context columns last)."""
    rows = []
    for clip in run.clips:
        c, plan = clip.comparison, clip.plan
        row = {"clip_s": clip.clip_s, "base_ref": base_ref, "base_commit": base_sha, "pairs": c.n_pairs,
               "pairs_how": plan.how, "pilot_cv_pct": None if plan.cv is None else plan.cv * 100,
               "power_pct": None if plan.power is None else plan.power * 100,
               "base_latency_ms_p50": c.base_median, "head_latency_ms_p50": c.head_median, "ratio": c.ratio,
               "ratio_ci_low": c.ci[0], "ratio_ci_high": c.ci[1], "diff_ms": c.diff_ms, "p_value": c.p_value,
               "alpha": c.alpha, "min_slowdown_pct": c.min_slowdown * 100, "floor_ms": c.floor_ms, "test": c.test,
               "verdict": c.verdict, "reason": c.reason}
        row.update({k: v for k, v in context.items() if k not in row})
        rows.append(row)
    return rows


def ab_table(run: ABRun, base_ref: str) -> Any:
    """The rich table of an A/B run: one row per clip length, the pair count and how it was chosen."""
    from rich.table import Table

    from iris_pipeline.benchmark.table import fmt

    table = Table(title=f"A/B: working tree vs {base_ref}")
    for name in ("clip s", "pairs", "base p50 ms", "head p50 ms", "head/base", f"CI ({1 - 2 * abtest.ALPHA:.0%})",
                 "verdict", "reason"):
        table.add_column(name, overflow="fold")
    for clip in run.clips:
        c = clip.comparison
        table.add_row(f"{clip.clip_s:g}", f"{c.n_pairs} ({clip.plan.how})", fmt(c.base_median), fmt(c.head_median),
                      fmt(c.ratio), f"[{fmt(c.ci[0])}, {fmt(c.ci[1])}]", c.verdict, c.reason)
    return table


@dataclass(frozen=True)
class ABCommand:
    """`iris bench --ab REF` / `--ab-base-dir DIR`: what to measure, the working tree's config, where the
    results go, the base (a git ref, or a checkout directory), and how the check runs."""

    settings: BenchSettings
    config: PipelineConfig
    out_dir: Path
    ref: str | None
    base_dir: Path | None
    options: ABOptions


def run_ab_command(command: ABCommand, console: Any, progress: Progress | None,
                   factory: str | None = None, factory_args: tuple[dict, dict] = ({}, {})) -> ABRun:
    """Run the check, write ab.csv / ab.json, print the table."""
    import soundfile as sf

    from iris_pipeline.metrics import capture_context, repository_root, write_csv, write_json

    settings, config, ref, base_dir, opts = (command.settings, command.config, command.ref, command.base_dir,
                                             command.options)
    head_root = repository_root()
    out_dir = Path(command.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="iris-ab-") as tmp_name:
        tmp = Path(tmp_name)
        if base_dir is not None:
            if not (Path(base_dir) / "iris_pipeline").is_dir():
                raise InputError(f"--ab-base-dir {base_dir}: no iris_pipeline package in that directory")
            base_root, base_sha, base_ref = Path(base_dir).resolve(), "n/a", str(base_dir)
        elif ref is not None:
            base_root = tmp / "base"
            base_sha, base_ref = export_ref(head_root, ref, base_root), ref
        else:  # --ab-base-set alone: the working tree against itself with other settings
            base_root, base_sha, base_ref = head_root, "n/a", "the working tree"
        if opts.base_set:
            base_ref += " with " + ", ".join(f"{k}={v}" for k, v in opts.base_set.items())
        options = explicit_options(config)
        base_options = options
        for key, value in opts.base_set.items():
            base_options = with_setting(base_options, key, value)
        reference = inputs.load_reference(settings.reference, settings.seed)
        reference_wav = tmp / "reference.wav"
        sf.write(str(reference_wav), reference.samples.cpu().numpy(), reference.sample_rate, subtype="FLOAT")
        job = ABInputs(options=options, base_options=base_options, clip_lengths=settings.clip_lengths,
                       scripts={L: inputs.script_for(L, settings.language) for L in settings.clip_lengths},
                       language=settings.language, reference_wav=reference_wav,
                       transcript=settings.transcript or inputs.reference_transcript(settings.language),
                       avatar=settings.avatar or inputs.default_avatar_path())
        run = run_ab(base_root, head_root, job, opts, out_dir, factory=factory, factory_args=factory_args,
                     progress=progress)
    context = capture_context(config)
    rows = ab_rows(run, context, base_ref, base_sha)
    write_csv(out_dir / "ab.csv", rows)
    write_json(out_dir / "ab.json", {
        "format": AB_FORMAT, "verdict": run.verdict, "base_ref": base_ref, "base_commit": base_sha,
        "settings": {**opts.__dict__, "order": "alternating A B / B A per pair", "options_sent": job.options,
                     "base_options_sent": job.base_options,
                     **settings.model_dump(mode="json")},
        "notes": run.notes, "rules": " ".join((abtest.__doc__ or "").split()),
        "clips": [{**row, "base_ms": c.base_ms, "head_ms": c.head_ms} for row, c in zip(rows, run.clips, strict=True)],
        "context": context})
    console.print(ab_table(run, base_ref))
    for note in run.notes:
        console.print(f"note: {note}")
    console.print(f"A/B verdict: {run.verdict}; files: {out_dir / 'ab.csv'}, {out_dir / 'ab.json'}")
    return run


def explicit_options(config: PipelineConfig) -> dict[str, Any]:
    """The options of `config` that were set explicitly (file keys, flags), not its defaults: what
    travels to each side, which then fills in its own defaults."""
    return config.model_dump(mode="json", exclude_unset=True)
