"""`iris render`: script + reference voice + avatar -> lip-synced mp4 (+ .vtt subtitles).

Every input is checked before any model is loaded, cheapest first (text, language, reference audio,
options, checkpoint files, output path, then the avatar's face, which needs the face detector but
not the lip-sync model), so bad input fails in seconds. The mp4 is written to a temporary
file that is renamed only when complete, so an error, Ctrl-C, SIGTERM or SIGHUP never leaves a
partial clip behind, and temporary files of renders that were killed outright are removed by the
next render into the same directory. Without a terminal, progress is one plain line per stage and
chunk on stdout (stderr keeps only problems), so CI logs show where a long render is.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from iris_pipeline.errors import InputError, IrisError

# Signals that end a render the way Ctrl-C does: `timeout`, systemd and container stops send
# SIGTERM; a closed terminal or ssh session sends SIGHUP.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """SIGTERM / SIGHUP, raised in the main thread like Ctrl-C's KeyboardInterrupt, so every clean-up
    path that handles Ctrl-C handles them too."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class RenderInterrupted(IrisError):
    """A render stopped by a signal; the exit status is the shells' 128 + signal number (130 for Ctrl-C)."""

    def __init__(self, signum: int):
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        super().__init__(f"interrupted ({name}): no clip was written")
        self.exit_code = 128 + int(signum)


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signum)


