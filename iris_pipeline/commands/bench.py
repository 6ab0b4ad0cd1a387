"""`iris bench`: the clip-length matrix on the chosen device -> bench.csv, throughput.csv, bench.json,
summary.json, a table of verdicts per target; `--gate` makes a missed target a non-zero exit; `--ab REF`
checks the working tree against REF for a latency regression instead (iris_pipeline.benchmark.abtest),
`--ab-base-set KEY=VALUE` against itself with another setting.

Exit codes with --gate: 0 all gates PASS; 1 a target missed (FAIL, or MARGINAL under the policy
`fail`); 3 no FAIL but a gate INVALID (could not be decided: no gates, NVML missing, ...). With --ab:
1 when a regression is found; 3 under --gate when the check was INVALID.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from iris_pipeline.benchmark.abtest import ALPHA, FLOOR_MS, MAX_PAIRS, MIN_SLOWDOWN

if TYPE_CHECKING:
    from iris_pipeline.benchmark.settings import BenchCommand

EXIT_FAIL = 1
EXIT_INVALID = 3


def default_out_dir() -> Path:
    return Path("benchmarks") / "out" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def bench_command(
    clip_lengths: str = typer.Option("5,10,30", "--clip-lengths", help="clip lengths in seconds (120 = stress, opt-in)"),
    runs: int | None = typer.Option(None, "--runs", min=1, help="measured runs per clip length (GPU 30, CPU 5)"),
    warmup: int | None = typer.Option(None, "--warmup", min=0, help="warm-up runs per clip length (GPU 3, CPU 1)"),
    config: Path | None = typer.Option(None, "--config", help="pipeline config YAML; an optional top-level "
                                                              "`bench:` mapping holds benchmark settings"),
    size: str | None = typer.Option(None, "--size", help="full or tiny (default: full with a GPU, tiny without)"),
    device: str | None = typer.Option(None, "--device", help="auto (default: the best device present), cpu, cuda:N"),
    precision: str | None = typer.Option(None, "--precision", help="every stage: fp32, fp16, bf16, int8"),
    backend: str | None = typer.Option(None, "--backend", help="every stage: eager, compile, tensorrt"),
    stage_precision: list[str] = typer.Option([], "--stage-precision", help="STAGE=PRECISION (repeatable)"),
    stage_backend: list[str] = typer.Option([], "--stage-backend", help="STAGE=BACKEND (repeatable)"),
    targets: Path | None = typer.Option(None, "--targets", help="targets YAML (default: the users' targets)"),
    out: Path | None = typer.Option(None, "--out", help="output directory (default: benchmarks/out/<UTC time>)"),
    gate: bool = typer.Option(False, "--gate", help="exit non-zero when a target is missed or undecidable"),
    history: Path | None = typer.Option(None, "--history", help="append the CSV rows to this history CSV"),
    statistic: list[str] = typer.Option([], "--statistic", help="FIGURE=STAT, e.g. latency_ms=p90 (repeatable)"),
    marginal: str | None = typer.Option(None, "--marginal", help="policy for MARGINAL gates (interval still across "
                                                                 "the target at --max-runs): pass or fail "
                                                                 "(default: the targets file's `marginal`, fail)"),
    max_runs: int | None = typer.Option(None, "--max-runs", min=1, help="cap of the runs taken while a gate is "
                                                                        "undecided (GPU 90, CPU 10)"),
    throughput: bool = typer.Option(True, "--throughput/--no-throughput", help="run the throughput phases"),
    max_concurrency: int | None = typer.Option(None, "--max-concurrency", min=1, help="ramp limit (GPU 16, CPU 2)"),
    concurrencies: str | None = typer.Option(None, "--concurrencies", help="throughput phases at exactly these "
                                                                           "concurrencies, e.g. 1,2,4,8 (default: "
                                                                           "the ramp 1, 2, 4, ... to saturation)"),
    schedulers: str | None = typer.Option(None, "--schedulers", help="tts schedulers measured side by side in the "
                                                                     "throughput phases, e.g. continuous,static "
                                                                     "(default: the configured one): throughput.csv"),
    phase_min_seconds: float | None = typer.Option(None, "--phase-min-seconds", min=0.0),
    phase_min_clips: int | None = typer.Option(None, "--phase-min-clips", min=1),
    encode_runs: int | None = typer.Option(None, "--encode-runs", min=0, help="runs also encoded to mp4 (5)"),
    fresh_voice: bool = typer.Option(False, "--fresh-voice", help="a new reference per run (times RVC per clip)"),
    avatar: Path | None = typer.Option(None, "--avatar", help="avatar image/video (default: the bundled photo)"),
    reference: Path | None = typer.Option(None, "--reference", help="reference speech (default: synthetic, seeded)"),
    transcript: str | None = typer.Option(None, "--transcript", help="transcript of --reference"),
    language: str | None = typer.Option(None, "--language", help="script language (en)"),
    seed: int | None = typer.Option(None, "--seed", help="seed of jobs, reference and bootstrap (0)"),
    ab: str | None = typer.Option(None, "--ab", help="A/B regression check of the working tree against this git ref"),
    ab_base_dir: Path | None = typer.Option(None, "--ab-base-dir", help="A/B against this checkout directory"),
    ab_pairs: int | None = typer.Option(None, "--ab-pairs", min=1,
                                        help="interleaved pairs per clip length (default: chosen from the "
                                             "calibration after a pilot, see `iris ab-calibrate`)"),
    ab_max_pairs: int = typer.Option(MAX_PAIRS, "--ab-max-pairs", min=1, help="cap of the chosen pair count"),
    ab_min_slowdown: float = typer.Option(MIN_SLOWDOWN, "--ab-min-slowdown",
                                          help="slowdown the confidence bound must exceed (0.002 = 0.2 %)"),
    ab_floor_ms: float = typer.Option(FLOOR_MS, "--ab-floor-ms", help="absolute floor of the estimated difference, ms"),
    ab_alpha: float = typer.Option(ALPHA, "--ab-alpha", help="one-sided error level of the confidence bound"),
    ab_base_set: list[str] = typer.Option([], "--ab-base-set", help="KEY=VALUE config setting of the A/B base side "
                                                                    "only (repeatable); alone: the working tree "
                                                                    "against itself with that setting"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress lines"),
    profile: str | None = typer.Option(None, "--profile", help="shipped profile (optimised, eager) or a profile "
                                                               "YAML (default: optimised with a GPU, eager without)"),
    compare_eager: bool = typer.Option(True, "--compare-eager/--no-compare-eager",
                                       help="also measure the eager profile in this run: speedup.csv"),
) -> None:
    """Run the benchmark matrix and judge it against the targets (or, with --ab, against a base ref)."""
    flags = dict(locals())  # the parameters above, taken before anything else is bound here
    from iris_pipeline.benchmark.settings import BenchCommand

    run_bench(BenchCommand(**flags))


def run_bench(cmd: BenchCommand) -> None:
    """`iris bench` once its command line is parsed: the matrix against the targets, or the A/B check."""
    from rich.console import Console

    from iris_pipeline import profiles
    from iris_pipeline.config import load_targets

    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    progress = None if cmd.quiet else (lambda text: console.print(f"[dim]bench: {text}[/]"))
    file_settings, pipeline_data = _split_config(cmd.config)
    settings = cmd.bench_settings(file_settings)
    chosen = _profile(cmd.profile, cmd.device)
    resolved = profiles.resolve(chosen, _pipeline_config(cmd, chosen, pipeline_data, with_flags=True))
    eager_cfg = (_pipeline_config(cmd, profiles.load_profile(profiles.EAGER), pipeline_data)
                 if cmd.compare_eager and chosen.name != profiles.EAGER else None)
    out_dir = cmd.out or default_out_dir()
    if cmd.ab is not None or cmd.ab_base_dir is not None or cmd.ab_base_set:
        from iris_pipeline.benchmark.abrun import ABCommand, ABOptions, parse_base_settings, run_ab_command

        opts = ABOptions(pairs=cmd.ab_pairs, max_pairs=cmd.ab_max_pairs, alpha=cmd.ab_alpha,
                         min_slowdown=cmd.ab_min_slowdown, floor_ms=cmd.ab_floor_ms,
                         base_set=parse_base_settings(cmd.ab_base_set))
        ab = ABCommand(settings=settings, config=resolved.config, out_dir=out_dir, ref=cmd.ab,
                       base_dir=cmd.ab_base_dir, options=opts)
        run = run_ab_command(ab, Console(width=None if sys.stdout.isatty() else 160), progress)
        raise typer.Exit(ab_exit_code(run.verdict, cmd.gate))
    targets = load_targets(cmd.targets)  # read first: a bad targets file fails before the long run
    targets_name = str(cmd.targets) if cmd.targets else "default (iris_pipeline/defaults/targets.yaml)"
    code = _run(settings, resolved.config, targets, targets_name, out_dir, cmd.history, cmd.gate, console,
                progress, resolved, eager_cfg)
    raise typer.Exit(code)


def _pipeline_config(cmd: BenchCommand, profile, pipeline_data: dict | None, with_flags: bool = False):
    """The pipeline config of `profile` with the config file over it and, `with_flags`, the command's
    precision / backend flags over both (the eager comparison keeps the profile's own)."""
    from iris_pipeline import profiles
    from iris_pipeline.benchmark.session import build_config
    from iris_pipeline.benchmark.settings import parse_assignments

    data = pipeline_data["data"] if pipeline_data is not None else None
    source = pipeline_data["source"] if pipeline_data is not None else "bench options"
    flags = {}
    if with_flags:
        flags = {"precision": cmd.precision, "backend": cmd.backend,
                 "stage_precision": parse_assignments(cmd.stage_precision, "--stage-precision"),
                 "stage_backend": parse_assignments(cmd.stage_backend, "--stage-backend")}
    return build_config({"data": profiles.profile_data(profile, data), "source": f"profile {profile.name} + {source}"},
                        size=cmd.size, device=cmd.device, **flags)


def _profile(name: str | None, device: str | None):
    """The chosen profile, or the default one for where the pipeline will run."""
    import torch

    from iris_pipeline import profiles

    on_gpu = (device or "auto") != "cpu" and torch.cuda.is_available()
    return profiles.load_profile(name or profiles.default_profile_name(on_gpu))


def _split_config(path: Path | None) -> tuple[dict, dict | None]:
    """The `bench:` mapping of a config YAML (settings) and the rest (the pipeline config)."""
    if path is None:
        return {}, None
    import yaml

    from iris_pipeline.errors import ConfigError

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    bench = data.pop("bench", None) or {}
    if not isinstance(bench, dict):
        raise ConfigError(f"{path}: bench: must be a mapping of benchmark settings")
    return bench, {"data": data, "source": str(path)}


def _run(settings, cfg, targets, targets_name: str, out_dir: Path, history: Path | None, gate: bool,
         console, progress, resolved=None, eager_cfg=None) -> int:
    from rich.console import Console

    from iris_pipeline import profiles
    from iris_pipeline.benchmark import results, verdicts
    from iris_pipeline.benchmark.session import run_benchmark
    from iris_pipeline.benchmark.table import print_report

    result = run_benchmark(settings, cfg, targets=targets, progress=progress)
    if resolved is not None:  # which profile was measured, and every stage that fell back, in each row
        result.context.update(resolved.context())
        result.notes.extend(resolved.notes())
    if resolved is not None and eager_cfg is not None:
        if progress:
            progress("measuring the eager profile beside it (speed-up column)")
        eager = run_benchmark(settings.model_copy(update={"throughput": False}), eager_cfg, targets=targets,
                              progress=progress)
        rows = profiles.speedup_rows(resolved, result.clips, eager.clips)
        result.notes.extend(f"clip {r['clip_s']:g} s: {resolved.name} {r['speedup_vs_eager']}x eager "
                            f"(median latency {r['latency_ms_median']} vs {r['eager_latency_ms_median']} ms)"
                            for r in rows)
        typer.echo(f"speed-up: {profiles.write_speedup(rows, out_dir)}")
    found = results.evaluate(result, targets)
    if not found:
        result.notes.append("no targets for these clip lengths in the targets file: nothing was gated, so the "
                            "verdict is INVALID")
    paths = results.write_outputs(result, found, out_dir, targets_name, history)
    rows = results.csv_rows(result)
    overall = verdicts.overall(found)
    print_report(rows, found, result.gpu_name, result.notes, overall,
                 Console(width=None if sys.stdout.isatty() else 160), throughput=results.throughput_rows(result))
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")
    typer.echo(f"results in {out_dir}")
    if not gate:
        return 0
    code, lines = gate_outcome(found, result.gpu_name)
    for line in lines:
        typer.echo(line, err=True)
    return code


def gate_outcome(found, gpu: str | None) -> tuple[int, list[str]]:
    """Exit code of `--gate` and the lines saying why: FAIL -> 1 (the failed gates, MARGINAL ones under
    the policy fail included), else INVALID -> 3 (the undecided gates, or no gate at all), else 0."""
    from iris_pipeline.benchmark import verdicts

    overall = verdicts.overall(found)
    if overall == verdicts.PASS:
        return 0, []
    lines = [f"PERF GATE {v.message(gpu)}" for v in found if v.outcome == overall]
    if not found:
        lines = ["PERF GATE INVALID: no gate for these clip lengths in the targets file; nothing was checked"]
    return (EXIT_FAIL if overall == verdicts.FAIL else EXIT_INVALID), lines


def ab_exit_code(verdict: str, gate: bool) -> int:
    """`--ab`: 1 for a REGRESSION; 3 for INVALID under --gate; else 0."""
    from iris_pipeline.benchmark import abtest

    if verdict == abtest.REGRESSION:
        return EXIT_FAIL
    return EXIT_INVALID if gate and verdict == abtest.INVALID else 0


def register(app: typer.Typer) -> None:
    from iris_pipeline.commands.ab_calibrate import ab_calibrate_command

    app.command("bench")(bench_command)
    app.command("ab-calibrate")(ab_calibrate_command)
