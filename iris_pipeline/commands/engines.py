"""`iris engines build|list|prune|stats`: manage the engine cache (TensorRT engines, ONNX, AOTInductor)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from iris_pipeline.errors import ConfigError, InputError

GRAPH_MODELS = ("wav2lip", "fastpitch")
ARTIFACTS = ("onnx", "tensorrt", "aoti")


def _cache(directory: Path | None):
    from iris_pipeline.backends import EngineCache, default_engine_dir

    return EngineCache(directory or default_engine_dir())


def _graphs(model_name: str, size: str, checkpoint: Path | None, profile: str | None):
    from iris_pipeline import models
    from iris_pipeline.backends.stage_graphs import fastpitch_graphs, wav2lip_graph

    if model_name not in GRAPH_MODELS:
        raise InputError(f"--model {model_name!r}: no exportable graph; allowed: {', '.join(GRAPH_MODELS)}")
    ranges = None
    if profile:
        try:
            ranges = {k: tuple(v) for k, v in json.loads(profile).items()}
        except (ValueError, TypeError, AttributeError):
            raise InputError(
                f"--profile {profile!r}: expected JSON like '{{\"batch\": [1, 16, 64]}}'"
            ) from None
    model = models.get(model_name, checkpoint, size)
    if model_name == "wav2lip":
        return [wav2lip_graph(model, size, ranges)]
    return list(fastpitch_graphs(model, size, ranges))


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Build, list and prune cached inference engines.", no_args_is_help=True)
    dir_option = typer.Option(
        None,
        "--dir",
        help="engine cache directory (default: $IRIS_ENGINE_DIR or ~/.cache/iris_pipeline/engines)",
    )

    @group.command("build")
    def build(
        model: str = typer.Option(
            ..., "--model", help=f"model whose graphs to build: {', '.join(GRAPH_MODELS)}"
        ),
        artifact: str = typer.Option("onnx", "--backend", help=f"artifact kind: {', '.join(ARTIFACTS)}"),
        precision: str = typer.Option("fp32", "--precision", help="fp32, fp16, bf16 or int8"),
        size: str = typer.Option("full", "--size", help="model size: full or tiny"),
        device: str = typer.Option("cuda", "--device", help="device for tensorrt / aoti builds"),
        checkpoint: Path | None = typer.Option(None, "--checkpoint", help="official checkpoint file"),
        profile: str | None = typer.Option(
            None, "--profile", help="JSON shape ranges overriding the defaults"
        ),
        directory: Path | None = dir_option,
    ) -> None:
        """Build (or find in the cache) the engines of one model; prints hit/build and timings."""
        from iris_pipeline.backends import aoti_graph, onnx_artifact, tensorrt_graph

        if artifact not in ARTIFACTS:
            raise ConfigError(f"--backend {artifact!r}: allowed: {', '.join(ARTIFACTS)}")
        if size not in ("full", "tiny"):
            raise ConfigError(f"--size {size!r}: allowed: full, tiny")
        if precision not in ("fp32", "fp16", "bf16", "int8"):
            raise ConfigError(f"--precision {precision!r}: allowed: fp32, fp16, bf16, int8")
        cache = _cache(directory)
        for spec in _graphs(model, size, checkpoint, profile):
            start = time.perf_counter()
            if artifact == "onnx":
                cached = onnx_artifact(spec, precision, cache=cache)
            elif artifact == "tensorrt":
                cached = tensorrt_graph(spec, precision, device, cache=cache)
            else:
                cached = aoti_graph(spec, precision, "cpu" if device == "cpu" else device, cache=cache)
            how = "cache hit" if cached.hit else f"built in {cached.build_seconds:.1f} s"
            accuracy = cached.entry.info.get("accuracy_engine") or cached.entry.info.get(
                "accuracy_fake_quant"
            )
            typer.echo(
                f"{spec.name} {artifact} {precision}: {how}, loaded in {cached.load_seconds:.2f} s "
                f"({time.perf_counter() - start:.1f} s total) -> {cached.entry.directory}"
            )
            if accuracy:
                typer.echo(
                    f"  accuracy vs fp32: cosine min {accuracy['min_cosine']}, "
                    f"max |err| {accuracy['max_abs_error']}"
                )
        typer.echo(cache.stats().summary())

    @group.command("list")
    def list_entries(
        directory: Path | None = dir_option, as_json: bool = typer.Option(False, "--json", help="print JSON")
    ) -> None:
        """Every entry: graph, backend, precision, outcome, size, build seconds, directory."""
        cache = _cache(directory)
        rows = []
        for path, manifest in cache.entries():
            manifest = manifest or {}
            rows.append(
                {
                    "graph": manifest.get("graph", path.parent.name),
                    "backend": manifest.get("backend", "?"),
                    "precision": manifest.get("precision", "?"),
                    "outcome": manifest.get("outcome", "unreadable"),
                    "size_mb": round(manifest.get("size_bytes", 0) / 1e6, 2),
                    "build_s": manifest.get("build_seconds"),
                    "built_at": manifest.get("finished_at"),
                    "path": str(path),
                }
            )
        if as_json:
            typer.echo(json.dumps({"entries": rows, "stats": cache.stats().as_dict()}, indent=2))
            return
        for row in rows:
            typer.echo(
                f"{row['graph']:<28} {row['backend']:<12} {row['precision']:<5} {row['outcome']:<10} "
                f"{row['size_mb']:>8.2f} MB {row['build_s'] or 0:>8.1f} s  {row['path']}"
            )
        typer.echo(f"{len(rows)} entries in {cache.root}; {cache.stats().summary()}")

    @group.command("prune")
    def prune(
        everything: bool = typer.Option(False, "--all", help="remove every entry"),
        failed: bool = typer.Option(False, "--failed", help="remove failed, refused and unreadable entries"),
        older_than_days: float | None = typer.Option(
            None, "--older-than", help="remove entries unused for N days"
        ),
        directory: Path | None = dir_option,
    ) -> None:
        """Remove entries (and builds left half-way by killed processes)."""
        if not (everything or failed or older_than_days is not None):
            raise InputError("iris engines prune: say what to remove: --all, --failed or --older-than DAYS")
        cache = _cache(directory)
        removed = cache.prune(
            everything=everything,
            failed=failed,
            older_than_s=None if older_than_days is None else older_than_days * 86400,
        )
        for path in removed:
            typer.echo(f"removed {path}")
        typer.echo(f"{len(removed)} entries removed from {cache.root}")

    @group.command("stats")
    def stats(directory: Path | None = dir_option) -> None:
        """Build attempts, successes, cache hits and build seconds, per graph (JSON)."""
        cache = _cache(directory)
        typer.echo(json.dumps({"summary": cache.stats().summary(), **cache.stats().as_dict()}, indent=2))

    app.add_typer(group, name="engines")
