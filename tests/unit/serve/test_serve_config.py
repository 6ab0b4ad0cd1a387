"""The serving section, the emitted Serve config, tokens and the load test's guards (no Ray cluster)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from iris_pipeline.config import PipelineConfig, parse_pipeline_config
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.serve.config import AUTO_GPU_SHARE, gpu_share, read_token

ray = pytest.importorskip("ray", reason="ray[serve] is not installed (pip install -e '.[serve]')")


def test_serving_defaults_are_safe():
    serving = PipelineConfig().serving
    assert serving.host == "127.0.0.1"
    assert serving.max_upload_bytes == 25 * 1024 * 1024
    assert all(getattr(serving, g).max_queued_requests > 0 for g in ("ingress", "voice", "speech", "lipsync", "frames"))


@pytest.mark.parametrize(("serving", "needle"), [
    ({"port": 0}, "serving.port"),
    ({"speech": {"num_gpus": -1}}, "serving.speech.num_gpus"),
    ({"frames": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}}}, "max_replicas 2 < min_replicas 3"),
    ({"voice": {"replicas": 2}}, "serving.voice.replicas"),
])
def test_bad_serving_values_are_one_line(serving, needle):
    with pytest.raises(ConfigError) as err:
        parse_pipeline_config({"serving": serving})
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_gpu_shares_follow_the_chain_device():
    from iris_pipeline.serve.app import all_deployment_options

    on_cpu = all_deployment_options(PipelineConfig(device="cpu"))
    assert {o["ray_actor_options"]["num_gpus"] for o in on_cpu.values()} == {0.0}
    on_gpu = all_deployment_options(PipelineConfig(device="auto"))
    assert on_gpu["Speech"]["ray_actor_options"]["num_gpus"] == AUTO_GPU_SHARE["speech"]
    assert on_gpu["Ingress"]["ray_actor_options"]["num_gpus"] == 0.0
    assert sum(on_gpu[n]["ray_actor_options"]["num_gpus"] for n in ("VoicePrompt", "Speech", "LipsyncMel", "Frames")) \
        == pytest.approx(1.0)
    cfg = PipelineConfig(device="auto")
    cfg.serving.frames.num_gpus = 1
    assert gpu_share(cfg.serving.frames, "frames", on_gpus=True) == 1.0
    cfg.serving.frames.autoscaling = {"min_replicas": 1, "max_replicas": 3}
    frames = all_deployment_options(cfg)["Frames"]
    assert "num_replicas" not in frames
    assert frames["autoscaling_config"]["max_replicas"] == 3


def test_emitted_config_is_a_valid_serve_deploy_file(tmp_path):
    from ray.serve.schema import ServeDeploySchema

    from iris_pipeline.serve.app import build

    out = tmp_path / "serve.yaml"
    proc = subprocess.run([sys.executable, "-m", "iris_pipeline", "serve", "--emit-config", str(out),
                           "--size", "tiny", "--device", "cpu", "--port", "8123"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(out.read_text())
    schema = ServeDeploySchema.parse_obj(data)  # what `serve deploy` and KubeRay's serveConfigV2 accept
    app = schema.applications[0]
    assert app.import_path == "iris_pipeline.serve.app:build"
    assert data["http_options"] == {"host": "127.0.0.1", "port": 8123}
    assert {d["name"] for d in data["applications"][0]["deployments"]} == {
        "Ingress", "Registry", "VoicePrompt", "Speech", "LipsyncMel", "Frames"}
    pipeline = parse_pipeline_config(app.args["pipeline"])
    assert (pipeline.size, pipeline.device) == ("tiny", "cpu")
    built = build(app.args)  # the builder `serve deploy` calls
    assert type(built).__name__ == "Application"


def test_tokens(tmp_path, monkeypatch):
    monkeypatch.delenv("IRIS_TEST_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="no bearer token: set IRIS_TEST_TOKEN"):
        read_token(None, "IRIS_TEST_TOKEN")
    monkeypatch.setenv("IRIS_TEST_TOKEN", " abc \n")
    assert read_token(None, "IRIS_TEST_TOKEN") == "abc"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\nignored\n")
    assert read_token(token_file, "IRIS_TEST_TOKEN") == "from-file"
    token_file.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_token(token_file, "IRIS_TEST_TOKEN")
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(tmp_path / "missing", "IRIS_TEST_TOKEN")


def test_serve_refuses_to_start_without_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "IRIS_SERVE_TOKEN"}
    proc = subprocess.run([sys.executable, "-m", "iris_pipeline", "serve", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: no bearer token: set IRIS_SERVE_TOKEN or --token-file"


@pytest.mark.parametrize("url", ["http://192.0.2.1:8000", "ftp://127.0.0.1:8000", "127.0.0.1:8000"])
def test_loadtest_targets_only_this_machine(url):
    from iris_pipeline.serve.loadtest.runner import check_loopback

    with pytest.raises(InputError):
        check_loopback(url)


def test_loadtest_accepts_loopback():
    from iris_pipeline.serve.loadtest.runner import check_loopback

    check_loopback("http://127.0.0.1:8000")
    check_loopback("http://[::1]:8000")


def test_loadtest_refusal_is_one_line():
    env = {**os.environ, "IRIS_SERVE_TOKEN": "x"}
    proc = subprocess.run([sys.executable, "-m", "iris_pipeline", "loadtest", "http://192.0.2.1:8000"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "only targets loopback addresses" in proc.stderr


def test_closed_loop_rate_counts_after_the_fill():
    from iris_pipeline.serve.loadtest.runner import phase_of

    records = [{"ok": True, "end": t, "error": None} for t in (10.0, 11.0, 12.0, 14.0, 16.0)]
    phase = phase_of(2, records, step_seconds=60)
    # the first two completions fill the loop; 3 more over 16 - 11 = 5 s
    assert (phase.counted, phase.window_s, phase.valid) == (3, 5.0, True)
    assert phase.rate_cps == pytest.approx(0.6)
    assert phase.gaps_s == [1.0, 2.0, 2.0]  # the completions' spacing, for the rate's interval
    failed = phase_of(2, records + [{"ok": False, "end": 17.0, "error": "HTTP 503: overloaded"}], 60)
    assert not failed.valid
    assert "HTTP 503" in failed.why_invalid
