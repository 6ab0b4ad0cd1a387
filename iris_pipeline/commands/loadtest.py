"""`iris loadtest URL`: Locust, headless, against `iris serve` on this machine -> `iris bench`'s files."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("loadtest")
    def loadtest_command(
        url: str = typer.Argument(..., help="the service, on this machine: http://127.0.0.1:8000"),
        clip_lengths: str = typer.Option("5", "--clip-lengths", help="clip lengths in seconds, e.g. 5,10"),
        concurrency: str = typer.Option("1,2,4", "--concurrency", help="concurrency steps (users in a closed loop)"),
        clips: int = typer.Option(8, "--clips", help="renders counted per step (after the loop fills)"),
        step_seconds: float = typer.Option(600.0, "--step-seconds", help="time limit of one step"),
        token_file: Path | None = typer.Option(None, "--token-file", help="file whose first line is the token"),
        token_env: str = typer.Option("IRIS_SERVE_TOKEN", "--token-env", help="variable holding the token"),
        out: Path | None = typer.Option(None, "--out", help="output directory (default: benchmarks/out/loadtest-<UTC>)"),
        seed: int = typer.Option(0, "--seed", help="seed of the jobs and the synthetic voice"),
    ) -> None:
        """Load-test a served chain with Locust (headless, loopback only, bounded in count and time)."""
        from iris_pipeline.benchmark.settings import comma_separated, parse_clip_lengths
        from iris_pipeline.serve.config import read_token
        from iris_pipeline.serve.loadtest.runner import LoadTestPlan, run_loadtest

        steps = tuple(comma_separated(concurrency, "--concurrency", int))
        out_dir = out or Path("benchmarks") / "out" / f"loadtest-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
        plan = LoadTestPlan(url=url, token=read_token(token_file, token_env, "--token-file"),
                            clip_lengths=tuple(parse_clip_lengths(clip_lengths)), concurrencies=steps,
                            clips_per_step=clips, step_seconds=step_seconds, out_dir=out_dir, seed=seed)
        result = run_loadtest(plan, echo=typer.echo)
        typer.echo(f"wrote {result['files']['csv']} (every step), {result['files']['steps']} (the figures) and "
                   f"{out_dir}/c<N>/ per step (iris report reads each)")
