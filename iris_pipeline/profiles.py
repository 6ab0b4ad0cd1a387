"""Shipped profiles: named per-stage backend and precision sets, and their resolution on a machine.

A profile (`defaults/profiles/<name>.yaml`, or any YAML file of the same shape) gives each stage a
`backend`, a `precision`, optional stage `options` and an optional `fallback` (backend and precision)
used when the stage's backend cannot run here. Only `tensorrt` can be missing (no `tensorrt` module,
no CUDA device): the stage then takes its fallback, and `ResolvedProfile.fallbacks` says which stage
fell back and why, so that results name it (never a silent change of what was measured). A stage
without a fallback keeps `tensorrt` and fails at `prepare()` with the reason.

Precedence when building a config: profile < config file < command-line flags.

- `optimised`: what users run (VALL-E X fp16 + compile / CUDA graphs, FastPitch and Wav2Lip TensorRT
  INT8 with engines from the cache); the default on a GPU;
- `eager`: every stage eager fp16; the reference of the speed-up column, and the default on a CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from iris_pipeline.config import STAGE_ORDER, Backend, PipelineConfig, Precision, describe_validation_error
from iris_pipeline.errors import ConfigError

OPTIMISED = "optimised"
EAGER = "eager"
PROFILES_DIR = Path(__file__).resolve().parent / "defaults" / "profiles"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Fallback(_Strict):
    backend: Backend
    precision: Precision


class StageProfile(_Strict):
    backend: Backend
    precision: Precision
    options: dict[str, Any] = Field(default_factory=dict)
    fallback: Fallback | None = None


class Profile(_Strict):
    name: str = ""
    description: str = ""
    stages: dict[str, StageProfile]

    def model_post_init(self, _: Any) -> None:
        unknown = [s for s in self.stages if s not in STAGE_ORDER]
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; allowed: {', '.join(STAGE_ORDER)}")


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def default_profile_name(on_gpu: bool) -> str:
    """`optimised` where the pipeline runs on a GPU, `eager` on a CPU-only machine."""
    return OPTIMISED if on_gpu else EAGER


def load_profile(name_or_path: str | Path) -> Profile:
    """A shipped profile by name, or a profile YAML file; a bad one is a one-line `ConfigError`."""
    path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(
                f"--profile {name_or_path}: no such profile; shipped: {', '.join(shipped_profiles())}, "
                "or the path of a profile YAML file"
            )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the profile ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile is a mapping with `stages`")
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from None
    return profile.model_copy(update={"name": profile.name or path.stem})


def profile_data(profile: Profile, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pipeline-config data: the profile's stage settings, then `data` (a config file's) over them."""
    merged: dict[str, Any] = {
        stage: {"backend": s.backend, "precision": s.precision, "options": copy.deepcopy(s.options)}
        for stage, s in profile.stages.items()
    }
    for key, value in (data or {}).items():
        if key in merged and isinstance(value, dict):
            options = {**merged[key]["options"], **(value.get("options") or {})}
            merged[key] = {**merged[key], **value, "options": options}
        else:
            merged[key] = value
    return merged


@dataclass
class ResolvedProfile:
    """The config a profile resolved to on this machine, and the stages that fell back (stage -> why)."""

    name: str
    config: PipelineConfig
    fallbacks: dict[str, str] = field(default_factory=dict)

    def context(self) -> dict[str, str]:
        """Result-context fields (every CSV row carries them)."""
        return {"profile": self.name,
                "profile_fallbacks": "; ".join(f"{s}: {why}" for s, why in self.fallbacks.items()) or "none"}

    def notes(self) -> list[str]:
        return [f"profile {self.name}: {stage} fell back: {why}" for stage, why in self.fallbacks.items()]


def _tensorrt_reason(device: str) -> str | None:
    from iris_pipeline.backends.tensorrt import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason(device)


def resolve(
    profile: Profile,
    config: PipelineConfig,
    unavailable: Callable[[str], str | None] = _tensorrt_reason,
) -> ResolvedProfile:
    """`config` with each `tensorrt` stage that cannot run here (per `unavailable(device)`) moved to
    its profile fallback, the reason recorded."""
    data = config.model_dump(mode="json")
    fallbacks: dict[str, str] = {}
    for stage in config.stages:
        stage_config = config.stage(stage)
        fallback = profile.stages[stage].fallback if stage in profile.stages else None
        if stage_config.backend != "tensorrt" or fallback is None:
            continue
        device = stage_config.device or config.device
        reason = unavailable("cuda" if device == "auto" else device)
        if reason is None:
            continue
        data[stage].update(backend=fallback.backend, precision=fallback.precision)
        fallbacks[stage] = (f"tensorrt {stage_config.precision} -> {fallback.backend} {fallback.precision} "
                            f"({reason})")
    return ResolvedProfile(profile.name, PipelineConfig.model_validate(data), fallbacks)


SPEEDUP_NAME = "speedup.csv"
SPEEDUP_COLUMNS = ("clip_s", "profile", "latency_ms_median", "eager_latency_ms_median", "speedup_vs_eager",
                   "profile_fallbacks")


def _median_latency(clip: Any) -> float:
    import numpy as np

    values = [r.latency_ms for r in clip.runs if r.latency_ms == r.latency_ms]  # NaN != NaN
    return float(np.median(values)) if values else float("nan")


def speedup_rows(resolved: ResolvedProfile, clips: list[Any], eager_clips: list[Any]) -> list[dict[str, Any]]:
    """Per clip length: the profile's and eager's median latency in the same run, and their ratio
    (eager / profile: 1.4 means the profile is 1.4x as fast)."""
    eager = {c.clip_s: _median_latency(c) for c in eager_clips}
    rows = []
    for clip in clips:
        mine, base = _median_latency(clip), eager.get(clip.clip_s, float("nan"))
        rows.append({"clip_s": clip.clip_s, "profile": resolved.name, "latency_ms_median": round(mine, 3),
                     "eager_latency_ms_median": round(base, 3),
                     "speedup_vs_eager": round(base / mine, 3) if mine > 0 else float("nan"),
                     "profile_fallbacks": resolved.context()["profile_fallbacks"]})
    return rows


def write_speedup(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    import csv

    from iris_pipeline.atomic import atomic_open

    path = Path(out_dir) / SPEEDUP_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", newline="") as handle:  # nothing half-written
        writer = csv.DictWriter(handle, fieldnames=list(SPEEDUP_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return path
