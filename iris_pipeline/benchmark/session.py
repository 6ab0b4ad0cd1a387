"""One benchmark session: configure, build the pipeline once, measure every clip length, tear down.

The NVML baseline is read before the pipeline exists (so "device used minus baseline" is this
process's memory where the driver gives no per-process figure), the sampler runs for the whole
session, and engine-cache counters are read before and after (their difference is this session's
builds; another process building into the same cache at the same time would be counted too).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from iris_pipeline.benchmark import inputs, verdicts
from iris_pipeline.benchmark.hostmem import HostMemorySampler
from iris_pipeline.benchmark.runner import (
    BenchTarget,
    ClipMeasurement,
    Phase,
    Progress,
    measure_clip,
    phase_seed,
    release_caches,
    throughput_phases,
    time_job,
)
from iris_pipeline.benchmark.settings import BenchSettings, Resolved, resolve
from iris_pipeline.config import (
    STAGE_ORDER,
    PipelineConfig,
    Targets,
    load_pipeline_config,
    parse_pipeline_config,
)
from iris_pipeline.errors import ConfigError
from iris_pipeline.metrics import NvmlSampler, capture_context, device_used_bytes

SCHEDULER_OPTION = "vallex.options.scheduler"  # the tts scheduler the throughput phases compare
ENGINE_COUNTERS = ("attempts", "successes", "failures", "refused", "hits", "rebuilt_invalid", "build_seconds",
                   "load_seconds")


@dataclass
class SchedulerThroughput:
    """The throughput phases of one clip length under a tts scheduler other than the configured one."""

    scheduler: str
    clip_s: float
    phases: list[Phase]


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
    scheduler: str = ""  # the configured tts scheduler: the one `clips` were measured with
    other_schedulers: list[SchedulerThroughput] = field(default_factory=list)  # side by side (--schedulers)

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
    """The benchmark's pipeline config, for `iris bench`, its A/B check and the pytest perf suite alike
    (the one place where it is resolved): YAML file (or {"data": mapping, "source": name}, or the
    defaults), then flags; per-stage flags override all-stage flags. Without a size anywhere:
    `default_size`. The config is validated from the explicit options only, so
    `config.model_dump(exclude_unset=True)` is exactly what the user (or this function) set."""
    if isinstance(config, dict):
        data, source = copy.deepcopy(dict(config["data"])), str(config.get("source", "config"))
    elif config is not None:
        load_pipeline_config(config)  # a bad file fails here, with its own one-line message
        data, source = _yaml_mapping(config), str(config)
    else:
        data, source = {}, "bench options"
    if device is not None:
        data["device"] = device
    parse_pipeline_config(data, source=source)  # the file's own errors before the flags' ones
    if size is not None:
        data["size"] = size
    elif "size" not in data:
        data["size"] = default_size(str(data.get("device", "auto")))
    for key, every, per_stage in (("precision", precision, stage_precision or {}),
                                  ("backend", backend, stage_backend or {})):
        unknown = [s for s in per_stage if s not in STAGE_ORDER]
        if unknown:
            raise ConfigError(f"--stage-{key} {unknown[0]}=...: unknown stage; allowed: {', '.join(STAGE_ORDER)}")
        for stage in STAGE_ORDER:
            value = per_stage.get(stage, every)
            if value is not None:
                data[stage] = {**(data.get(stage) or {}), key: value}
    return parse_pipeline_config(data, source=source if not (size or precision or backend or stage_precision
                                                             or stage_backend) else f"{source} + flags")


def with_setting(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of the config mapping `data` with the dotted `key` (e.g. vallex.options.scheduler) set
    to `value`; the mappings on the way are created where missing."""
    out = copy.deepcopy(data)
    node = out
    *parents, leaf = key.split(".")
    if not leaf or not all(parents):
        raise ConfigError(f"{key}={value!r}: expected a dotted config key, e.g. {SCHEDULER_OPTION}")
    for part in parents:
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"{key}={value!r}: {part} is not a mapping in the config")
        node = node[part]
    node[leaf] = value
    return out


def option_value(config: PipelineConfig, key: str) -> Any:
    """The value of the dotted config `key` (e.g. vallex.options.scheduler) in `config`; None where
    this tree's config has no such option."""
    node: Any = config.model_dump(mode="json")
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def configured_scheduler(config: PipelineConfig) -> str:
    """The tts scheduler `config` runs (`SCHEDULER_OPTION`; a tree without that option decodes the
    waiting jobs together to the end: static)."""
    value = option_value(config, SCHEDULER_OPTION)
    return "static" if value is None else str(value)


