"""`iris render`: script + reference voice + avatar -> lip-synced mp4 (+ .vtt subtitles).

Every input is checked before any model is loaded, cheapest first (text, language, reference audio,
options, checkpoint files, output path, then the avatar's face, which needs the face detector but
not the lip-sync model), so bad input fails in seconds. The mp4 is written to a temporary
file that is renamed only when complete, so an error or Ctrl-C never leaves a partial clip behind.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from iris_pipeline.errors import InputError, IrisError


class RenderInterrupted(IrisError):
    """Ctrl-C during a render; 130 is the shells' exit status for SIGINT."""

    exit_code = 130


@contextmanager
def interrupt_deferred() -> Iterator[None]:
    """Hold a Ctrl-C back until the block is done, then raise it (main thread only).

    Used around opening the mp4: an interrupt inside the writer's constructor would leave its
    temporary file behind with no writer to remove it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def check_output_path(out: Path) -> None:
    """The output must be an .mp4 in a directory we can create files in (tested by creating one)."""
    if out.suffix.lower() != ".mp4":
        raise InputError(f"--out {out}: the output must be an .mp4 file")
    if out.exists() and not out.is_file():
        raise InputError(f"--out {out}: exists and is not a regular file")
    parent = out.parent if str(out.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"--out {out}: output directory is not writable ({existing} is not a directory)")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with interrupt_deferred():  # the probe must not outlive a Ctrl-C
            fd, probe = tempfile.mkstemp(dir=parent, prefix=".iris-write-test-")
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise InputError(f"--out {out}: output directory is not writable ({exc.strerror or exc})") from None


def check_script(text: str, language: str, transcript: str) -> None:
    """Text, language and transcript, before anything is read or built."""
    from iris_pipeline.chunking import SPEECH_RATES, plan_chunks

    if not text.strip():
        raise InputError("--text: the script is empty")
    if language not in SPEECH_RATES:
        raise InputError(f"--language {language!r}: not supported; supported: {', '.join(sorted(SPEECH_RATES))}")
    if not transcript.strip():
        raise InputError("--transcript: empty; give the words spoken in the reference recording")
    plan_chunks(text, language)  # anything else the chunk planner refuses, in its own words


def read_reference(path: Path, max_seconds: float):
    """The reference recording, refused when unreadable, NaN, silent, or outside the allowed length."""
    from iris_pipeline.audio import check_waveform, read_audio
    from iris_pipeline.pipeline import MIN_REFERENCE_SECONDS

    wave = read_audio(path, name="--reference")
    check_waveform(wave, name=f"--reference {path}", min_seconds=MIN_REFERENCE_SECONDS, max_seconds=max_seconds)
    return wave


def prepare_avatar(pipeline, path: Path):
    """The avatar's frames and face boxes; its errors named after the option."""
    if not path.is_file():
        raise InputError(f"--avatar {path}: no such file")
    try:
        return pipeline.prepare_avatar(path)
    except InputError as exc:
        message = str(exc)
        prefix = f"avatar {path}"
        raise InputError(f"--{message}" if message.startswith(prefix) else f"--avatar {path}: {message}") from None


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
        try:
            _render(text, language, reference, transcript, avatar, out, seconds, chunk_seconds, checkpoints,
                    size, device, config, seed)
        except KeyboardInterrupt:
            raise RenderInterrupted("interrupted (Ctrl-C): no clip was written") from None


