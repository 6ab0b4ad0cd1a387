"""`iris render` as a user runs it: a subprocess per case, tiny models on the CPU.

Every bad input must end the process with a non-zero status, exactly one line on stderr that names
the input, and nothing (no mp4, no temporary file) in the output directory. The checks run before
any model is loaded, so most cases cost one interpreter start-up. Each test has its own directories
and cache (IRIS_CACHE_DIR), so the tests can run in any order or in parallel.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from iris_pipeline import models
from iris_pipeline.checkpoints import SLOTS
from iris_pipeline.models.rvc import export_file_dict
from iris_pipeline.models.vocos import ENCODEC_PREFIX
from iris_pipeline.timebase import video_frame_count
from iris_pipeline.video import read_mp4_info
from tests.support.chain import FACE, voiced_reference, voiced_samples
from tests.support.malicious import RunsCode

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "tests" / "data"
# HuBERT in the published fairseq layout (pickled fairseq Dictionary), as users have hubert_base.pt
PUBLISHED_HUBERT = DATA / "parity" / "hubert_base_fairseq_layout_tiny.pt"
REFERENCE = DATA / "speech_en_16k.wav"
FPS = 25
TIMEOUT_S = 300

# fp32: half precision on a CPU is emulated and several times slower. The cascade face detector:
# a tiny S3FD with random weights finds no face.
TINY_CONFIG = {
    "rvc": {"precision": "fp32"},
    "vallex": {"precision": "fp32"},
    "fastpitch": {"precision": "fp32"},
    "wav2lip": {"precision": "fp32", "options": {"face_detector": "cascade"}},
}


# --- helpers ----------------------------------------------------------------------------------------

def write_config(directory: Path, name: str = "pipeline.yaml", **extra) -> Path:
    path = directory / name
    path.write_text(json.dumps({**TINY_CONFIG, **extra}))  # JSON is YAML
    return path


def render_args(tmp_path: Path, **overrides: object) -> list[str]:
    """`iris render` arguments for a valid tiny job; `overrides` replace options (None drops one)."""
    options: dict[str, object] = {
        "--text": "Hello there, this is a short test.",
        "--language": "en",
        "--reference": REFERENCE,
        "--transcript": "a short reference recording",
        "--avatar": FACE,
        "--out": tmp_path / "out" / "clip.mp4",
        "--size": "tiny",
        "--device": "cpu",
        "--config": write_config(tmp_path),
    }
    options.update({f"--{key.replace('_', '-')}": value for key, value in overrides.items()})
    args = [sys.executable, "-m", "iris_pipeline", "render"]
    for key, value in options.items():
        if value is not None:
            args += [key, str(value)]
    return args


def environment(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, IRIS_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(REPO),
               COLUMNS="200")
    env.pop("FORCE_COLOR", None)
    return env


def run_render(tmp_path: Path, **overrides: object) -> subprocess.CompletedProcess:
    return subprocess.run(render_args(tmp_path, **overrides), cwd=tmp_path, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def leftovers(directory: Path) -> list[str]:
    """Every file under `directory` (mp4s, temporary files, probes); [] when it does not exist."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()) \
        if directory.is_dir() else []


