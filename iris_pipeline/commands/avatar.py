"""`iris avatar prepare`: decode an avatar, find its face in every frame, and cache the crops."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    avatar_app = typer.Typer(help="Avatars: frames, face boxes and crops, prepared once and cached.",
                             no_args_is_help=True)
    app.add_typer(avatar_app, name="avatar")

    @avatar_app.command("prepare")
    def prepare(
        avatar: Path = typer.Argument(..., help="face image (looped) or video"),
        fps: float = typer.Option(25.0, "--fps", min=1.0, max=120.0, help="output frame rate"),
        checkpoint: Path | None = typer.Option(
            None, "--checkpoint", help="official S3FD checkpoint (s3fd.pth); without it the bundled cascade is used"),
        cache_dir: Path | None = typer.Option(None, "--cache-dir", help="avatar cache (default: the user cache)"),
        device: str = typer.Option("cpu", "--device", help="device of the S3FD detector: cpu, cuda, cuda:N"),
        resize_factor: int = typer.Option(1, "--resize-factor", min=1, max=16,
                                          help="downscale frames by this integer factor first"),
    ) -> None:
        """Prepare AVATAR (face boxes by S3FD with --checkpoint, else by the bundled cascade)."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from iris_pipeline.avatar import prepare_avatar
        from iris_pipeline.cache import DiskCache, default_cache_dir
        from iris_pipeline.face_detectors import make_face_detector

        detector = make_face_detector("auto", checkpoint, device)
        cache = DiskCache(cache_dir or default_cache_dir("avatars"))
        console = Console(stderr=True)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            tasks: dict[str, int] = {}

            def report(step: str, done: int, total: int) -> None:
                if step not in tasks:
                    tasks[step] = bar.add_task(step, total=total)
                bar.update(tasks[step], completed=done, total=total)

            result = prepare_avatar(avatar, fps, detector=detector, cache=cache, resize_factor=resize_factor,
                                    progress=report)
        y1, y2, x1, x2 = result.boxes[0].tolist()
        kind = "image (looped)" if result.still else "video"
        typer.echo(f"{avatar}: {kind}, {result.num_frames} frame(s) of {result.width}x{result.height} at {fps:g} fps; "
                   f"face box of frame 0 (x1, y1, x2, y2) = ({x1}, {y1}, {x2}, {y2}); detector {detector.cache_id}; "
                   f"cached as {result.key[:16]} in {cache.directory}")
