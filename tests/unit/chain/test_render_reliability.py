"""The reliability cases of `iris render` and the commands around it, each run as a user runs it.

Every case either succeeds or ends with a non-zero status, one line on stderr and no stray file:
limits checked before any model loads (script length, `--seconds` against the text, punctuation
only), non-UTF-8 configs, stale temporary files of killed renders, SIGTERM / SIGHUP, a full disk,
an optional backend that cannot export, checkpoint refusals that name the file and never advise
running it, `iris config check` with typo'd or out-of-range stage options, `iris engines` on
manifests of any shape, and plain progress lines (on stdout) without a terminal.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_render_cli import (
    TIMEOUT_S,
    assert_refused,
    environment,
    leftovers,
    official_tiny_checkpoints,
    render_args,
    run_render,
    write_config,
)

from iris_pipeline.chunking import benchmark_script
from tests.support.malicious import RunsCode


def iris(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iris_pipeline", *args], cwd=tmp_path, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def without_notes(stderr: str) -> list[str]:
    """stderr lines other than the random-weights note."""
    return [line for line in stderr.strip().splitlines() if "weights are random" not in line]


# --- limits, before any model loads (one stderr line: the random-weights note comes later) ------------

def test_a_20000_word_script_is_refused_at_once(tmp_path):
    proc = run_render(tmp_path, text="hello " * 20000)
    line = assert_refused(proc, tmp_path / "out", "--text", "20000 words", "limits.max_words")
    assert "2000 words" in line


def test_a_script_over_the_configured_speech_limit_is_refused(tmp_path):
    config = write_config(tmp_path, "limits.yaml", limits={"max_seconds": 20})
    proc = run_render(tmp_path, text=benchmark_script(30, "en"), config=config)
    assert_refused(proc, tmp_path / "out", "--text", "limits.max_seconds")


@pytest.mark.parametrize("text", ["?!...", ", ; : - !", "。！？"])
def test_punctuation_only_is_refused_at_once(tmp_path, text):
    proc = run_render(tmp_path, text=text)
    assert "nothing to speak" in assert_refused(proc, tmp_path / "out", "--text")


def test_seconds_too_short_for_the_text(tmp_path):
    proc = run_render(tmp_path, text=benchmark_script(30, "en"), seconds=2)
    line = assert_refused(proc, tmp_path / "out", "--seconds", "too short for the text")
    assert "at least" in line


def test_seconds_over_the_limit(tmp_path):
    proc = run_render(tmp_path, seconds=4000)
    assert_refused(proc, tmp_path / "out", "--seconds", "660")


def test_non_utf8_config(tmp_path):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("size: tiny\n# réglages\n".encode("latin-1"))
    proc = run_render(tmp_path, config=config)
    assert "not UTF-8" in assert_refused(proc, tmp_path / "out", str(config))
    check = iris(tmp_path, "config", "check", str(config))
    assert check.returncode == 2
    assert check.stderr.count("\n") == 1
    assert "not UTF-8" in check.stderr


def test_stale_temporary_files_of_dead_renders_are_removed(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = out_dir / f".clip.mp4.{dead_pid}.k3j2.tmp"
    live = out_dir / f".clip.mp4.{os.getpid()}.a1b2.tmp"  # this test's own process: alive
    stale.write_bytes(b"half a clip")
    live.write_bytes(b"a clip being written")
    proc = run_render(tmp_path, avatar=tmp_path / "nowhere.png")  # refused after the clean-up
    assert proc.returncode == 2
    assert "--avatar" in proc.stderr
    assert leftovers(out_dir) == [live.name]


# --- `iris config check` validates stage options as render does --------------------------------------

@pytest.mark.parametrize("options, named", [
    ({"vallex": {"options": {"max_batchh": 4}}}, "vallex.options.max_batchh: unknown option"),
    ({"vallex": {"options": {"max_batch": -1}}}, "vallex.options.max_batch"),
    ({"rvc": {"options": {"protect": 0.9}}}, "rvc.options.protect"),
    ({"wav2lip": {"options": {"backend": {"workspace_gb": "lots"}}}}, "wav2lip.options.backend.workspace_gb"),
    ({"fastpitch": {"backend": "tensorrt", "options": {"use_prior": "yes"}}}, "fastpitch.options.use_prior"),
    ({"rvc": {"backend": "tensorrt"}}, "rvc.backend: tensorrt is not supported"),
])
def test_config_check_refuses_bad_stage_options(tmp_path, options, named):
    path = tmp_path / "bad.yaml"  # not pipeline.yaml: render_args writes that one
    path.write_text(json.dumps(options))
    proc = iris(tmp_path, "config", "check", str(path))
    assert proc.returncode == 2, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert named in lines[0], proc.stderr
    render = run_render(tmp_path, config=path)  # the same line from render, before any model loads
    assert named in assert_refused(render, tmp_path / "out")


def test_config_check_accepts_good_stage_options(tmp_path):
    path = write_config(tmp_path, "good.yaml", vallex={"precision": "fp32", "options": {"max_batch": 4}})
    proc = iris(tmp_path, "config", "check", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{path}: ok", proc.stderr


# --- `iris engines` on manifests of any shape ------------------------------------------------------------

@pytest.mark.parametrize("manifest", [b"[]", b'{"outcome": "success", "files": "x"}', b'"text"',
                                      b'{"outcome": "success", "files": {"a": {"size": "big"}}}',
                                      b"\xff\xfe not json", b'{"size_bytes": "x"}'],
                         ids=["list", "files-string", "string", "bad-size", "binary", "no-outcome"])
def test_engines_commands_survive_any_manifest(tmp_path, manifest):
    engines = tmp_path / "engines"
    entry = engines / "fastpitch.encoder" / "0123456789abcdef01234567"
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_bytes(manifest)
    (engines / "stats.json").write_bytes(manifest)
    listed = iris(tmp_path, "engines", "list", "--dir", str(engines))
    assert listed.returncode == 0, listed.stderr
    assert "unreadable" in listed.stdout, listed.stderr
    assert not listed.stderr, listed.stderr
    stats = iris(tmp_path, "engines", "stats", "--dir", str(engines))
    assert stats.returncode == 0, stats.stderr
    assert not stats.stderr, stats.stderr
    failed = iris(tmp_path, "engines", "prune", "--failed", "--dir", str(engines))
    assert failed.returncode == 0, failed.stderr
    assert f"removed {entry}" in failed.stdout, failed.stderr
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_bytes(manifest)
    everything = iris(tmp_path, "engines", "prune", "--all", "--dir", str(engines))
    assert everything.returncode == 0, everything.stderr
    assert not entry.exists(), everything.stderr


@pytest.mark.slow
def test_engines_build_rebuilds_an_entry_whose_manifest_is_broken(tmp_path):
    engines = tmp_path / "engines"
    build = ("engines", "build", "--model", "wav2lip", "--backend", "onnx", "--size", "tiny", "--dir", str(engines))
    first = iris(tmp_path, *build)
    assert first.returncode == 0, first.stderr
    assert "built in" in first.stdout, first.stderr
    (manifest,) = engines.glob("wav2lip.tiny/*/manifest.json")
    manifest.write_text("[]")
    again = iris(tmp_path, *build)
    assert again.returncode == 0, again.stderr
    assert "built in" in again.stdout, again.stderr
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1, again.stderr
    assert "malformed manifest" in lines[0], again.stderr
    assert "rebuilding" in lines[0], again.stderr
    assert json.loads(manifest.read_text())["outcome"] == "success"


# --- checkpoint refusals name the file --checkpoints reads, and never advise running it -------------------

@pytest.mark.parametrize("content", ["garbage", "malicious"])
def test_bad_file_in_the_hubert_slot(tmp_path, content):
    directory = tmp_path / "checkpoints"
    paths = official_tiny_checkpoints(directory)
    marker = tmp_path / "pwned"
    hubert = directory / "hubert_base.pt"
    if content == "garbage":
        hubert.write_bytes(b"\x00garbage" * 512)
    else:
        with open(hubert, "wb") as fh:
            torch.save({"model": {}, "payload": RunsCode(marker)}, fh, pickle_module=pickle)
    assert paths  # every other slot holds its right file
    proc = run_render(tmp_path, checkpoints=directory)
    line = assert_refused(proc, tmp_path / "out", str(hubert))
    assert "weights_only=False" not in proc.stderr
    assert "hubert_base.weights.pt" not in proc.stderr
    assert not marker.exists()
    if content == "malicious":
        assert "could run code" in line


# --- whole renders ----------------------------------------------------------------------------------------

def _start_render(tmp_path: Path, **overrides) -> subprocess.Popen:
    return subprocess.Popen(render_args(tmp_path, **overrides), cwd=tmp_path, env=environment(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_termination_signals_end_a_render_like_ctrl_c(tmp_path, sig):
    """SIGTERM (timeout, systemd, container stop) and SIGHUP once the mp4 is being written: exit
    128 + signal, one line, no file."""
    out_dir = tmp_path / "out"
    proc = _start_render(tmp_path, seconds=20, chunk_seconds=2)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not any(name.endswith(".tmp") for name in leftovers(out_dir)):
            assert proc.poll() is None, f"render ended before it was signalled: {proc.communicate()}"
            assert time.monotonic() < deadline, "the render never started writing"
            time.sleep(0.02)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, stderr
    lines = without_notes(stderr)
    assert lines == [f"error: interrupted ({sig.name}): no clip was written"], stderr
    assert leftovers(out_dir) == []
    assert "wrote" not in stdout


@pytest.mark.slow
def test_fastpitch_ahead_of_time_option_that_cannot_export_is_one_line(tmp_path):
    config = write_config(tmp_path, "aot.yaml", fastpitch={"precision": "fp32", "backend": "compile",
                                               "options": {"backend": {"aot": True}}})
    proc = subprocess.run(render_args(tmp_path, config=config), cwd=tmp_path,
                          env={**environment(tmp_path), "IRIS_ENGINE_DIR": str(tmp_path / "engines")},
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    if proc.returncode == 0:
        pytest.skip("AOTInductor exported FastPitch on this machine: nothing to refuse")
    lines = without_notes(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: fastpitch"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert leftovers(tmp_path / "out") == []


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """ENOSPC while the clip is written (injected where the mp4 writer writes: a full disk here would
    need a mount): one line, exit 2, no mp4, no temporary file."""
    from iris_pipeline import cli
    from iris_pipeline.video import Mp4Writer

    def full(self, samples):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Mp4Writer, "write_audio", full)
    for key, value in environment(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["iris", *render_args(tmp_path)[3:]])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    lines = without_notes(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert "no space left on the device" in lines[0], lines
    assert "--out" in lines[0], lines
    assert leftovers(tmp_path / "out") == []


@pytest.mark.slow
def test_render_without_a_terminal_reports_each_stage_and_chunk(tmp_path):
    proc = run_render(tmp_path, text=benchmark_script(6, "en"), chunk_seconds=2)
    assert proc.returncode == 0, proc.stderr
    assert not [line for line in proc.stderr.splitlines() if "weights are random" not in line], proc.stderr
    progress = [line for line in proc.stdout.splitlines() if line.startswith("progress: ")]
    planned = next(line for line in progress if "script planned" in line)
    chunks = int(planned.split("planned: ")[1].split(" ")[0])
    assert chunks >= 3
    for stage in ("vallex", "fastpitch", "wav2lip"):
        done = [line for line in progress if line.startswith(f"progress: {stage}: chunk ")]
        assert len(done) == chunks, (stage, progress)
    loading = [line.split(" [")[0] for line in progress if line.startswith("progress: loading ")]
    assert loading == [f"progress: loading {name} ({k}/4)"
                       for k, name in enumerate(("rvc", "vallex", "fastpitch", "wav2lip"), start=1)]
    assert leftovers(tmp_path / "out") == ["clip.mp4", "clip.vtt"]


