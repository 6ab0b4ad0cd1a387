"""The throughput phases of two tts schedulers side by side (throughput.csv), and the A/B check of two
settings of one tree (`--ab-base-set`), on the stand-in stages of bench_fakes.py.

The stand-in VALL-E X is slower under the scheduler named in `Costs.scheduler_scale`, so which
pipeline measured a row shows in its figures. Where this tree's config has no
`vallex.options.scheduler` yet, another choice of the VALL-E X options (`long_text`) stands in for
it: the machinery only sets a dotted option and reads it back.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import bench_fakes  # beside this file (pytest's rootdir-relative import puts this directory on sys.path)
import pytest
from rich.console import Console

from iris_pipeline.benchmark import abrun, abtest, results, schema, session
from iris_pipeline.benchmark.session import (
    SCHEDULER_OPTION,
    build_config,
    configured_scheduler,
    option_value,
    run_benchmark,
    with_setting,
)
from iris_pipeline.benchmark.settings import BenchSettings
from iris_pipeline.errors import ConfigError, InputError

CLIP_S = 1.0
SLOW = 4.0  # the stand-in VALL-E X's cost factor under the other scheduler


class _NoNvml:
    class NVMLError(Exception):
        pass

    def nvmlInit(self):
        raise self.NVMLError("Driver Not Loaded")


STAND_IN_OPTION, STAND_IN_VALUES = "vallex.options.long_text", ("single", "sentences")


@pytest.fixture(scope="module")
def option():
    """The scheduler option, or the stand-in choice where this tree has none (see the docstring)."""
    if option_value(build_config(device="cpu", size="tiny"), SCHEDULER_OPTION) is not None:
        yield SCHEDULER_OPTION
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(session, "SCHEDULER_OPTION", STAND_IN_OPTION)
        yield STAND_IN_OPTION


def _other(config, option: str) -> str:
    """The choice the config does not run (the tree may default to either)."""
    values = ("continuous", "static") if option == SCHEDULER_OPTION else STAND_IN_VALUES
    return next(v for v in values if v != configured_scheduler(config))


@pytest.fixture(scope="module")
def side_by_side(option):
    config = build_config(device="cpu", size="tiny")
    other = _other(config, option)
    settings = BenchSettings(clip_lengths=[CLIP_S], runs=4, warmup=1, encode_runs=0, n_boot=200, phase_min_clips=3,
                             max_concurrency=2, saturation_gain=0.0, schedulers=[configured_scheduler(config), other])
    costs = bench_fakes.Costs(scheduler_scale={other: SLOW})
    result = run_benchmark(settings, config, stage_factory=bench_fakes.stage_factory(costs, option), nvml=_NoNvml())
    return result, other


def test_the_other_scheduler_runs_at_the_concurrencies_the_configured_one_measured(side_by_side):
    result, other = side_by_side
    assert result.scheduler != other
    levels = [p.concurrency for p in result.clips[0].phases]
    assert levels == [1, 2]
    assert [(t.scheduler, t.clip_s, [p.concurrency for p in t.phases]) for t in result.other_schedulers] == \
        [(other, CLIP_S, levels)]
    assert [p.source for p in result.other_schedulers[0].phases] == ["closed loop", "closed loop"]


def test_throughput_rows_put_the_schedulers_side_by_side_with_their_own_figures(side_by_side):
    result, other = side_by_side
    rows = results.throughput_rows(result, context=False)
    assert [(r["concurrency"], r["scheduler"]) for r in rows] == [(1, result.scheduler), (1, other),
                                                                 (2, result.scheduler), (2, other)]
    for row in rows:
        assert row["valid"] and row["completed"] >= 2 and row["clips_per_s"] > 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"], row
    for own, slowed in zip(rows[::2], rows[1::2], strict=True):  # the slowed pipeline measured the other's rows
        assert slowed["p50_ms"] > own["p50_ms"] and slowed["clips_per_s"] < own["clips_per_s"], (own, slowed)


def test_a_phases_latency_percentiles_are_over_its_counted_jobs(side_by_side):
    result, _ = side_by_side
    for phase in result.clips[0].phases + result.other_schedulers[0].phases:
        assert len(phase.latencies_ms) == phase.counted
    first = result.clips[0].phases[0]  # c = 1 from the measured runs: their latencies
    assert first.source == "latency runs"
    assert first.latencies_ms == [r.latency_ms for r in result.clips[0].runs]


def test_throughput_csv_has_its_documented_header_and_the_context(side_by_side, tmp_path):
    result, other = side_by_side
    paths = results.write_outputs(result, [], tmp_path, "test targets")
    with open(paths["throughput"], newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == schema.throughput_columns(list(result.context))
    assert reader.fieldnames[:9] == list(schema.THROUGHPUT_FIGURES)
    assert [r["scheduler"] for r in rows] == [result.scheduler, other] * 2
    assert all(r["git_commit"] == result.context["git_commit"] for r in rows)
    bench = json.loads(paths["json"].read_text())
    assert bench["scheduler"] == result.scheduler and len(bench["throughput_rows"]) == 4
    with open(paths["csv"], newline="") as fh:  # bench.csv keeps its header
        assert csv.DictReader(fh).fieldnames == schema.csv_columns(list(result.context))


def test_the_report_prints_the_side_by_side_table(side_by_side):
    from iris_pipeline.benchmark.table import print_report

    result, other = side_by_side
    console = Console(file=io.StringIO(), width=200)
    print_report(results.csv_rows(result), [], None, [], "INVALID", console,
                 throughput=results.throughput_rows(result))
    printed = console.file.getvalue()
    assert "Throughput per concurrency" in printed
    assert sum(other in line for line in printed.splitlines()) == 2


def test_without_schedulers_only_the_configured_one_is_measured():
    settings = BenchSettings(clip_lengths=[CLIP_S], runs=3, warmup=0, encode_runs=0, n_boot=200, phase_min_clips=2,
                             max_concurrency=1)
    result = run_benchmark(settings, build_config(device="cpu", size="tiny"),
                           stage_factory=bench_fakes.stage_factory(), nvml=_NoNvml())
    assert result.other_schedulers == []
    assert {r["scheduler"] for r in results.throughput_rows(result)} == {result.scheduler}


def test_fixed_concurrencies_are_all_measured_without_a_ramp():
    """A stand-in Wav2Lip so slow that more clients cannot help: the ramp would stop at c = 2, the
    fixed levels run every one, and the fastest is the saturating one."""
    settings = BenchSettings(clip_lengths=[CLIP_S], runs=3, warmup=0, encode_runs=0, n_boot=200, phase_min_clips=2,
                             concurrencies=[1, 2, 4])
    result = run_benchmark(settings, build_config(device="cpu", size="tiny"),
                           stage_factory=bench_fakes.stage_factory(bench_fakes.Costs(wav2lip_ms_per_frame=2.0)),
                           nvml=_NoNvml())
    clip = result.clips[0]
    assert [p.concurrency for p in clip.phases] == [1, 2, 4] and clip.ramp_note is None
    fastest = max(clip.phases, key=lambda p: p.rate_cps)
    assert clip.saturating_concurrency == fastest.concurrency


def test_with_setting_sets_a_dotted_key_on_a_copy():
    data = {"vallex": {"precision": "fp32"}}
    assert with_setting(data, SCHEDULER_OPTION, "static") == {"vallex": {"precision": "fp32",
                                                                         "options": {"scheduler": "static"}}}
    assert data == {"vallex": {"precision": "fp32"}}
    with pytest.raises(ConfigError, match="vallex is not a mapping"):
        with_setting({"vallex": 3}, SCHEDULER_OPTION, "static")
    with pytest.raises(ConfigError, match="expected a dotted config key"):
        with_setting(data, "vallex..scheduler", "static")


def test_base_settings_are_read_as_yaml_values():
    assert abrun.parse_base_settings(["vallex.options.scheduler=static", "vallex.options.max_batch=8"]) == \
        {"vallex.options.scheduler": "static", "vallex.options.max_batch": 8}
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        abrun.parse_base_settings(["vallex.options.scheduler"])


PAIRS = 12


def test_ab_base_set_compares_two_settings_of_the_working_tree(tmp_path, option):
    """No ref: both workers load this tree; the base runs with the other scheduler set, under which
    the stand-in VALL-E X is much slower, so the head is found not slower (OK) and faster."""
    factory = f"{Path(__file__).with_name('bench_fakes.py')}:make_pipeline"
    config = build_config(device="cpu", size="tiny")
    other = _other(config, option)
    console = Console(file=io.StringIO(), width=200)
    args = {"scheduler_scale": {other: SLOW}, "scheduler_option": option}
    command = abrun.ABCommand(settings=BenchSettings(clip_lengths=[CLIP_S]), config=config, out_dir=tmp_path, ref=None,
                              base_dir=None, options=abrun.ABOptions(pairs=PAIRS, warmup=1, base_set={option: other}))
    run = abrun.run_ab_command(command, console, None, factory=factory, factory_args=(args, args))
    with open(tmp_path / "ab.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert run.verdict == abtest.OK, row["reason"]
    assert row["base_ref"] == f"the working tree with {option}={other}" and row["base_commit"] == "n/a"
    assert float(row["ratio"]) < 0.8 and float(row["head_latency_ms_p50"]) < float(row["base_latency_ms_p50"])
    sent = json.loads((tmp_path / "ab.json").read_text())["settings"]
    key = option.rsplit(".", 1)[1]
    assert sent["base_options_sent"]["vallex"]["options"][key] == other
    assert key not in sent["options_sent"].get("vallex", {}).get("options", {})
    assert not math.isnan(float(row["diff_ms"]))
