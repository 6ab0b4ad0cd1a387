"""One benchmark session: configure, build the pipeline once, measure every clip length, tear down.

The NVML baseline is read before the pipeline exists (so "device used minus baseline" is this
process's memory where the driver gives no per-process figure), the sampler runs for the whole
session, and engine-cache counters are read before and after (their difference is this session's
builds; another process building into the same cache at the same time would be counted too).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from iris_pipeline.benchmark import inputs
from iris_pipeline.benchmark.runner import BenchTarget, ClipMeasurement, Progress, measure_clip
from iris_pipeline.benchmark.settings import BenchSettings, Resolved, resolve
from iris_pipeline.config import STAGE_ORDER, PipelineConfig, load_pipeline_config, parse_pipeline_config
from iris_pipeline.errors import ConfigError
from iris_pipeline.metrics import NvmlSampler, capture_context, device_used_bytes

ENGINE_COUNTERS = ("attempts", "successes", "failures", "refused", "hits", "rebuilt_invalid", "build_seconds",
                   "load_seconds")


@dataclass
class BenchResult:
    context: dict[str, Any]
    resolved: Resolved
    config: dict[str, Any]
    placement: dict[str, str]
    clips: list[ClipMeasurement]
    engines: dict[str, Any]  # {"available": bool, "reason", "total": {...}, "graphs": {...}}
    build_nvml: Any  # NvmlSummary while the pipeline was built
    notes: list[str] = field(default_factory=list)
    started_utc: str = ""
    duration_s: float = math.nan

    @property
    def gpu_name(self) -> str | None:
        name = self.context.get("gpu_name")
        return None if name in (None, "n/a") else str(name)


def default_size(device: str) -> str:
    """`full` where the pipeline will run on a GPU, `tiny` on a CPU-only machine."""
    if device == "cpu" or not torch.cuda.is_available():
        return "tiny"
    return "full"


def build_config(config: Path | dict[str, Any] | None = None, *, size: str | None = None,
                 device: str | None = None, precision: str | None = None, backend: str | None = None,
                 stage_precision: dict[str, str] | None = None, stage_backend: dict[str, str] | None = None,
                 ) -> PipelineConfig:
    """The pipeline config: YAML file (or {"data": mapping, "source": name}, or the defaults), then
    flags; per-stage flags override all-stage flags. Without a size anywhere: `default_size`."""
    if isinstance(config, dict):
        data, source = dict(config["data"]), str(config.get("source", "config"))
    elif config is not None:
        data, source = load_pipeline_config(config).model_dump(mode="json"), str(config)
        data = {k: v for k, v in data.items() if k in _yaml_keys(config)}
    else:
        data, source = {}, "bench options"
    if device is not None:
        data["device"] = device
    base = parse_pipeline_config(data, source=source)
    explicit_size = size is not None or "size" in data
    data = base.model_dump(mode="json")
    if size is not None:
        data["size"] = size
    elif not explicit_size:
        data["size"] = default_size(data["device"])
    for key, every, per_stage in (("precision", precision, stage_precision or {}),
                                  ("backend", backend, stage_backend or {})):
        unknown = [s for s in per_stage if s not in STAGE_ORDER]
        if unknown:
            raise ConfigError(f"--stage-{key} {unknown[0]}=...: unknown stage; allowed: {', '.join(STAGE_ORDER)}")
        for stage in STAGE_ORDER:
            value = per_stage.get(stage, every)
            if value is not None:
                data[stage][key] = value
    return parse_pipeline_config(data, source=source if not (size or precision or backend or stage_precision
                                                             or stage_backend) else f"{source} + flags")


def _yaml_keys(path: Path) -> set[str]:
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return set(data) if isinstance(data, dict) else set()


def engine_dirs(config: PipelineConfig) -> list[Path]:
    from iris_pipeline.backends import default_engine_dir

    dirs = [default_engine_dir()]
    for stage in config.stages:
        backend_opts = config.stage(stage).options.get("backend") or {}
        if isinstance(backend_opts, dict) and backend_opts.get("engine_dir"):
            dirs.append(Path(backend_opts["engine_dir"]))
    return list(dict.fromkeys(p.resolve() for p in dirs))


def engine_counters(config: PipelineConfig) -> dict[str, Any]:
    """Summed engine-cache counters over the config's cache directories (None fields if unreadable)."""
    try:
        from iris_pipeline.backends.cache import EngineCache
    except ImportError as exc:
        return {"available": False, "reason": f"no engine cache module ({exc})"}
    total = dict.fromkeys(ENGINE_COUNTERS, 0.0)
    graphs: dict[str, dict[str, float]] = {}
    for directory in engine_dirs(config):
        if not directory.exists():
            continue
        stats = EngineCache(directory).stats()
        for name, counters in stats.graphs.items():
            entry = graphs.setdefault(name, dict.fromkeys(ENGINE_COUNTERS, 0.0))
            for key, value in asdict(counters).items():
                if key in entry:
                    entry[key] += value
                    total[key] += value
    return {"available": True, "reason": None, "total": total, "graphs": graphs}