@contextmanager
def stop_signals_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Stopped` in the main thread for the block's duration."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS if sig != signal.SIGINT}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def interrupt_deferred() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP back until the block is done, then raise them (main thread only).

    Used around opening the mp4: an interrupt inside the writer's constructor would leave its
    temporary file behind with no writer to remove it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            raise KeyboardInterrupt if received[0] == signal.SIGINT else Stopped(received[0])


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
    """Text, language and transcript, before anything is read or built (the script's length and what
    the chunk planner refuses are the pipeline's `check_job`)."""
    from iris_pipeline.chunking import SPEECH_RATES

    if not text.strip():
        raise InputError("--text: the script is empty")
    if language not in SPEECH_RATES:
        raise InputError(f"--language {language!r}: not supported; supported: {', '.join(sorted(SPEECH_RATES))}")
    if not transcript.strip():
        raise InputError("--transcript: empty; give the words spoken in the reference recording")


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
            with stop_signals_as_interrupts():
                _render(text, language, reference, transcript, avatar, out, seconds, chunk_seconds,
                        checkpoints, size, device, config, seed)
        except KeyboardInterrupt as exc:
            raise RenderInterrupted(getattr(exc, "signum", signal.SIGINT)) from None


def _render(text: str, language: str, reference: Path, transcript: str, avatar: Path, out: Path,
            seconds: float | None, chunk_seconds: float | None, checkpoints: Path | None, size: str | None,
            device: str | None, config: Path | None, seed: int | None) -> None:
    from iris_pipeline.atomic import remove_stale_temp_files
    from iris_pipeline.checkpoints import apply_checkpoint_dir, naming_the_file, uses_random_weights
    from iris_pipeline.config import load_pipeline_config
    from iris_pipeline.errors import CheckpointError, ConfigError
    from iris_pipeline.pipeline import Job, Pipeline
    from iris_pipeline.stages import check_stage_options

    console = Console(stderr=True)
    cfg = load_pipeline_config(config, size=size, device=device, seed=seed)
    check_stage_options(cfg)  # every stage's options, as `iris config check` validates them
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
    report = RenderProgress(console, cfg.stages)
    pipeline = Pipeline(cfg, on_progress=report.on_event)
    job = Job(text=text, language=language, reference=ref, transcript=transcript, avatar=None,
              seconds=seconds, seed=cfg.seed)
    try:  # the pipeline's own limits (script length, --seconds), before any model is loaded
        pipeline.check_job(job)
    except InputError as exc:
        message = str(exc)
        raise InputError(f"--{message}" if message.startswith(("text:", "seconds:")) else message) from None
    check_output_path(out)
    remove_stale_temp_files(out.parent)  # clips of renders that were killed outright
    try:
        job.avatar = prepare_avatar(pipeline, avatar)
        if uses_random_weights(cfg):
            console.print("note: no checkpoint for some stages: their weights are random and the output is "
                          "noise (give --checkpoints DIR for real clips)", soft_wrap=True, highlight=False)
        with report:
            pipeline.prepare(progress=report.loading)
            report.models_loaded()
            tally = _write_clip(pipeline, job, out, report)
    except CheckpointError as exc:  # a wrong file in --checkpoints / the config: say which
        raise naming_the_file(exc, cfg) from None
    finally:
        pipeline.close()
    typer.echo(f"wrote {out} ({tally.seconds:.2f} s, {tally.frames} frames at "
               f"{cfg.video.fps:g} fps) and {out.with_suffix('.vtt')}; latency {tally.latency_ms:.0f} ms, "
               f"first chunk {tally.first_chunk_ms:.0f} ms")


class RenderProgress:
    """Progress of one render: bars on stderr's terminal; otherwise one plain, flushed line on stdout
    per model loaded and per stage and chunk (CI logs, nohup), leaving stderr to problems."""

    def __init__(self, console: Console, stages: list[str]):
        self.console = console
        self.stages = list(stages)
        self.plain = not console.is_terminal
        self.started = time.perf_counter()
        self.chunks: int | None = None
        self.frames = 0
        self.bars: dict[str, int] = {}
        self._loaded = 0
        self.progress = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False, disable=self.plain)
        self._preparing: int | None = None

    def __enter__(self) -> RenderProgress:
        self.progress.__enter__()
        self._preparing = self.progress.add_task("loading models", total=len(self.stages))
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def line(self, text: str) -> None:
        if self.plain:
            print(f"progress: {text} [{time.perf_counter() - self.started:.1f} s]", file=sys.stdout, flush=True)

    def loading(self, name: str) -> None:
        self._loaded += 1
        self.progress.update(self._preparing, completed=self._loaded - 1, description=f"loading {name}")
        self.line(f"loading {name} ({self._loaded}/{len(self.stages)})")

    def models_loaded(self) -> None:
        self.progress.update(self._preparing, completed=len(self.stages), description="models loaded")
        self.line("models loaded")
        self.bars.update({name: self.progress.add_task(name, total=None) for name in self.stages})
        if "rvc" in self.bars:
            self.progress.update(self.bars["rvc"], total=1)

    def on_event(self, event) -> None:  # a ProgressEvent, from the pipeline's workers
        if event.stage == "plan":
            self.chunks = event.chunks
            for stage in ("vallex", "fastpitch"):
                if stage in self.bars:
                    self.progress.update(self.bars[stage], total=event.chunks)
            self.line(f"script planned: {event.chunks} chunk(s)")
            return
        if event.stage in self.bars:
            self.progress.advance(self.bars[event.stage], event.frames if event.stage == "wav2lip" else 1)
        of = f"/{self.chunks}" if self.chunks else ""
        if event.stage == "rvc":
            self.line("rvc: voice prompt converted")
        elif event.stage == "wav2lip":
            self.frames += event.frames
            self.line(f"wav2lip: chunk {event.chunk + 1}{of} done, {event.frames} frames ({self.frames} in all)")
        else:
            self.line(f"{event.stage}: chunk {event.chunk + 1}{of} done")

    def clip_frames(self, total: int) -> None:
        if "wav2lip" in self.bars:
            self.progress.update(self.bars["wav2lip"], total=total)


def _write_clip(pipeline, job, out: Path, report: RenderProgress | None = None):
    """Stream the job's chunks into the mp4 as they come; the .vtt once all are in.

    A chunk is dropped as soon as it is written (only its words stay, for the subtitles), so the
    memory of a render does not grow with the clip's length.
    """
    from iris_pipeline.pipeline import ClipTally
    from iris_pipeline.timebase import CODEC_RATE
    from iris_pipeline.video import Mp4Writer, close_with_subtitles

    handle = pipeline.submit(job)
    tally = ClipTally(handle)
    writer = None
    try:
        try:
            for chunk in handle.chunks():
                if chunk.last and report is not None:
                    report.clip_frames(chunk.frame_start + chunk.frames.shape[0])
                if writer is None:
                    height, width = job.avatar.frames.shape[1:3]
                    with interrupt_deferred():  # `writer` must exist once its temporary file does
                        writer = Mp4Writer(out, pipeline.config.video.fps, width, height, sample_rate=CODEC_RATE)
                if chunk.frames.shape[0]:
                    writer.write_frames(chunk.frames.numpy())
                writer.write_audio(chunk.speech)
                tally.add(chunk)
                del chunk  # the frames and speech go now, not when the next chunk arrives
            close_with_subtitles(writer, tally.words)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(f"--out {out}: no space left on the device; nothing was written") from None
        if exc.errno in (errno.EACCES, errno.EROFS, errno.EIO, errno.EFBIG):
            raise InputError(f"--out {out}: cannot write ({exc.strerror}); nothing was written") from None
        raise
    return tally