def assert_refused(proc: subprocess.CompletedProcess, out_dir: Path, *names: str) -> str:
    """Non-zero exit, exactly one stderr line naming every one of `names`, nothing written."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0, proc.stderr
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{proc.stderr}"
    for name in names:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"
    assert "Traceback" not in proc.stderr
    assert leftovers(out_dir) == []
    return lines[0]


def write_wav(path: Path, samples: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> Path:
    soundfile.write(str(path), samples, sr, subtype=subtype)
    return path


# --- bad input, refused before any model is loaded --------------------------------------------------

def test_empty_text(tmp_path):
    proc = run_render(tmp_path, text="   ")
    assert "empty" in assert_refused(proc, tmp_path / "out", "--text")


def test_unsupported_language(tmp_path):
    proc = run_render(tmp_path, language="xx")
    assert "not supported" in assert_refused(proc, tmp_path / "out", "--language", "xx")


def test_non_audio_reference(tmp_path):
    fake = tmp_path / "notes.wav"
    fake.write_text("these are meeting notes, not a recording\n" * 20)
    proc = run_render(tmp_path, reference=fake)
    assert "not a readable audio file" in assert_refused(proc, tmp_path / "out", "--reference", str(fake))


def test_corrupt_reference(tmp_path):
    path = write_wav(tmp_path / "corrupt.wav", voiced_samples(2.0))
    path.write_bytes(path.read_bytes()[:30])  # cut inside the 44-byte header
    proc = run_render(tmp_path, reference=path)
    assert "not a readable audio file" in assert_refused(proc, tmp_path / "out", "--reference", str(path))


def test_silent_reference(tmp_path):
    path = write_wav(tmp_path / "silent.wav", np.zeros(32000, dtype=np.float32))
    proc = run_render(tmp_path, reference=path)
    assert "silent" in assert_refused(proc, tmp_path / "out", "--reference", str(path))


def test_nan_reference(tmp_path):
    samples = voiced_samples(2.0)
    samples[1000:1010] = np.nan
    path = write_wav(tmp_path / "nan.wav", samples, subtype="FLOAT")
    proc = run_render(tmp_path, reference=path)
    assert "NaN" in assert_refused(proc, tmp_path / "out", "--reference", str(path))


def test_reference_shorter_than_one_second(tmp_path):
    path = write_wav(tmp_path / "short.wav", voiced_samples(0.6))
    proc = run_render(tmp_path, reference=path)
    assert "shorter than the minimum 1 s" in assert_refused(proc, tmp_path / "out", "--reference", str(path))


def test_reference_longer_than_the_configured_maximum(tmp_path):
    path = write_wav(tmp_path / "long.wav", voiced_samples(3.0))
    proc = run_render(tmp_path, reference=path, config=write_config(tmp_path, "limits.yaml", max_reference_seconds=2.5))
    assert "longer than the maximum 2.5 s" in assert_refused(proc, tmp_path / "out", "--reference", str(path))


def test_bad_seconds(tmp_path):
    proc = run_render(tmp_path, seconds=-1)
    assert_refused(proc, tmp_path / "out", "seconds", "-1")


def test_image_without_a_face(tmp_path):
    import cv2

    gradient = np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (256, 1, 3))
    path = tmp_path / "gradient.png"
    assert cv2.imwrite(str(path), gradient)
    proc = run_render(tmp_path, avatar=path)
    assert "no face" in assert_refused(proc, tmp_path / "out", "--avatar", str(path))


def test_unreadable_avatar(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    proc = run_render(tmp_path, avatar=path)
    assert "not a readable image" in assert_refused(proc, tmp_path / "out", "--avatar", str(path))


def test_missing_avatar(tmp_path):
    path = tmp_path / "nowhere.png"
    proc = run_render(tmp_path, avatar=path)
    assert "no such file" in assert_refused(proc, tmp_path / "out", "--avatar", str(path))


def test_output_directory_not_writable(tmp_path):
    blocker = tmp_path / "file.txt"  # a regular file where a directory is needed (root ignores mode bits)
    blocker.write_text("not a directory")
    out = blocker / "clip.mp4"
    proc = run_render(tmp_path, out=out)
    line = assert_refused(proc, tmp_path / "out", "--out", str(out))
    assert "not writable" in line
    assert blocker.read_text() == "not a directory"


# --- checkpoints --------------------------------------------------------------------------------------

def official_tiny_checkpoints(directory: Path) -> dict[str, Path]:
    """Every model of the chain as a TINY random model saved in its official file layout, under the
    first name `iris_pipeline.checkpoints.SLOTS` looks for. Returns {registry name: path}."""

    def module(state: dict) -> dict:
        return {f"module.{k}": v for k, v in state.items()}

    def tiny(name: str) -> torch.nn.Module:
        return models.build(name, size="tiny", seed=1)

    files = {
        "rvc_v2_40k": export_file_dict(tiny("rvc_v2_40k")),  # RVC's exported voice model (fp16, config)
        "hubert_base": None,  # the published fairseq file itself, copied below
        "rmvpe": tiny("rmvpe").state_dict(),
        "vallex": {"model": tiny("vallex").state_dict()},
        "encodec_24khz": tiny("encodec_24khz").state_dict(),
        "vocos_encodec_24khz": {k: v for k, v in tiny("vocos_encodec_24khz").state_dict().items()
                                if not k.startswith(ENCODEC_PREFIX)},  # released without EnCodec
        "fastpitch": {"state_dict": module(tiny("fastpitch").state_dict())},
        "wav2lip": {"state_dict": module(tiny("wav2lip").state_dict())},  # DataParallel names
        "s3fd": tiny("s3fd").state_dict(),
    }
    paths = {}
    for slot in SLOTS:
        name = slot.registry_names[0]
        path = directory / slot.file_names[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        if files[name] is None:
            path.write_bytes(PUBLISHED_HUBERT.read_bytes())
        else:
            torch.save(files[name], path)
        paths[name] = path
    return paths


def placeholder_checkpoint_dir(directory: Path) -> Path:
    """Empty files under the official names: enough for finding files, not for loading them."""
    for slot in SLOTS:
        path = directory / slot.file_names[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return directory


def test_random_weights_note_counts_every_model_the_stages_load(tmp_path):
    from iris_pipeline.checkpoints import apply_checkpoint_dir, uses_random_weights
    from iris_pipeline.config import PipelineConfig

    assert uses_random_weights(PipelineConfig())
    cfg = apply_checkpoint_dir(PipelineConfig(), placeholder_checkpoint_dir(tmp_path))
    assert not uses_random_weights(cfg)
    without_s3fd = cfg.model_copy(deep=True)
    without_s3fd.wav2lip.options.s3fd_checkpoint = None  # the cascade finds faces: nothing random
    assert not uses_random_weights(without_s3fd)
    without_hubert = cfg.model_copy(deep=True)
    without_hubert.rvc.options.hubert_checkpoint = None  # the stage has its own file, a model inside has not
    assert without_hubert.rvc.checkpoint is not None
    assert uses_random_weights(without_hubert)
    encodec_decoder = cfg.model_copy(deep=True)
    encodec_decoder.vallex.options.decoder = "encodec"
    encodec_decoder.vallex.options.vocos_checkpoint = None  # not loaded when EnCodec decodes
    assert not uses_random_weights(encodec_decoder)


def test_checkpoint_errors_name_the_file(tmp_path):
    from iris_pipeline.checkpoints import apply_checkpoint_dir, naming_the_file
    from iris_pipeline.config import PipelineConfig
    from iris_pipeline.errors import CheckpointError

    cfg = apply_checkpoint_dir(PipelineConfig(), placeholder_checkpoint_dir(tmp_path))
    vallex_file = tmp_path / "vallex-checkpoint.pt"
    named = naming_the_file(CheckpointError("vallex: checkpoint has no 'model' entry (found: state_dict)"), cfg)
    assert str(named) == f"{vallex_file}: vallex: checkpoint has no 'model' entry (found: state_dict)"
    voice = naming_the_file(CheckpointError("rvc_v2_40k: wrong config"), cfg)
    assert str(voice).startswith(f"{tmp_path / 'voice.pth'}: ")
    already = CheckpointError(f"wav2lip: checkpoint {tmp_path / 'wav2lip_gan.pth'} does not match the model")
    assert naming_the_file(already, cfg) is already
    other = CheckpointError("something else: went wrong")
    assert naming_the_file(other, cfg) is other


def test_checkpoint_directory_that_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-dir"
    proc = run_render(tmp_path, checkpoints=missing)
    assert "not a directory" in assert_refused(proc, tmp_path / "out", "--checkpoints", str(missing))


def test_missing_checkpoint(tmp_path):
    directory = tmp_path / "checkpoints"
    paths = official_tiny_checkpoints(directory)
    paths["vallex"].unlink()
    proc = run_render(tmp_path, checkpoints=directory)
    line = assert_refused(proc, tmp_path / "out", "--checkpoints", str(directory), "vallex-checkpoint.pt")
    assert "missing 1 file" in line


@pytest.mark.parametrize("victim, impostor", [
    ("vallex", "wav2lip"),
    pytest.param("wav2lip", "vallex", marks=pytest.mark.slow),  # loads every other model first
], ids=["wav2lip-file-as-vallex", "vallex-file-as-wav2lip"])
def test_wrong_checkpoint(tmp_path, victim, impostor):
    """One file of the directory holds another model; all the others are right (the wav2lip case
    fails last, after every other file of the directory has been loaded strictly)."""
    directory = tmp_path / "checkpoints"
    paths = official_tiny_checkpoints(directory)
    paths[victim].write_bytes(paths[impostor].read_bytes())
    proc = run_render(tmp_path, checkpoints=directory)
    line = assert_refused(proc, tmp_path / "out", str(paths[victim]))
    assert line.startswith("error: ")
    assert victim in line


def test_published_hubert_file_is_taken_and_a_code_running_one_refused(tmp_path):
    """With the published hubert_base.pt every RVC file loads, so the first refusal is the broken
    VALL-E X file; a code-running hubert_base.pt in its place is refused without running."""
    directory = tmp_path / "checkpoints"
    paths = official_tiny_checkpoints(directory)
    paths["vallex"].write_bytes(paths["wav2lip"].read_bytes())
    proc = run_render(tmp_path, checkpoints=directory)
    assert_refused(proc, tmp_path / "out", str(paths["vallex"]))

    marker = tmp_path / "pwned"
    with open(paths["hubert_base"], "wb") as fh:
        torch.save({"model": {}, "task_state": {"dictionaries": [RunsCode(marker)]}}, fh)
    proc = run_render(tmp_path, checkpoints=directory)
    assert "not a plain weights file" in assert_refused(proc, tmp_path / "out", str(paths["hubert_base"]))
    assert not marker.exists()


# --- a whole render, and Ctrl-C in the middle of one ----------------------------------------------------

@pytest.mark.slow
def test_tiny_render_writes_mp4_and_vtt(tmp_path):
    proc = run_render(tmp_path, seconds=3)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out" / "clip.mp4"
    assert leftovers(tmp_path / "out") == ["clip.mp4", "clip.vtt"]
    assert proc.stderr.count("weights are random") == 1, proc.stderr
    info = read_mp4_info(out)
    assert info.frame_count == video_frame_count(3 * 24000, 24000, FPS)  # the official Wav2Lip count
    assert info.fps == FPS
    assert info.audio_sample_rate == 24000
    assert info.audio_seconds is not None
    assert abs(info.audio_seconds - 3.0) <= 1 / FPS
    assert (tmp_path / "out" / "clip.vtt").read_text().startswith("WEBVTT")
    assert f"wrote {out}" in proc.stdout


@pytest.mark.slow
def test_interrupt_mid_render_leaves_nothing(tmp_path):
    """SIGINT once the mp4 is being written (its temporary file exists): exit 130, one line, no files."""
    out_dir = tmp_path / "out"
    proc = subprocess.Popen(render_args(tmp_path, seconds=20, chunk_seconds=2), cwd=tmp_path,
                            env=environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not any(name.endswith(".tmp") for name in leftovers(out_dir)):
            assert proc.poll() is None, f"render ended before it was interrupted: {proc.communicate()}"
            assert time.monotonic() < deadline, "the render never started writing"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.strip().splitlines() if "weights are random" not in line]
    assert len(lines) == 1, stderr
    assert "interrupted" in lines[0], stderr
    assert "Traceback" not in stderr
    assert leftovers(out_dir) == []
    assert "wrote" not in stdout


# --- what the command relies on in the pipeline -----------------------------------------------------------

def test_avatar_before_models_and_close_abandons_the_job_in_flight(tmp_path):
    """`iris render` checks the face before loading models, and Ctrl-C must not wait for the whole clip:
    `close()` lets the running step finish, then abandons the job (its handle raises)."""
    from iris_pipeline.chunking import benchmark_script
    from iris_pipeline.config import parse_pipeline_config
    from iris_pipeline.pipeline import Job, Pipeline

    cfg = parse_pipeline_config({**TINY_CONFIG, "size": "tiny", "device": "cpu",
                                 "chunking": {"chunk_seconds": 2.0}})
    cfg.rvc.options.cache = False
    cfg.wav2lip.options.cache_dir = tmp_path / "avatars"
    pipeline = Pipeline(cfg)
    avatar = pipeline.prepare_avatar(FACE)
    assert not pipeline.stages["wav2lip"].prepared  # the face detector ran; the generator is not loaded yet
    pipeline.prepare()
    assert all(stage.prepared for stage in pipeline.stages.values())
    reference = voiced_reference(2.0)
    handle = pipeline.submit(Job(text=benchmark_script(20, "en"), language="en", reference=reference,
                                 transcript="a short reference", avatar=avatar, seconds=20))
    chunks = handle.chunks(timeout=TIMEOUT_S)
    first = next(chunks)
    assert first.index == 0
    assert not first.last
    pipeline.close()
    assert not any(thread.is_alive() for thread in pipeline._threads)
    with pytest.raises(RuntimeError, match="closed before this job finished"):
        for chunk in chunks:
            assert not chunk.last, "the whole 20 s job ran although the pipeline was closed"