def scheduler_configs(config: PipelineConfig, schedulers: list[str]) -> dict[str, PipelineConfig]:
    """`config` with each scheduler of `schedulers` other than its own, validated now (the typed
    options refuse a bad name before the long run, with one line)."""
    own = configured_scheduler(config)
    return {name: parse_pipeline_config(with_setting(config.model_dump(mode="json"), SCHEDULER_OPTION, name),
                                        source=f"the config with {SCHEDULER_OPTION}={name}")
            for name in dict.fromkeys(schedulers) if name != own}


def _yaml_mapping(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return data if isinstance(data, dict) else {}


def engine_dirs(config: PipelineConfig) -> list[Path]:
    from iris_pipeline.backends import default_engine_dir

    dirs = [default_engine_dir()]
    for stage in config.stages:
        engine_dir = config.stage(stage).options.backend.engine_dir
        if engine_dir is not None:
            dirs.append(engine_dir)
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


class BenchSession:
    """One benchmark session, open for as long as the `with` block: the pipeline built once, the NVML
    and host-memory samplers running. `measure()` measures every clip length of the settings (see
    runner.py); with `targets`, a clip length whose time gates are still undecided gets more runs (up
    to max_runs). `iris bench` and the pytest perf suite both measure through this class; the pytest
    suite keeps it open so pytest-benchmark can time one more job afterwards (`target`)."""

    def __init__(self, settings: BenchSettings, config: PipelineConfig, *, targets: Targets | None = None,
                 stage_factory: Callable | None = None, nvml: Any = None, sample_devices: list[Any] | None = None,
                 progress: Progress | None = None):
        from iris_pipeline.placement import Placement

        self.settings, self.config, self.targets, self.progress = settings, config, targets, progress
        self._stage_factory = stage_factory
        self.started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._t0 = time.perf_counter()
        self.placement = Placement.from_config(config)
        self.gpus = self.placement.gpu_devices
        self.resolved = resolve(settings, on_gpu=bool(self.gpus))
        self.context = capture_context(config)
        self.devices = self.gpus if sample_devices is None else sample_devices
        self._nvml = nvml
        self.target: BenchTarget | None = None
        self.pipeline: Any = None

    def __enter__(self) -> BenchSession:
        from iris_pipeline.pipeline import Pipeline

        s, progress = self.settings, self.progress
        baseline = device_used_bytes(self.devices, nvml=self._nvml) if self.devices else {}
        self.engines_before = engine_counters(self.config)
        self.sampler = NvmlSampler(self.devices, s.nvml_period_s, baseline_bytes=baseline, nvml=self._nvml).start()
        self.host = HostMemorySampler(s.nvml_period_s).start()
        try:
            self.pipeline = Pipeline(self.config, placement=self.placement, stage_factory=self._stage_factory)
            if progress:
                progress("building the pipeline")
            self.pipeline.prepare(progress=(lambda name: progress(f"preparing stage {name}")) if progress else None)
            self.build_nvml = self.sampler.summary()
            self.target = BenchTarget(self.pipeline, self._job_maker(), list(self.gpus))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.host.stop()
        self.sampler.stop()
        if self.pipeline is not None:
            self.pipeline.close()

    def _job_maker(self) -> Callable[[float, int], Any]:
        from iris_pipeline.pipeline import Job

        s = self.settings
        avatar = self.pipeline.prepare_avatar(s.avatar or inputs.default_avatar_path())
        reference = inputs.load_reference(s.reference, s.seed)
        transcript = s.transcript or inputs.reference_transcript(s.language)
        scripts: dict[float, str] = {}

        def make_job(clip_s: float, seed: int) -> Any:
            if clip_s not in scripts:
                scripts[clip_s] = inputs.script_for(clip_s, s.language)
            voice = _varied(reference, seed) if s.fresh_voice else reference
            return Job(text=scripts[clip_s], language=s.language, reference=voice, transcript=transcript,
                       avatar=avatar, seconds=clip_s, seed=seed)

        return make_job

    def _more_runs(self, clip_s: float) -> Callable | None:
        if self.targets is None:
            return None
        s, gpu_name = self.settings, self.context.get("gpu_name")
        clip_targets = self.targets.for_clip(clip_s, None if gpu_name == "n/a" else gpu_name)
        return verdicts.undecided_rule(clip_targets, clip_s, s.statistics, s.confidence, s.n_boot, s.seed)

    def measure(self) -> BenchResult:
        """Every clip length, one measurement window each."""
        assert self.target is not None, "BenchSession.measure() runs inside `with`"
        clips = [measure_clip(self.target, clip_s, self.resolved, self.sampler, self.progress, self.host,
                              self._more_runs(clip_s)) for clip_s in self.settings.clip_lengths]
        return BenchResult(context=self.context, resolved=self.resolved, config=self.config.model_dump(mode="json"),
                           placement=self.placement.describe(), clips=clips,
                           engines=counters_delta(self.engines_before, engine_counters(self.config)),
                           build_nvml=self.build_nvml, notes=self._notes(clips), started_utc=self.started_utc,
                           duration_s=time.perf_counter() - self._t0)

    def measure_throughput(self, concurrencies: dict[float, list[int]]) -> list[tuple[float, list[Phase]]]:
        """The throughput phases alone at the given concurrencies of each clip length, each length
        after its own warm-up (the side-by-side measurement of another setting)."""
        assert self.target is not None, "BenchSession.measure_throughput() runs inside `with`"
        s, out = self.settings, []
        for clip_s, levels in concurrencies.items():
            release_caches(self.target)
            for i in range(self.resolved.warmup):
                if self.progress:
                    self.progress(f"clip {clip_s:g} s: warm-up {i + 1}/{self.resolved.warmup}")
                time_job(self.target, self.target.make_job(clip_s, s.seed + i), index=-1 - i)
            out.append((clip_s, throughput_phases(self.target, clip_s, self.resolved, levels, phase_seed(s.seed),
                                                  self.progress)))
        return out

    def _notes(self, clips: list[ClipMeasurement]) -> list[str]:
        notes = list(self.resolved.notes)
        if not self.sampler.available:
            notes.append(f"NVML unavailable ({self.sampler.reason}): peak_mem_gb, gpu_busy_pct and SM figures are "
                         "n/a and their gates INVALID")
        if not self.settings.fresh_voice:
            notes.append("voice prompt cached: the same reference every run, so RVC and the VALL-E X prompt run in "
                         "warm-up only (RVC is cached per reference); --fresh-voice times them per clip")
        for clip in clips:
            if len(clip.runs) > clip.planned_runs:
                notes.append(f"clip {clip.clip_s:g} s: {len(clip.runs)} runs instead of {clip.planned_runs}: a "
                             f"gate's interval straddled its target (cap max_runs {self.resolved.max_runs})")
            if clip.encode_error:
                notes.append(f"clip {clip.clip_s:g} s: mp4 encoding failed ({clip.encode_error}); encode_ms is n/a")
            if clip.ramp_note:
                notes.append(f"clip {clip.clip_s:g} s: {clip.ramp_note}")
        return notes


def run_benchmark(settings: BenchSettings, config: PipelineConfig, **kwargs: Any) -> BenchResult:
    """Build the pipeline once, measure every clip length, tear down (keywords: `BenchSession`'s).
    Then, for each of `settings.schedulers` other than the configured one, a pipeline built with
    that scheduler runs the throughput phases at the concurrencies the configured one measured."""
    others = scheduler_configs(config, settings.schedulers) if settings.throughput else {}
    with BenchSession(settings, config, **kwargs) as session:
        result = session.measure()
    result.scheduler = configured_scheduler(config)
    if settings.schedulers and not settings.throughput:
        result.notes.append("--schedulers: no throughput phases ran (--no-throughput), so nothing was compared")
    levels = {clip.clip_s: [p.concurrency for p in clip.phases] for clip in result.clips if clip.phases}
    progress = kwargs.get("progress")
    for name, other in others.items():
        labelled = (lambda text, name=name: progress(f"scheduler {name}: {text}")) if progress else None
        with BenchSession(settings, other, **{**kwargs, "targets": None, "progress": labelled}) as session:
            result.other_schedulers += [SchedulerThroughput(name, clip_s, phases)
                                        for clip_s, phases in session.measure_throughput(levels)]
    return result
