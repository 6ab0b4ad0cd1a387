"""Session fixtures of the GPU perf suite: the pipeline is built once (engines from the cache given by
--engine-dir), the NVML baseline is read before it exists, and one sampler runs for the session.

Options (registered by tests/support/perf_options.py, so `pytest -m gpu` from the root knows them):
--bench-runs / --bench-warmup (default 30 / 3), --gate-statistic FIGURE=STAT, --bench-out DIR
(default $IRIS_BENCH_OUT: bench.csv, bench.json and summary.json of the session are written there,
the same files `iris bench` writes), and --ab-base REF / --ab-pairs N (A/B regression check of
the working tree against REF; off without it). Tests taking `clip_s` are parametrized over
--clip-lengths.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "clip_s" in metafunc.fixturenames:
        from iris_pipeline.benchmark.settings import parse_clip_lengths

        lengths = parse_clip_lengths(metafunc.config.getoption("--clip-lengths"))
        metafunc.parametrize("clip_s", lengths, ids=[f"{v:g}s" for v in lengths])


@pytest.fixture(scope="session")
def perf_settings(pytestconfig):
    from iris_pipeline.benchmark.settings import BenchSettings, parse_assignments, parse_clip_lengths, resolve

    settings = BenchSettings(
        clip_lengths=parse_clip_lengths(pytestconfig.getoption("--clip-lengths")),
        runs=pytestconfig.getoption("--bench-runs"), warmup=pytestconfig.getoption("--bench-warmup"),
        statistics=parse_assignments(pytestconfig.getoption("--gate-statistic"), "--gate-statistic"))
    return resolve(settings, on_gpu=True)


@pytest.fixture(scope="session")
def perf_profile(device, pytestconfig):
    """The profile the session measures, resolved here (TensorRT stages that cannot run fall back)."""
    from iris_pipeline import profiles
    from iris_pipeline.benchmark.session import build_config

    chosen = profiles.load_profile(pytestconfig.getoption("--profile")
                                   or profiles.default_profile_name(device.type == "cuda"))
    data = {"data": profiles.profile_data(chosen), "source": f"profile {chosen.name}"}
    return profiles.resolve(chosen, build_config(data, device=str(device) if device.type == "cuda" else "cpu"))


@pytest.fixture(scope="session")
def perf_config(perf_profile):
    return perf_profile.config


@dataclass
class PerfSession:
    """The built pipeline and what the session measured so far (clip_s -> figures)."""

    target: Any  # benchmark.runner.BenchTarget
    sampler: Any  # metrics.NvmlSampler
    context: dict[str, Any]
    placement: dict[str, str]
    engines_before: dict[str, Any]
    build_nvml: Any
    runs: dict[float, tuple[list, Any, float]] = field(default_factory=dict)  # (runs, nvml summary, torch GB)
    throughput: dict[float, tuple[list, int | None, str | None]] = field(default_factory=dict)

    @property
    def gpu(self) -> str:
        return str(self.context.get("gpu_name", "n/a"))


@pytest.fixture(scope="session")
def perf_session(perf_config, perf_profile, perf_settings, engine_dir, pytestconfig, targets):
    """The pipeline built once, engines from `engine_dir`; at the end, the session's result files."""
    from iris_pipeline.benchmark import inputs
    from iris_pipeline.benchmark.runner import BenchTarget
    from iris_pipeline.benchmark.session import engine_counters
    from iris_pipeline.metrics import NvmlSampler, capture_context, device_used_bytes
    from iris_pipeline.pipeline import Job, Pipeline
    from iris_pipeline.placement import Placement

    old_engine_dir = os.environ.get("IRIS_ENGINE_DIR")
    os.environ["IRIS_ENGINE_DIR"] = str(engine_dir)
    placement = Placement.from_config(perf_config)
    gpus = placement.gpu_devices
    baseline = device_used_bytes(gpus)  # before the pipeline exists
    engines_before = engine_counters(perf_config)
    sampler = NvmlSampler(gpus, perf_settings.settings.nvml_period_s, baseline_bytes=baseline).start()
    pipeline = Pipeline(perf_config, placement=placement)
    pipeline.prepare()
    build_nvml = sampler.summary()
    avatar = pipeline.prepare_avatar(inputs.default_avatar_path())
    reference = inputs.synthetic_reference(perf_settings.settings.seed)
    transcript = inputs.reference_transcript("en")
    scripts: dict[float, str] = {}

    def make_job(clip_s: float, seed: int):
        text = scripts.setdefault(clip_s, inputs.script_for(clip_s, "en"))
        return Job(text=text, language="en", reference=reference, transcript=transcript, avatar=avatar,
                   seconds=clip_s, seed=seed)

    session = PerfSession(BenchTarget(pipeline, make_job, list(gpus)), sampler,
                          {**capture_context(perf_config), **perf_profile.context()},
                          placement.describe(), engines_before, build_nvml)
    try:
        yield session
    finally:
        sampler.stop()
        pipeline.close()
        if old_engine_dir is None:
            os.environ.pop("IRIS_ENGINE_DIR", None)
        else:
            os.environ["IRIS_ENGINE_DIR"] = old_engine_dir
        out = pytestconfig.getoption("--bench-out") or os.environ.get("IRIS_BENCH_OUT")
        if out and session.runs:
            _write_results(session, perf_config, perf_settings, targets, Path(out))


