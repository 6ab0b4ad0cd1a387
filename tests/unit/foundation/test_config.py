"""Config validation: every bad value is named with its key, the value, and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from iris_pipeline.config import (
    STAGE_ORDER,
    PipelineConfig,
    default_targets_path,
    load_pipeline_config,
    load_targets,
    parse_pipeline_config,
    parse_targets,
)
from iris_pipeline.errors import ConfigError


def test_defaults_are_the_chain_in_order():
    cfg = PipelineConfig()
    assert cfg.stages == list(STAGE_ORDER) == ["rvc", "vallex", "fastpitch", "wav2lip"]
    assert cfg.chunking.chunk_seconds == 10.0
    assert cfg.lipsync_features == "fastpitch"


def test_yaml_round_trip(tmp_path: Path):
    path = tmp_path / "pipe.yaml"
    path.write_text(
        "size: tiny\ndevice: cpu\nvallex: {precision: bf16, backend: compile}\n"
        "wav2lip: {precision: int8, backend: tensorrt, device: 'cuda:1'}\nchunking: {chunk_seconds: 5}\n"
    )
    cfg = load_pipeline_config(path)
    assert cfg.size == "tiny"
    assert cfg.vallex.precision == "bf16"
    assert cfg.vallex.backend == "compile"
    assert cfg.wav2lip.device == "cuda:1"
    assert cfg.chunking.chunk_seconds == 5
    assert cfg.config_hash() == load_pipeline_config(path).config_hash()
    assert cfg.config_hash() != PipelineConfig().config_hash()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"vallex": {"precision": "fp8"}}, ["vallex.precision", "'fp8'", "fp32", "fp16", "bf16", "int8"]),
        ({"fastpitch": {"backend": "onnx"}}, ["fastpitch.backend", "'onnx'", "eager", "compile", "tensorrt"]),
        ({"size": "huge"}, ["size", "'huge'", "full", "tiny"]),
        ({"device": "tpu"}, ["device", "'tpu'", "cpu", "cuda"]),
        ({"rvc": {"device": "cuda:x"}}, ["rvc.device", "'cuda:x'", "cuda:N"]),
        ({"stages": ["vallex", "rvc"]}, ["stages", "order"]),
        ({"stages": ["rvc", "tacotron"]}, ["stages", "tacotron", "allowed"]),
        ({"chunking": {"chunk_seconds": -1}}, ["chunking.chunk_seconds", "-1", "greater than"]),
        ({"wav2lip": {"precison": "fp16"}}, ["wav2lip.precison", "unknown key"]),
        ({"lipsync_features": "video"}, ["lipsync_features", "'video'", "fastpitch", "speech"]),
    ],
)
def test_bad_config_names_key_value_and_allowed(data, expected):
    with pytest.raises(ConfigError) as info:
        parse_pipeline_config(data, source="pipe.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("pipe.yaml: ")
    for part in expected:
        assert part in message, (part, message)


def test_bad_yaml_and_missing_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("size: [tiny\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline_config(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_pipeline_config(tmp_path / "absent.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_pipeline_config(listy)


def test_default_targets_keep_every_figure_of_the_shipped_file():
    """Every clip length and figure of defaults/targets.yaml reaches the parsed targets unchanged (the
    numbers themselves are the users' and live only in that file)."""
    shipped = yaml.safe_load(default_targets_path().read_text(encoding="utf-8"))["default"]["clips"]
    targets = load_targets()
    assert shipped, "the shipped targets name no clip length"
    for clip_s, figures in shipped.items():
        parsed = targets.for_clip(clip_s)
        assert parsed is not None, f"clip {clip_s} s missing"
        for figure, value in figures.items():
            assert getattr(parsed, figure) == value, f"clip {clip_s} s, {figure}"
    assert targets.for_clip(7) is None


def test_targets_per_gpu_override():
    targets = parse_targets({
        "default": {"clips": {5: {"latency_ms": 360}}},
        "per_gpu": {"H100": {"clips": {5: {"latency_ms": 120}}}},
    })
    assert targets.for_clip(5, "NVIDIA H100 80GB HBM3").latency_ms == 120
    assert targets.for_clip(5, "NVIDIA A100-SXM4-80GB").latency_ms == 360
    assert targets.for_clip(5, None).latency_ms == 360


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"default": {"clips": {5: {"latency_ms": -3}}}}, ["default.clips.5.latency_ms", "-3", "greater than 0"]),
        ({"default": {"clips": {5: {"latency": 3}}}}, ["default.clips.5.latency", "unknown key"]),
        ({"default": {"clips": {}}}, ["at least one clip length"]),
        ({"per_gpu": {}}, ["default", "Field required"]),
        ({"default": {"clips": {-5: {"latency_ms": 3}}}}, ["default.clips", "-5", "> 0"]),
    ],
)
def test_bad_targets(data, expected):
    with pytest.raises(ConfigError) as info:
        parse_targets(data, source="targets.yaml")
    for part in expected:
        assert part in str(info.value), (part, str(info.value))


def test_bad_config_exits_non_zero_with_one_line(tmp_path: Path):
    bad = tmp_path / "pipe.yaml"
    bad.write_text("vallex: {precision: fp64}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "iris_pipeline", "config", "check", str(bad)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "vallex.precision" in lines[0]
    assert "'fp64'" in lines[0]


def test_a_stage_option_typo_is_refused_at_load_with_the_key_and_the_allowed_ones():
    with pytest.raises(ConfigError) as info:
        parse_pipeline_config({"vallex": {"options": {"max_btach": 4}}})
    message = str(info.value)
    assert message.startswith("config: vallex.options.max_btach: unknown option; allowed: "), message
    assert "max_batch" in message, message


def test_every_stage_option_is_in_the_effective_config_with_its_default():
    dumped = PipelineConfig().model_dump(mode="json")
    for stage in STAGE_ORDER:
        options = dumped[stage]["options"]
        assert "backend" in options, stage
        assert options["backend"]["workspace_gb"] == 4.0, stage
    assert dumped["vallex"]["options"]["max_batch"] == 16
    assert dumped["wav2lip"]["options"]["batch_size"] == 128


def test_stage_options_are_typed_objects():
    cfg = parse_pipeline_config({"rvc": {"options": {"pitch_shift": 3}}})
    assert cfg.rvc.options.pitch_shift == 3.0
    assert cfg.rvc.options.model == "rvc_v2_40k"  # the default of a key the file leaves out