def counters_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    if not (before.get("available") and after.get("available")):
        return {"available": False, "reason": before.get("reason") or after.get("reason")}
    total = {k: after["total"][k] - before["total"][k] for k in ENGINE_COUNTERS}
    graphs = {}
    for name, counters in after["graphs"].items():
        old = before["graphs"].get(name, dict.fromkeys(ENGINE_COUNTERS, 0.0))
        diff = {k: counters[k] - old[k] for k in ENGINE_COUNTERS}
        if any(diff.values()):
            graphs[name] = diff
    return {"available": True, "reason": None, "total": total, "graphs": graphs}


def _varied(reference: Any, seed: int) -> Any:
    """The reference with a little seeded noise: a new voice hash, so RVC cannot be served from a cache."""
    from iris_pipeline.audio import Waveform

    g = torch.Generator().manual_seed(seed)
    noise = 1e-3 * torch.randn(reference.samples.shape, generator=g, dtype=reference.samples.dtype)
    return Waveform(reference.samples + noise.to(reference.samples.device), reference.sample_rate)


def run_benchmark(settings: BenchSettings, config: PipelineConfig, *, stage_factory: Callable | None = None,
                  nvml: Any = None, sample_devices: list[Any] | None = None,
                  progress: Progress | None = None) -> BenchResult:
    """Build the pipeline once and measure every clip length of `settings` (see runner.py)."""
    from iris_pipeline.pipeline import Job, Pipeline
    from iris_pipeline.placement import Placement

    started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    placement = Placement.from_config(config)
    gpus = placement.gpu_devices
    resolved = resolve(settings, on_gpu=bool(gpus))
    context = capture_context(config)
    devices = gpus if sample_devices is None else sample_devices
    baseline = device_used_bytes(devices, nvml=nvml) if devices else {}
    engines_before = engine_counters(config)
    sampler = NvmlSampler(devices, settings.nvml_period_s, baseline_bytes=baseline, nvml=nvml)
    sampler.start()
    pipeline = Pipeline(config, placement=placement, stage_factory=stage_factory)
    try:
        if progress:
            progress("building the pipeline")
        pipeline.prepare(progress=(lambda name: progress(f"preparing stage {name}")) if progress else None)
        build_nvml = sampler.summary()
        avatar = pipeline.prepare_avatar(settings.avatar or inputs.default_avatar_path())
        reference = inputs.load_reference(settings.reference, settings.seed)
        transcript = settings.transcript or inputs.reference_transcript(settings.language)
        scripts: dict[float, str] = {}

        def make_job(clip_s: float, seed: int) -> Any:
            if clip_s not in scripts:
                scripts[clip_s] = inputs.script_for(clip_s, settings.language)
            voice = _varied(reference, seed) if settings.fresh_voice else reference
            return Job(text=scripts[clip_s], language=settings.language, reference=voice, transcript=transcript,
                       avatar=avatar, seconds=clip_s, seed=seed)

        target = BenchTarget(pipeline, make_job, list(gpus))
        clips = [measure_clip(target, clip_s, resolved, sampler, progress) for clip_s in settings.clip_lengths]
    finally:
        sampler.stop()
        pipeline.close()
    engines = counters_delta(engines_before, engine_counters(config))
    notes = list(resolved.notes)
    if not sampler.available:
        notes.append(f"NVML unavailable ({sampler.reason}): peak_mem_gb, gpu_busy_pct and SM figures are n/a "
                     "and their gates INVALID")
    if not settings.fresh_voice:
        notes.append("voice prompt cached: the same reference every run, so RVC and the VALL-E X prompt run in "
                     "warm-up only (DESIGN: RVC is cached per reference); --fresh-voice times them per clip")
    for clip in clips:
        if clip.encode_error:
            notes.append(f"clip {clip.clip_s:g} s: mp4 encoding failed ({clip.encode_error}); encode_ms is n/a")
        if clip.ramp_note:
            notes.append(f"clip {clip.clip_s:g} s: {clip.ramp_note}")
    return BenchResult(context=context, resolved=resolved, config=config.model_dump(mode="json"),
                       placement=placement.describe(), clips=clips, engines=engines, build_nvml=build_nvml,
                       notes=notes, started_utc=started_utc, duration_s=time.perf_counter() - t0)
