"""`iris engines build|list|prune|stats` on a cache directory."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from iris_pipeline.backends import BuildResult, EngineCache, EngineKey
from iris_pipeline.backends.cache import EngineBuildError
from iris_pipeline.backends.fingerprint import DeviceFingerprint
from iris_pipeline.cli import app

RUNNER = CliRunner()


def _key(precision: str) -> EngineKey:
    return EngineKey(
        graph="toy",
        model_hash="0" * 64,
        profile={},
        precision=precision,
        backend="test",
        backend_version="test 1",
        device=DeviceFingerprint("cpu", "x86_64", "none", "none"),
    )


def _build(workdir, log):
    (workdir / "engine.bin").write_bytes(b"x" * 100)
    return BuildResult("engine.bin")


def test_list_stats_and_prune(tmp_path):
    cache = EngineCache(tmp_path)
    cache.get_or_build(_key("fp16"), _build, lambda e: None)
    try:
        cache.get_or_build(
            _key("int8"), lambda w, log: (_ for _ in ()).throw(RuntimeError("boom")), lambda e: None
        )
    except EngineBuildError:  # the builder's RuntimeError, as one line
        pass
    listed = RUNNER.invoke(app, ["engines", "list", "--dir", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    assert "success" in listed.output and "failed" in listed.output
    assert "1 of 2 builds succeeded" in listed.output

    data = json.loads(RUNNER.invoke(app, ["engines", "list", "--json", "--dir", str(tmp_path)]).output)
    assert {e["outcome"] for e in data["entries"]} == {"success", "failed"}
    stats = json.loads(RUNNER.invoke(app, ["engines", "stats", "--dir", str(tmp_path)]).output)
    assert stats["total"]["attempts"] == 2 and stats["total"]["successes"] == 1

    pruned = RUNNER.invoke(app, ["engines", "prune", "--failed", "--dir", str(tmp_path)])
    assert pruned.exit_code == 0 and "1 entries removed" in pruned.output
    assert len(list(cache.entries())) == 1
    refused = RUNNER.invoke(app, ["engines", "prune", "--dir", str(tmp_path)])
    assert refused.exit_code != 0


def test_build_uses_the_cache(engine_dir, tiny_wav2lip_graph, cached_onnx):
    cached_onnx(tiny_wav2lip_graph)  # the session fixture's entry: same key as the command's
    result = RUNNER.invoke(
        app,
        [
            "engines",
            "build",
            "--model",
            "wav2lip",
            "--size",
            "tiny",
            "--backend",
            "onnx",
            "--dir",
            str(engine_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wav2lip.tiny onnx fp32: cache hit" in result.output


def test_build_rejects_unknown_model(tmp_path):
    result = RUNNER.invoke(app, ["engines", "build", "--model", "rvc", "--dir", str(tmp_path)])
    assert result.exit_code != 0
