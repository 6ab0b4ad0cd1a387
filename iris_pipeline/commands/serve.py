"""`iris serve`: the chain as an HTTP service on Ray Serve (embedded local Ray, or a cluster), or
its Serve config file for `serve deploy` / KubeRay (`--emit-config`)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer


def _config(config: Path | None, size: str | None, device: str | None, host: str | None, port: int | None,
            token_file: Path | None, embedded: bool):
    import torch

    from iris_pipeline.benchmark.session import default_size
    from iris_pipeline.config import load_pipeline_config

    cfg = load_pipeline_config(config, device=device)
    data = cfg.model_dump(mode="json")
    explicit = set(load_pipeline_config(config).model_fields_set) if config is not None else set()
    if size is not None:
        data["size"] = size
    elif "size" not in explicit:
        data["size"] = default_size(data["device"])
    if embedded and data["device"] == "auto" and not torch.cuda.is_available():
        data["device"] = "cpu"  # no GPU here: no replica asks for one
    serving = data["serving"]
    for key, value in (("host", host), ("port", port), ("token_file", str(token_file) if token_file else None)):
        if value is not None:
            serving[key] = value
    from iris_pipeline.config import parse_pipeline_config

    return parse_pipeline_config(data, source=str(config) if config else "serve options")


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        config: Path | None = typer.Option(None, "--config", help="pipeline config YAML (its `serving:` section "
                                                                   "sets replicas, resources, limits)"),
        size: str | None = typer.Option(None, "--size", help="full | tiny (default: full with a GPU, tiny without)"),
        device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda"),
        host: str | None = typer.Option(None, "--host", help="address to bind (default 127.0.0.1: this machine only)"),
        port: int | None = typer.Option(None, "--port", help="HTTP port (default 8000)"),
        token_file: Path | None = typer.Option(None, "--token-file", help="file whose first line is the bearer "
                                                                           "token (default: $IRIS_SERVE_TOKEN)"),
        address: str | None = typer.Option(None, "--address", help="deploy to this running Ray cluster "
                                                                   "(e.g. ray://head:10001 or auto) and return"),
        num_cpus: float | None = typer.Option(None, "--num-cpus", min=1, help="CPUs of the embedded Ray (default: all)"),
        emit_config: Path | None = typer.Option(None, "--emit-config", help="write the Serve config YAML "
                                                                             "(serve deploy / KubeRay) and exit"),
    ) -> None:
        """Serve the chain over HTTP (Ray Serve): register voices and avatars, render clips, stream chunks."""
        cfg = _config(config, size, device, host, port, token_file, embedded=address is None and emit_config is None)
        from iris_pipeline.serve import launch

        if emit_config is not None:
            launch.write_serve_config(cfg, emit_config)
            typer.echo(f"wrote {emit_config}: deploy it with `serve deploy {emit_config}` or as a RayService's "
                       "serveConfigV2")
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            launch.start(cfg, address=address, num_cpus=num_cpus)
            url = f"http://{cfg.serving.host}:{cfg.serving.port}"
            if address is not None:
                typer.echo(f"deployed to the Ray cluster at {address}; the API is on its proxies' port "
                           f"{cfg.serving.port} (e.g. {url}/docs)")
                return
            typer.echo(f"serving {url} (size {cfg.size}, device {cfg.device}); API: {url}/docs; Ctrl-C stops")
            stop.wait()
        finally:
            if address is None:
                launch.stop()
