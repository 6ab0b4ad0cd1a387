"""`iris render`: script + reference voice + avatar -> lip-synced mp4 (+ .vtt subtitles).

Every input is checked before any model is built; the mp4 is written to a temporary file that is
renamed only when complete, so an error or Ctrl-C never leaves a partial clip behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from iris_pipeline.errors import InputError


def check_output_path(out: Path) -> None:
    """The output must be an .mp4 in a directory we can create files in (tested by creating one)."""
    if out.suffix.lower() != ".mp4":
        raise InputError(f"--out {out}: the output must be an .mp4 file")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".iris-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"--out {out}: output directory is not writable ({exc.strerror or exc})") from None


def register(app: typer.Typer) -> None:
    @app.command("render")
    def render(
        text: str = typer.Option(..., "--text", help="the script to speak"),
        language: str = typer.Option("en", "--language", help="language of the script: en, zh, ja"),
        reference: Path = typer.Option(..., "--reference", help="recording of the voice (wav, flac, ...)"),
        transcript: str = typer.Option(..., "--transcript", help="what is said in the reference"),
        avatar: Path = typer.Option(..., "--avatar", help="face image or video"),
        out: Path = typer.Option(..., "--out", help="output .mp4 (a .vtt of the timings is written beside it)"),
        seconds: float | None = typer.Option(None, "--seconds", help="impose the speech length in seconds"),
        chunk_seconds: float | None = typer.Option(None, "--chunk-seconds", help="longest chunk of speech"),
        checkpoints: Path | None = typer.Option(None, "--checkpoints", help="directory of official checkpoints"),
        size: str | None = typer.Option(None, "--size", help="full | tiny (default: the config's, full)"),
        device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N"),
        config: Path | None = typer.Option(None, "--config", help="pipeline config YAML"),
        seed: int | None = typer.Option(None, "--seed", help="random seed (sampling, random weights)"),
    ) -> None:
        """Render a lip-synced clip of the avatar speaking TEXT in the reference's voice."""
        from iris_pipeline.audio import read_audio
        from iris_pipeline.checkpoints import apply_checkpoint_dir, uses_random_weights
        from iris_pipeline.config import load_pipeline_config
        from iris_pipeline.pipeline import Job, Pipeline, ProgressEvent
        from iris_pipeline.subtitles import write_webvtt
        from iris_pipeline.video import Mp4Writer

        console = Console(stderr=True)
        check_output_path(out)
        cfg = load_pipeline_config(config, size=size, device=device, seed=seed)
        if chunk_seconds is not None:
            cfg.chunking.chunk_seconds = chunk_seconds
        if checkpoints is not None:
            cfg = apply_checkpoint_dir(cfg, checkpoints)
        if not avatar.is_file():
            raise InputError(f"--avatar {avatar}: no such file")
        ref = read_audio(reference, name=f"--reference {reference}")

        with Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=False,
                      disable=not console.is_terminal) as progress:
            bars: dict[str, int] = {}

            def on_progress(event: ProgressEvent) -> None:
                if event.stage == "plan":
                    for stage in ("vallex", "fastpitch"):
                        if stage in bars:
                            progress.update(bars[stage], total=event.chunks)
                elif event.stage in bars:
                    progress.advance(bars[event.stage], event.frames if event.stage == "wav2lip" else 1)

            pipeline = Pipeline(cfg, on_progress=on_progress)
            if uses_random_weights(cfg):
                console.print("[yellow]note:[/] no checkpoint for some stages: their weights are random "
                              "and the output is noise (give --checkpoints DIR for real clips)")
            preparing = progress.add_task("loading models", total=len(cfg.stages))
            pipeline.prepare(progress=lambda name: progress.update(preparing, advance=1,
                                                                   description=f"loading {name}"))
            progress.update(preparing, completed=len(cfg.stages), description="models loaded")
            try:
                prepared_avatar = pipeline.prepare_avatar(avatar)
                bars = {name: progress.add_task(name, total=None) for name in cfg.stages}
                if "rvc" in bars:
                    progress.update(bars["rvc"], total=1)
                handle = pipeline.submit(Job(text=text, language=language, reference=ref, transcript=transcript,
                                             avatar=prepared_avatar, seconds=seconds, seed=cfg.seed))
                writer = None
                written: list = []  # chunks with their pixels dropped once written: memory stays flat
                frame_total = 0
                try:
                    for chunk in handle.chunks():
                        if "wav2lip" in bars and progress.tasks[bars["wav2lip"]].total is None and chunk.last:
                            progress.update(bars["wav2lip"], total=chunk.frame_start + chunk.frames.shape[0])
                        if writer is None:
                            height, width = prepared_avatar.frames.shape[1:3]
                            writer = Mp4Writer(out, cfg.video.fps, width, height, sample_rate=24000)
                        if chunk.frames.shape[0]:
                            writer.write_frames(chunk.frames.numpy())
                        writer.write_audio(chunk.speech)
                        frame_total += chunk.frames.shape[0]
                        chunk.frames = chunk.frames[:0]
                        written.append(chunk)
                    result = handle.assemble(written)
                except BaseException:
                    if writer is not None:
                        writer.abort()
                    raise
                writer.close()
            finally:
                pipeline.close()
        vtt = out.with_suffix(".vtt")
        write_webvtt(vtt, result.words)
        typer.echo(f"wrote {out} ({result.speech.seconds:.2f} s, {frame_total} frames at "
                   f"{cfg.video.fps:g} fps) and {vtt}; latency {result.latency_ms:.0f} ms, "
                   f"first chunk {result.first_chunk_ms:.0f} ms")
