"""Typed configuration: the pipeline (stages, precision, backend, placement, chunking) and targets.

Both are read from YAML. Any invalid value raises `ConfigError` with one line that names the key,
the bad value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from iris_pipeline.errors import ConfigError
from iris_pipeline.serve.config import ServingConfig
from iris_pipeline.stage_options import (
    FastPitchOptions,
    RVCOptions,
    StageOptions,
    VallexOptions,
    Wav2LipOptions,
)

STAGE_ORDER: tuple[str, ...] = ("rvc", "vallex", "fastpitch", "wav2lip")

Precision = Literal["fp32", "fp16", "bf16", "int8"]
Backend = Literal["eager", "compile", "tensorrt"]
Size = Literal["full", "tiny"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StageConfig(_Strict):
    """Settings of one stage. `options` holds the stage-specific settings (the backend's at least);
    each stage's own config below narrows them to its options model."""

    precision: Precision = "fp16"
    backend: Backend = "eager"
    device: str | None = Field(default=None, description="device of this stage; None = the pipeline's")
    checkpoint: Path | None = None
    options: StageOptions = Field(default_factory=StageOptions)

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        kind, _, index = value.partition(":")
        if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
            raise ValueError("must be 'cpu', 'cuda' or 'cuda:N'")
        return value


class RVCConfig(StageConfig):
    options: RVCOptions = Field(default_factory=RVCOptions)


class VallexConfig(StageConfig):
    options: VallexOptions = Field(default_factory=VallexOptions)


class FastPitchConfig(StageConfig):
    options: FastPitchOptions = Field(default_factory=FastPitchOptions)


class Wav2LipConfig(StageConfig):
    options: Wav2LipOptions = Field(default_factory=Wav2LipOptions)


class ChunkingConfig(_Strict):
    enabled: bool = True
    chunk_seconds: float = Field(default=10.0, gt=0.5, le=120.0)
    # The first chunk is cut shorter so that its speech and frames are out early (first_chunk_ms);
    # None: the first chunk is as long as the others.
    first_chunk_seconds: float | None = Field(default=3.0, gt=0.5, le=120.0)
    crossfade_ms: float = Field(default=20.0, ge=0.0, le=500.0)


class ScriptLimits(_Strict):
    """The longest job accepted, checked before any model loads. The defaults allow about 10 minutes
    of speech (English reads ~14 characters and ~2.5 words per second) with some margin."""

    max_characters: int = Field(default=10_000, ge=1)
    max_words: int = Field(default=2_000, ge=1)
    max_seconds: float = Field(default=660.0, gt=0, description="expected speech of the script, and --seconds")


class VideoConfig(_Strict):
    fps: float = Field(default=25.0, ge=1.0, le=120.0)


class PipelineConfig(_Strict):
    """The whole chain."""

    size: Size = "full"
    device: str = "auto"
    stages: list[str] = Field(default_factory=lambda: list(STAGE_ORDER))
    rvc: RVCConfig = Field(default_factory=RVCConfig)
    vallex: VallexConfig = Field(default_factory=VallexConfig)
    fastpitch: FastPitchConfig = Field(default_factory=FastPitchConfig)
    wav2lip: Wav2LipConfig = Field(default_factory=Wav2LipConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    video: VideoConfig = Field(default_factory=VideoConfig)
    limits: ScriptLimits = Field(default_factory=ScriptLimits)
    lipsync_features: Literal["fastpitch", "speech"] = "fastpitch"
    max_reference_seconds: float = Field(default=30.0, gt=1.0)
    seed: int = 0
    serving: ServingConfig = Field(default_factory=ServingConfig)  # `iris serve` (Ray Serve) only

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        kind, _, index = value.partition(":")
        if kind not in ("auto", "cpu", "cuda") or (index and (kind == "auto" or not index.isdigit())):
            raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value

    @field_validator("stages")
    @classmethod
    def _stage_order(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in STAGE_ORDER]
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; allowed: {', '.join(STAGE_ORDER)}")
        if len(set(value)) != len(value):
            raise ValueError("a stage is listed twice")
        if value != [s for s in STAGE_ORDER if s in value]:
            raise ValueError(f"stages must keep the chain's order {' -> '.join(STAGE_ORDER)}")
        return value

    def stage(self, name: str) -> StageConfig:
        if name not in STAGE_ORDER:
            raise KeyError(name)
        return getattr(self, name)

    def config_hash(self) -> str:
        """Short, stable hash of every setting (for result context and cache keys)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class ClipTargets(_Strict):
    """Gates for one clip length. None = not gated."""

    latency_ms: float | None = Field(default=None, gt=0)
    first_chunk_ms: float | None = Field(default=None, gt=0)
    throughput_cps: float | None = Field(default=None, gt=0)
    peak_mem_gb: float | None = Field(default=None, gt=0)


class TargetSet(_Strict):
    """Targets per clip length (keys: seconds)."""

    clips: dict[float, ClipTargets]

    @field_validator("clips")
    @classmethod
    def _positive_lengths(cls, value: dict[float, ClipTargets]) -> dict[float, ClipTargets]:
        bad = [k for k in value if k <= 0]
        if bad:
            raise ValueError(f"clip length {bad[0]} must be > 0 seconds")
        return value


class Targets(_Strict):
    """Default targets, optionally overridden per GPU model (keyed by part of the NVML device name).

    An override merges into the default per clip length and per figure: it replaces only the figures
    it names (`null` removes that gate on that GPU), and its clip lengths add to the default's.
    `marginal` is the gate policy for MARGINAL verdicts (an interval still straddling the target at
    the run cap): `fail` (default) or `pass`.
    """

    default: TargetSet
    per_gpu: dict[str, TargetSet] = Field(default_factory=dict)
    marginal: Literal["pass", "fail"] = "fail"
    source: str | None = None

    def override_key(self, gpu_name: str | None) -> str | None:
        """The `per_gpu` key contained in `gpu_name` (case-insensitive; the longest when several are)."""
        if not gpu_name:
            return None
        keys = [k for k in self.per_gpu if k.lower() in gpu_name.lower()]
        return max(keys, key=len) if keys else None

    def for_gpu(self, gpu_name: str | None) -> TargetSet:
        """The default targets with the matching override merged in, clip length by clip length and
        figure by figure."""
        key = self.override_key(gpu_name)
        if key is None:
            return self.default
        override = self.per_gpu[key]
        clips = dict(self.default.clips)
        for clip_s, figures in override.clips.items():
            named = {name: getattr(figures, name) for name in figures.model_fields_set}
            base = clips.get(clip_s, ClipTargets())
            clips[clip_s] = base.model_copy(update=named)
        return TargetSet(clips=clips)

    def for_clip(self, clip_seconds: float, gpu_name: str | None = None) -> ClipTargets | None:
        return self.for_gpu(gpu_name).clips.get(float(clip_seconds))

    @model_validator(mode="after")
    def _non_empty(self) -> Targets:
        if not self.default.clips:
            raise ValueError("default.clips must list at least one clip length")
        return self


def describe_validation_error(exc: ValidationError, prefix: str = "", allowed_keys: Any = None,
                              unknown: str = "unknown key") -> str:
    """One line for the first problem of a pydantic error: `<prefix.key>: what is wrong (got value)`.

    Unknown keys list the allowed ones (`allowed_keys`, e.g. a model's fields) when given.
    """
    err = exc.errors()[0]
    loc = list(err["loc"])
    in_item = False
    while loc and isinstance(loc[-1], int) and err["type"] in ("missing", "too_long", "too_short"):
        loc.pop()  # an item of a tuple / list: name the field, not the position
        in_item = True
    key = ".".join(str(p) for p in loc)
    where = ".".join(part for part in (prefix, key) if part) or "(top level)"
    msg = err["msg"]
    if in_item:
        msg = "wrong number of items"
    elif err["type"] == "extra_forbidden":
        msg = unknown + (f"; allowed: {', '.join(allowed_keys)}" if allowed_keys else "")
    elif err["type"] == "literal_error":
        msg = f"not allowed; allowed: {err.get('ctx', {}).get('expected', '')}"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    shown = "" if err["type"] in ("missing", "extra_forbidden") and not in_item else f" (got {err.get('input')!r})"
    more = f" [+{len(exc.errors()) - 1} more problem(s)]" if len(exc.errors()) > 1 else ""
    return f"{where}: {msg}{shown}{more}"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model a location inside `model` points into (None past a non-model field)."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _format_error(exc: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    """One line for the first problem; an unknown key lists the keys allowed where it was found."""
    err = exc.errors()[0]
    within = _model_at(model, err["loc"][:-1]) if model is not None and err["type"] == "extra_forbidden" else None
    unknown = "unknown option" if "options" in err["loc"] else "unknown key"
    return f"{source}: {describe_validation_error(exc, allowed_keys=within.model_fields if within else None, unknown=unknown)}"


def _read_yaml(path: Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from exc
    return {} if data is None else data


def parse_pipeline_config(data: Any, source: str = "config") -> PipelineConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source, PipelineConfig)) from None


def load_pipeline_config(path: str | Path | None = None, **overrides: Any) -> PipelineConfig:
    """The pipeline config from YAML (or the defaults), with top-level `overrides` applied."""
    data = _read_yaml(Path(path)) if path is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return parse_pipeline_config(data, source=str(path) if path else "config")


def parse_targets(data: Any, source: str = "targets") -> Targets:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return Targets.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


DEFAULT_TARGETS_NAME = "targets.yaml"


def default_targets_path() -> Path:
    return Path(__file__).resolve().parent / "defaults" / DEFAULT_TARGETS_NAME


def load_targets(path: str | Path | None = None) -> Targets:
    """Targets from YAML; without a path, the users' targets shipped with the package."""
    path = Path(path) if path is not None else default_targets_path()
    return parse_targets(_read_yaml(path), source=str(path))
