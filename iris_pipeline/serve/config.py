"""The `serving` section of the pipeline config: how `iris serve` deploys the chain on Ray Serve.

One `DeploymentSettings` per deployment (resources, replicas, autoscaling, bounded queues), and the
HTTP side (address, token, upload and admission limits). Pure pydantic: reading a config never
imports Ray.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from iris_pipeline.errors import ConfigError

DEFAULT_TOKEN_ENV = "IRIS_SERVE_TOKEN"
# GPU share of one replica when `num_gpus: auto` and the chain runs on GPUs: one replica of each
# stage group fits one GPU, with VALL-E X and Wav2Lip (the heavy ones) taking most of it.
AUTO_GPU_SHARE: dict[str, float] = {"voice": 0.1, "speech": 0.4, "lipsync": 0.1, "frames": 0.4}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AutoscalingSettings(_Strict):
    """Ray Serve autoscaling of one deployment (replaces `num_replicas` when given)."""

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=2, ge=1)
    target_ongoing_requests: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingSettings:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas {self.max_replicas} < min_replicas {self.min_replicas}")
        return self


class DeploymentSettings(_Strict):
    """Resources and scaling of one deployment. Queues are always bounded (back-pressure)."""

    num_replicas: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=0.25, ge=0)
    num_gpus: float | Literal["auto"] = "auto"  # auto: a share of a GPU where the chain runs on GPUs, else 0
    autoscaling: AutoscalingSettings | None = None
    max_ongoing_requests: int = Field(default=8, ge=1)
    max_queued_requests: int = Field(default=32, ge=1)

    @field_validator("num_gpus")
    @classmethod
    def _gpus(cls, value: float | str) -> float | str:
        if isinstance(value, float | int) and value < 0:
            raise ValueError("must be >= 0 or 'auto'")
        return value


class SpeechSettings(DeploymentSettings):
    """VALL-E X: Serve batches concurrent chunk requests into one decode."""

    max_batch_size: int | None = Field(default=None, ge=1, description="None: the vallex stage's max_batch")
    batch_wait_timeout_s: float = Field(default=0.02, ge=0, le=5)


class ServingConfig(_Strict):
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = Field(default=8000, ge=1, le=65535)
    token_env: str = DEFAULT_TOKEN_ENV  # the bearer token comes from this environment variable ...
    token_file: Path | None = None  # ... or from this file (first line)
    max_upload_mb: float = Field(default=25.0, gt=0, le=1024)
    max_inflight_renders: int = Field(default=4, ge=1)  # per ingress replica; beyond it: 503 + Retry-After
    retry_after_s: int = Field(default=5, ge=1)
    stage_retries: int = Field(default=2, ge=0, le=10)  # a stage call lost with its replica is retried
    results_dir: Path | None = None  # finished mp4 + vtt; None: the cache directory's serve-results
    keep_results: int = Field(default=32, ge=1)
    registry_entries: int = Field(default=64, ge=1)  # voices and avatars kept (least recently used dropped)
    ingress: DeploymentSettings = Field(default_factory=lambda: DeploymentSettings(num_gpus=0, num_cpus=0.25))
    registry: DeploymentSettings = Field(default_factory=lambda: DeploymentSettings(num_gpus=0, num_cpus=0.1))
    voice: DeploymentSettings = Field(default_factory=DeploymentSettings)
    speech: SpeechSettings = Field(default_factory=SpeechSettings)
    lipsync: DeploymentSettings = Field(default_factory=DeploymentSettings)
    frames: DeploymentSettings = Field(default_factory=DeploymentSettings)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


# deployment name -> (settings attribute, pipeline stages it runs)
DEPLOYMENT_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "VoicePrompt": ("voice", ("rvc", "vallex")),
    "Speech": ("speech", ("vallex",)),
    "LipsyncMel": ("lipsync", ("fastpitch",)),
    "Frames": ("frames", ("wav2lip",)),
}


def gpu_share(settings: DeploymentSettings, group: str, on_gpus: bool) -> float:
    """The replica's `num_gpus`: explicit, or under `auto` its share where the chain runs on GPUs."""
    if settings.num_gpus != "auto":
        return float(settings.num_gpus)
    return AUTO_GPU_SHARE.get(group, 0.0) if on_gpus else 0.0


def read_token(token_file: Path | None, token_env: str, file_option: str = "serving.token_file") -> str:
    """The bearer token: the first line of `token_file`, else the `token_env` variable. None at all
    is a ConfigError: the service never runs open, and the load test never calls it without one."""
    if token_file is not None:
        try:
            lines = Path(token_file).read_text(encoding="utf-8").strip().splitlines()
        except OSError as exc:
            raise ConfigError(f"{file_option} {token_file}: cannot read ({exc.strerror or exc})") from None
        if not lines or not lines[0].strip():
            raise ConfigError(f"{file_option} {token_file}: empty")
        return lines[0].strip()
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise ConfigError(f"no bearer token: set {token_env} or {file_option}")
    return token