def _render(text: str, language: str, reference: Path, transcript: str, avatar: Path, out: Path,
            seconds: float | None, chunk_seconds: float | None, checkpoints: Path | None, size: str | None,
            device: str | None, config: Path | None, seed: int | None) -> None:
    from iris_pipeline.checkpoints import apply_checkpoint_dir, naming_the_file, uses_random_weights
    from iris_pipeline.config import load_pipeline_config
    from iris_pipeline.errors import CheckpointError, ConfigError
    from iris_pipeline.pipeline import Job, Pipeline, ProgressEvent

    console = Console(stderr=True)
    cfg = load_pipeline_config(config, size=size, device=device, seed=seed)
    check_script(text, language, transcript)
    ref = read_reference(reference, cfg.max_reference_seconds)
    if chunk_seconds is not None:
        try:
            cfg.chunking.chunk_seconds = chunk_seconds
        except ValueError as exc:  # pydantic's ValidationError
            bound = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
            raise ConfigError(f"--chunk-seconds {chunk_seconds:g}: {bound}") from None
    if checkpoints is not None:
        cfg = apply_checkpoint_dir(cfg, checkpoints)
    bars: dict[str, int] = {}
    progress = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=False, disable=not console.is_terminal)

    def on_progress(event: ProgressEvent) -> None:
        if event.stage == "plan":
            for stage in ("vallex", "fastpitch"):
                if stage in bars:
                    progress.update(bars[stage], total=event.chunks)
        elif event.stage in bars:
            progress.advance(bars[event.stage], event.frames if event.stage == "wav2lip" else 1)

    pipeline = Pipeline(cfg, on_progress=on_progress)
    job = Job(text=text, language=language, reference=ref, transcript=transcript, avatar=None,
              seconds=seconds, seed=cfg.seed)
    pipeline.check_job(job)  # the pipeline's own limits (e.g. --seconds), before any model is loaded
    check_output_path(out)
    try:
        job.avatar = prepare_avatar(pipeline, avatar)
        if uses_random_weights(cfg):
            console.print("note: no checkpoint for some stages: their weights are random and the output is "
                          "noise (give --checkpoints DIR for real clips)", soft_wrap=True, highlight=False)
        with progress:
            preparing = progress.add_task("loading models", total=len(cfg.stages))
            pipeline.prepare(progress=lambda name: progress.update(preparing, advance=1,
                                                                   description=f"loading {name}"))
            progress.update(preparing, completed=len(cfg.stages), description="models loaded")
            bars.update({name: progress.add_task(name, total=None) for name in cfg.stages})
            if "rvc" in bars:
                progress.update(bars["rvc"], total=1)
            result, frame_total = _write_clip(pipeline, job, out, progress, bars)
    except CheckpointError as exc:  # a wrong file in --checkpoints / the config: say which
        raise naming_the_file(exc, cfg) from None
    finally:
        pipeline.close()
    typer.echo(f"wrote {out} ({result.speech.seconds:.2f} s, {frame_total} frames at "
               f"{cfg.video.fps:g} fps) and {out.with_suffix('.vtt')}; latency {result.latency_ms:.0f} ms, "
               f"first chunk {result.first_chunk_ms:.0f} ms")


def _write_clip(pipeline, job, out: Path, progress: Progress, bars: dict[str, int]):
    """Stream the job's chunks into the mp4 as they come; the .vtt once all are in."""
    from iris_pipeline.pipeline import CODEC_RATE
    from iris_pipeline.subtitles import write_webvtt
    from iris_pipeline.video import Mp4Writer

    handle = pipeline.submit(job)
    writer = None
    written: list = []  # chunks with their pixels dropped once written: memory stays flat
    frame_total = 0
    try:
        for chunk in handle.chunks():
            if "wav2lip" in bars and progress.tasks[bars["wav2lip"]].total is None and chunk.last:
                progress.update(bars["wav2lip"], total=chunk.frame_start + chunk.frames.shape[0])
            if writer is None:
                height, width = job.avatar.frames.shape[1:3]
                with interrupt_deferred():  # `writer` must exist once its temporary file does
                    writer = Mp4Writer(out, pipeline.config.video.fps, width, height, sample_rate=CODEC_RATE)
            if chunk.frames.shape[0]:
                writer.write_frames(chunk.frames.numpy())
            writer.write_audio(chunk.speech)
            frame_total += chunk.frames.shape[0]
            chunk.frames = chunk.frames[:0]
            written.append(chunk)
        result = handle.assemble(written)
        vtt = out.with_suffix(".vtt")
        write_webvtt(vtt, result.words)
        try:
            writer.close()
        except BaseException:
            vtt.unlink(missing_ok=True)
            raise
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return result, frame_total
