"""Session fixtures of the GPU perf suite. The measurement is `iris bench`'s own: one benchmark session
(`benchmark.session.run_benchmark`) with the same pipeline-config resolution (`build_config()`, as
`iris bench` without flags resolves it), the same placement, measurement windows, sequential runs and
figure code (`benchmark.results`); the gate tests only read its verdicts. pytest-benchmark's switches
(--benchmark-disable / --benchmark-skip) change nothing the gates read.

Options (registered by tests/support/perf_options.py, so `pytest -m gpu` from the root knows them):
--bench-runs / --bench-warmup (default 30 / 3), --gate-statistic FIGURE=STAT, --bench-out DIR
(default $IRIS_BENCH_OUT, else a session temporary directory: bench.csv, bench.json and summary.json,
the files `iris bench` writes), and --ab-base REF / --ab-pairs N (the A/B regression check of the
working tree against REF, off without it; the pair count is chosen from the calibration unless
given). Tests taking `clip_s` are parametrized over --clip-lengths.

Under pytest-xdist the suite must stay in one process (one measurement at a time on the GPU): run
it with `--dist loadgroup`; every test here is in the group "iris-perf".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PERF_DIR = Path(__file__).resolve().parent
XDIST_GROUP = "iris-perf"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "clip_s" in metafunc.fixturenames:
        from iris_pipeline.benchmark.settings import parse_clip_lengths

        lengths = parse_clip_lengths(metafunc.config.getoption("--clip-lengths"))
        metafunc.parametrize("clip_s", lengths, ids=[f"{v:g}s" for v in lengths])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # not an xdist worker
        return
    ours = [item for item in items if PERF_DIR in Path(str(item.fspath)).resolve().parents]
    if ours and getattr(config.option, "dist", None) != "loadgroup":
        raise pytest.UsageError("the GPU perf suite measures in one process: under pytest-xdist run it with "
                                f"--dist loadgroup (its tests share the group {XDIST_GROUP!r}), or without -n")
    for item in ours:
        item.add_marker(pytest.mark.xdist_group(XDIST_GROUP))


@pytest.fixture(scope="session")
def perf_settings(pytestconfig):
    """The benchmark settings of the session (device defaults are filled in by the session itself)."""
    from iris_pipeline.benchmark.settings import BenchSettings, parse_assignments, parse_clip_lengths

    return BenchSettings(
        clip_lengths=parse_clip_lengths(pytestconfig.getoption("--clip-lengths")),
        runs=pytestconfig.getoption("--bench-runs"), warmup=pytestconfig.getoption("--bench-warmup"),
        statistics=parse_assignments(pytestconfig.getoption("--gate-statistic"), "--gate-statistic"))


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


@dataclass(frozen=True)
class PerfResult:
    """What the session measured, its verdicts and where its files are; `target` is the still open
    session's pipeline (for pytest-benchmark's own timing of one more job)."""

    result: Any  # benchmark.session.BenchResult
    verdicts: list  # benchmark.verdicts.Verdict
    out_dir: Path
    rows: list[dict[str, Any]]
    target: Any  # benchmark.runner.BenchTarget

    @property
    def gpu(self) -> str:
        return self.result.gpu_name or "no GPU"

    def verdict(self, clip_s: float, figure: str):
        """The verdict of one gate; the test skips when the targets file has no such gate."""
        found = [v for v in self.verdicts if v.clip_s == clip_s and v.figure == figure]
        if not found:
            pytest.skip(f"no {figure} target for clip {clip_s:g} s in the targets file")
        return found[0]

    def figures(self, clip_s: float) -> dict[str, Any]:
        """The e2e row of bench.csv for one clip length (the figures shown in Allure / extra_info)."""
        from iris_pipeline.benchmark import schema

        row = next(r for r in self.rows if r["clip_s"] == clip_s and r["stage"] == schema.E2E)
        return {k: v for k, v in row.items() if k in schema.csv_columns([])}


@pytest.fixture(scope="session")
def perf_result(perf_config, perf_profile, perf_settings, engine_dir, pytestconfig, targets, tmp_path_factory):
    """The one benchmark session of the run (every clip length), engines from `engine_dir`; its
    bench.csv / bench.json / summary.json are written at once."""
    from iris_pipeline.benchmark import results
    from iris_pipeline.benchmark.session import BenchSession

    old_engine_dir = os.environ.get("IRIS_ENGINE_DIR")
    os.environ["IRIS_ENGINE_DIR"] = str(engine_dir)
    try:
        with BenchSession(perf_settings, perf_config, targets=targets) as session:
            result = session.measure()
            result.notes.append("measured by the pytest perf session (tests/perf)")
            result.context.update(perf_profile.context())  # the profile measured and every stage fallback
            result.notes.extend(perf_profile.notes())
            found = results.evaluate(result, targets)
            out = pytestconfig.getoption("--bench-out") or os.environ.get("IRIS_BENCH_OUT")
            out_dir = Path(out) if out else tmp_path_factory.mktemp("bench")
            targets_name = pytestconfig.getoption("--targets") or "default (iris_pipeline/defaults/targets.yaml)"
            results.write_outputs(result, found, out_dir, str(targets_name))
            yield PerfResult(result, found, out_dir, results.csv_rows(result), session.target)
    finally:
        if old_engine_dir is None:
            os.environ.pop("IRIS_ENGINE_DIR", None)
        else:
            os.environ["IRIS_ENGINE_DIR"] = old_engine_dir


@pytest.fixture(scope="session")
def ab_results(pytestconfig, perf_config, perf_settings, tmp_path_factory):
    """abrun.ABRun of the working tree against --ab-base (skips without it). Both sides run in their
    own worker process, interleaved, each with its own defaults and the explicitly set options."""
    ref = pytestconfig.getoption("--ab-base")
    if not ref:
        pytest.skip("A/B regression check off: pass --ab-base REF to run it")
    import soundfile as sf

    from iris_pipeline.benchmark import abrun, inputs
    from iris_pipeline.metrics import repository_root

    s = perf_settings
    tmp = tmp_path_factory.mktemp("ab")
    head = repository_root()
    abrun.export_ref(head, ref, tmp / "base")
    reference = inputs.synthetic_reference(s.seed)
    sf.write(str(tmp / "reference.wav"), reference.samples.numpy(), reference.sample_rate, subtype="FLOAT")
    job = abrun.ABInputs(options=abrun.explicit_options(perf_config), clip_lengths=s.clip_lengths,
                         scripts={L: inputs.script_for(L, s.language) for L in s.clip_lengths},
                         language=s.language, reference_wav=tmp / "reference.wav",
                         transcript=inputs.reference_transcript(s.language), avatar=inputs.default_avatar_path())
    run = abrun.run_ab(tmp / "base", head, job, abrun.ABOptions(pairs=pytestconfig.getoption("--ab-pairs")), tmp)
    return ref, run
