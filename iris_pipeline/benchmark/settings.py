"""Benchmark settings: what to measure and how long, with the defaults that depend on the device.

On a GPU the defaults follow the users' brief (>= 30 measured runs after warm-up, throughput phases of
>= 20 s or >= 50 clips). On a CPU-only machine fewer are allowed so the main job ends in minutes;
every such relaxation is written as a note into the output and the summary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from iris_pipeline.benchmark import verdicts
from iris_pipeline.errors import ConfigError, InputError

DEFAULT_CLIP_LENGTHS = (5.0, 10.0, 30.0)
STRESS_CLIP_LENGTH = 120.0  # opt-in: --clip-lengths 5,10,30,120

# (GPU, CPU) defaults
RUNS = (30, 5)
MAX_RUNS = (90, 10)  # sequential extension cap: 3x / 2x the planned runs
WARMUP = (3, 1)
PHASE_MIN_SECONDS = (20.0, 0.0)
PHASE_MIN_CLIPS = (50, 2)
MAX_CONCURRENCY = (16, 2)
GPU_MIN_RUNS = RUNS[0]

Number = TypeVar("Number", int, float)


class BenchSettings(BaseModel):
    """Everything that shapes a benchmark run; None = the device's default (see `resolve`)."""

    model_config = ConfigDict(extra="forbid")

    clip_lengths: list[float] = Field(default_factory=lambda: list(DEFAULT_CLIP_LENGTHS))
    runs: int | None = Field(default=None, ge=1, le=100_000)
    warmup: int | None = Field(default=None, ge=0, le=1000)
    throughput: bool = True
    phase_min_seconds: float | None = Field(default=None, ge=0)
    phase_min_clips: int | None = Field(default=None, ge=1)
    phase_max_seconds: float = Field(default=600.0, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1, le=1024)
    saturation_gain: float = Field(default=0.05, ge=0, le=1, description="ramp stops below this gain")
    encode_runs: int = Field(default=5, ge=0, description="measured runs whose result is also encoded to mp4")
    fresh_voice: bool = Field(default=False, description="a new reference per run, so RVC runs every time")
    language: str = "en"
    seed: int = 0
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    n_boot: int = Field(default=2000, ge=100, le=1_000_000)
    statistics: dict[str, str] = Field(default_factory=dict)
    marginal: Literal["pass", "fail"] | None = Field(
        default=None, description="policy for MARGINAL verdicts; None: the targets file's `marginal`")
    max_runs: int | None = Field(default=None, ge=1, le=100_000,
                                 description="cap of the runs taken while a gate is undecided")
    avatar: Path | None = None
    reference: Path | None = None
    transcript: str | None = None
    nvml_period_s: float = Field(default=0.05, gt=0, le=10)
    concurrencies: list[int] = Field(default_factory=list, description="throughput phases at exactly these "
                                     "concurrencies, no ramp; empty: the ramp 1, 2, 4, ...")
    schedulers: list[str] = Field(default_factory=list, description="tts schedulers whose throughput phases are "
                                  "measured side by side (vallex.options.scheduler); empty: the configured one")

    @field_validator("clip_lengths")
    @classmethod
    def _lengths(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("at least one clip length is needed")
        bad = [v for v in value if not v > 0]
        if bad:
            raise ValueError(f"clip length {bad[0]} must be > 0 seconds")
        return list(dict.fromkeys(float(v) for v in value))

    @field_validator("concurrencies")
    @classmethod
    def _concurrencies(cls, value: list[int]) -> list[int]:
        bad = [v for v in value if not 1 <= v <= 1024]
        if bad:
            raise ValueError(f"concurrency {bad[0]} must be in 1..1024")
        return list(dict.fromkeys(value))

    @field_validator("schedulers")
    @classmethod
    def _schedulers(cls, value: list[str]) -> list[str]:
        names = [v.strip() for v in value]
        if any(not n for n in names):
            raise ValueError("an empty scheduler name")
        return list(dict.fromkeys(names))

    @field_validator("statistics")
    @classmethod
    def _statistics(cls, value: dict[str, str]) -> dict[str, str]:
        verdicts.check_statistic_choice(value)
        return value


@dataclass(frozen=True)
class Resolved:
    """Settings with every device default filled in, and the notes on what was relaxed."""

    settings: BenchSettings
    on_gpu: bool
    runs: int
    max_runs: int
    warmup: int
    phase_min_seconds: float
    phase_min_clips: int
    max_concurrency: int
    notes: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        data = self.settings.model_dump(mode="json")
        data.update(on_gpu=self.on_gpu, runs=self.runs, max_runs=self.max_runs, warmup=self.warmup,
                    phase_min_seconds=self.phase_min_seconds, phase_min_clips=self.phase_min_clips,
                    max_concurrency=self.max_concurrency)
        return data


def resolve(settings: BenchSettings, on_gpu: bool) -> Resolved:
    k = 0 if on_gpu else 1
    s = settings
    runs = s.runs if s.runs is not None else RUNS[k]
    notes = []
    if not on_gpu:
        notes.append(f"CPU run: {runs} measured runs and throughput phases of >= {PHASE_MIN_CLIPS[1]} clips "
                     f"allowed (a GPU run uses >= {RUNS[0]} runs and >= {PHASE_MIN_SECONDS[0]:g} s or "
                     f">= {PHASE_MIN_CLIPS[0]} clips); figures are for the tiny/CPU setting, not for the targets' GPU")
    elif runs < GPU_MIN_RUNS:
        notes.append(f"only {runs} measured runs per clip length (< {GPU_MIN_RUNS}, the GPU default): medians are "
                     "less stable and percentile gates may be INVALID")
    resolved = Resolved(
        settings=s, on_gpu=on_gpu, runs=runs, max_runs=max(runs, s.max_runs if s.max_runs is not None else MAX_RUNS[k]),
        warmup=s.warmup if s.warmup is not None else WARMUP[k],
        phase_min_seconds=s.phase_min_seconds if s.phase_min_seconds is not None else PHASE_MIN_SECONDS[k],
        phase_min_clips=s.phase_min_clips if s.phase_min_clips is not None else PHASE_MIN_CLIPS[k],
        max_concurrency=s.max_concurrency if s.max_concurrency is not None else MAX_CONCURRENCY[k],
        notes=tuple(notes),
    )
    if on_gpu and (resolved.phase_min_seconds < PHASE_MIN_SECONDS[0] and resolved.phase_min_clips < PHASE_MIN_CLIPS[0]):
        notes.append(f"throughput phases shortened to >= {resolved.phase_min_seconds:g} s or "
                     f">= {resolved.phase_min_clips} clips (the GPU default is >= 20 s or >= 50 clips)")
        resolved = Resolved(**{**resolved.__dict__, "notes": tuple(notes)})
    return resolved


def parse_settings(data: dict[str, Any], source: str = "bench settings") -> BenchSettings:
    try:
        return BenchSettings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: {key}: {msg} (got {err.get('input')!r})") from None


def parse_assignments(items: list[str] | None, name: str) -> dict[str, str]:
    """["vallex=fp16", "wav2lip=int8"] -> {"vallex": "fp16", ...}; bad items raise ConfigError."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{name} {item!r}: expected KEY=VALUE, e.g. vallex=fp16")
        out[key.strip()] = value.strip()
    return out


def comma_separated(text: str, flag: str, convert: Callable[[str], Number] = float, noun: str = "value",
                    unit: str = "") -> list[Number]:
    """"5,10,30" -> [5.0, 10.0, 30.0]: the positive numbers of a comma-separated command-line value.

    An item `convert` refuses, an empty list or a value <= 0 raises InputError naming `flag`
    (every such list this CLI takes holds positive numbers: seconds, noise levels, counts).
    """
    try:
        values = [convert(v) for v in text.split(",") if v.strip()]
    except ValueError:
        kind = "whole numbers" if convert is int else "numbers"
        raise InputError(f"{flag} {text!r}: expected {kind} separated by commas") from None
    if not values or any(not v > 0 for v in values):
        raise InputError(f"{flag} {text!r}: every {noun} must be > 0{unit}")
    return values


def parse_clip_lengths(text: str) -> list[float]:
    return comma_separated(text, "--clip-lengths", noun="clip length", unit=" seconds")


@dataclass(frozen=True)
class BenchCommand:
    """`iris bench`'s command line as given (None: the flag was not given). The measurement flags go
    over the config file's `bench:` mapping into `BenchSettings`; the rest choose the pipeline, where
    results go, and the A/B check."""

    # what to measure
    clip_lengths: str
    runs: int | None
    warmup: int | None
    max_runs: int | None
    statistic: list[str]
    marginal: str | None
    throughput: bool
    max_concurrency: int | None
    concurrencies: str | None
    schedulers: str | None
    phase_min_seconds: float | None
    phase_min_clips: int | None
    encode_runs: int | None
    fresh_voice: bool
    avatar: Path | None
    reference: Path | None
    transcript: str | None
    language: str | None
    seed: int | None
    # which pipeline
    config: Path | None
    profile: str | None
    size: str | None
    device: str | None
    precision: str | None
    backend: str | None
    stage_precision: list[str]
    stage_backend: list[str]
    compare_eager: bool
    # judging and output
    targets: Path | None
    out: Path | None
    gate: bool
    history: Path | None
    quiet: bool
    # the A/B check (--ab REF or --ab-base-dir DIR)
    ab: str | None
    ab_base_dir: Path | None
    ab_pairs: int | None
    ab_max_pairs: int
    ab_min_slowdown: float
    ab_floor_ms: float
    ab_alpha: float
    ab_base_set: list[str]

    def bench_settings(self, file_settings: dict[str, Any]) -> BenchSettings:
        """The flags given, over the config file's `bench:` mapping; statistics merge key by key, and
        the on/off flags can only turn off what the file turns on (throughput) or on what it leaves off."""
        flags = {"clip_lengths": parse_clip_lengths(self.clip_lengths) if self.clip_lengths else None,
                 "runs": self.runs, "max_runs": self.max_runs, "warmup": self.warmup,
                 "max_concurrency": self.max_concurrency, "marginal": self.marginal,
                 "phase_min_seconds": self.phase_min_seconds, "phase_min_clips": self.phase_min_clips,
                 "encode_runs": self.encode_runs, "avatar": self.avatar, "reference": self.reference,
                 "transcript": self.transcript, "language": self.language, "seed": self.seed,
                 "concurrencies": comma_separated(self.concurrencies, "--concurrencies", int, "concurrency")
                 if self.concurrencies else None,
                 "schedulers": self.schedulers.split(",") if self.schedulers is not None else None}
        merged = {**file_settings, **{k: v for k, v in flags.items() if v is not None}}
        merged.update(statistics={**file_settings.get("statistics", {}),
                                  **parse_assignments(self.statistic, "--statistic")},
                      throughput=self.throughput and file_settings.get("throughput", True),
                      fresh_voice=self.fresh_voice or file_settings.get("fresh_voice", False))
        return parse_settings(merged)
