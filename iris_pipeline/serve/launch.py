"""Starting the application: on an embedded local Ray, on a running cluster, or as a Serve config
file for `serve deploy` and KubeRay's RayService."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from iris_pipeline.config import PipelineConfig

IMPORT_PATH = "iris_pipeline.serve.app:build"


def serve_config(config: PipelineConfig) -> dict[str, Any]:
    """The Serve config (`serve deploy FILE`; KubeRay's `serveConfigV2`) of the chain: the builder
    gets the pipeline config as its args; each deployment's resources and scaling are spelt out so
    an operator can change them in the file."""
    from iris_pipeline.serve.app import APP_NAME, all_deployment_options

    deployments = [{"name": name, **options} for name, options in all_deployment_options(config).items()]
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": config.serving.host, "port": config.serving.port},
        "applications": [{
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": IMPORT_PATH,
            "args": {"pipeline": config.model_dump(mode="json")},
            "deployments": deployments,
        }],
    }


def write_serve_config(config: PipelineConfig, path: Path) -> Path:
    from iris_pipeline.atomic import atomic_open

    text = yaml.safe_dump(serve_config(config), sort_keys=False)
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return path


def start(config: PipelineConfig, address: str | None = None, num_cpus: float | None = None) -> Any:
    """Deploy the application and return its handle. Without `address` a local Ray instance is
    started (no dashboard; `num_cpus` caps it); with one, the running cluster is joined."""
    import ray
    from ray import serve

    from iris_pipeline.serve.app import APP_NAME, build_app
    from iris_pipeline.serve.config import read_token

    read_token(config.serving.token_file, config.serving.token_env, "--token-file")  # refuse to start an open service: say so before Ray starts
    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": config.serving.host, "port": config.serving.port})
    return serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)


def stop() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