def _write_results(session: PerfSession, config, resolved, targets, out: Path) -> None:
    """bench.csv / bench.json / summary.json of what this session measured (the `iris bench` formats).
    Memory and utilisation cover each clip length's measured runs (the throughput tests run later)."""
    from iris_pipeline.benchmark import results
    from iris_pipeline.benchmark.runner import ClipMeasurement
    from iris_pipeline.benchmark.session import BenchResult, counters_delta, engine_counters

    clips = []
    for clip_s, (runs, nvml, reserved) in sorted(session.runs.items()):
        phases, saturating, note = session.throughput.get(clip_s, ([], None, None))
        clips.append(ClipMeasurement(clip_s, runs, [], phases, saturating, note, nvml, nvml, reserved))
    settings = resolved.settings.model_copy(update={"clip_lengths": [c.clip_s for c in clips],
                                                    "throughput": any(c.phases for c in clips)})
    resolved = dataclasses.replace(resolved, settings=settings)
    result = BenchResult(context=session.context, resolved=resolved, config=config.model_dump(mode="json"),
                         placement=session.placement, clips=clips,
                         engines=counters_delta(session.engines_before, engine_counters(config)),
                         build_nvml=session.build_nvml,
                         notes=list(resolved.notes) + ["written by the pytest perf session (tests/perf)"])
    if not session.sampler.available:
        result.notes.append(f"NVML unavailable ({session.sampler.reason}): peak_mem_gb, gpu_busy_pct and SM "
                            "figures are n/a and their gates INVALID")
    found = results.evaluate(result, targets)
    results.write_outputs(result, found, out, "pytest --targets" if targets.source is None else str(targets.source))


@pytest.fixture
def synced_benchmark(benchmark):
    """pytest-benchmark whose timer waits for the GPU (`metrics.wall_clock` synchronises every
    initialised CUDA device before reading perf_counter)."""
    from iris_pipeline.metrics import wall_clock

    benchmark._timer = wall_clock  # the fixture's timer attribute (pytest-benchmark >= 3)
    return benchmark


@pytest.fixture(scope="session")
def ab_results(pytestconfig, perf_config, perf_settings, tmp_path_factory):
    """clip_s -> abtest.ABClip for the working tree against --ab-base (skips without it). Both sides
    run in their own worker process, interleaved; the result files land in the session's tmp dir."""
    ref = pytestconfig.getoption("--ab-base")
    if not ref:
        pytest.skip("A/B regression check off: pass --ab-base REF to run it")
    import soundfile as sf

    from iris_pipeline.benchmark import abtest, inputs
    from iris_pipeline.metrics import repository_root

    s = perf_settings.settings
    tmp = tmp_path_factory.mktemp("ab")
    head = repository_root()
    abtest.export_ref(head, ref, tmp / "base")
    reference = inputs.synthetic_reference(s.seed)
    sf.write(str(tmp / "reference.wav"), reference.samples.numpy(), reference.sample_rate, subtype="FLOAT")
    clips = abtest.run_ab(tmp / "base", head, perf_config.model_dump(mode="json"), s.clip_lengths,
                          pytestconfig.getoption("--ab-pairs"), perf_settings.warmup,
                          {L: inputs.script_for(L, "en") for L in s.clip_lengths}, "en", tmp / "reference.wav",
                          inputs.reference_transcript("en"), inputs.default_avatar_path(), tmp)
    return {c.clip_s: c for c in clips}

