"""Wav2Lip generator and S3FD detector: official state-dict names and shapes, official file layouts."""

from __future__ import annotations

import pickle

import pytest
import torch

from iris_pipeline import models
from iris_pipeline.errors import CheckpointError
from tests.support.malicious import RunsCode
from tests.support.manifests import (
    assert_state_dicts_equal,
    load_manifest,
    manifest_shapes,
    model_shapes,
    random_state_dict,
)


@pytest.fixture(scope="module")
def full_wav2lip() -> torch.nn.Module:
    return models.build("wav2lip", "full")


@pytest.fixture(scope="module")
def full_s3fd() -> torch.nn.Module:
    return models.build("s3fd", "full")


def test_wav2lip_state_dict_equals_the_official_manifest(full_wav2lip):
    assert model_shapes(full_wav2lip) == manifest_shapes(load_manifest("wav2lip"))


def test_s3fd_state_dict_equals_the_official_manifest(full_s3fd):
    manifest = load_manifest("s3fd")
    assert model_shapes(full_s3fd) == manifest_shapes(manifest)
    assert sum(p.numel() for p in full_s3fd.parameters()) == manifest["total_params"]


def test_wav2lip_official_layout_round_trip_is_bit_exact(full_wav2lip, tmp_path):
    # wav2lip.pth: {"state_dict": {"module.<name>": ...}, "optimizer": ..., "global_step": ..., "global_epoch": ...}
    state = random_state_dict(full_wav2lip, seed=7)
    path = tmp_path / "wav2lip_gan.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "optimizer": {"state": {}},
                "global_step": 253000, "global_epoch": 12}, path)
    loaded = models.load("wav2lip", path)
    assert_state_dicts_equal(loaded.state_dict(), state)
    assert not loaded.training


def test_s3fd_official_layout_round_trip_is_bit_exact(full_s3fd, tmp_path):
    state = random_state_dict(full_s3fd, seed=8)
    path = tmp_path / "s3fd.pth"
    torch.save(state, path)  # the official file is a plain state dict
    assert_state_dicts_equal(models.load("s3fd", path).state_dict(), state)


@pytest.mark.parametrize("name", ["wav2lip", "s3fd"])
def test_a_code_running_pickle_is_refused_without_running(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": {"module.x": RunsCode(tmp_path / "pwned-by-checkpoint")}}, fh, protocol=2)
    with pytest.raises(CheckpointError, match=f"{name}: refused to load .*evil.pth"):
        models.load(name, path, size="tiny")
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_an_s3fd_checkpoint_given_as_wav2lip_is_named_in_the_error(tmp_path):
    path = tmp_path / "s3fd.pth"
    torch.save(models.build("s3fd", "tiny").state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        models.load("wav2lip", path, size="tiny")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("wav2lip: checkpoint ") and str(path) in message
    assert "missing (face_encoder_blocks.0.0.conv_block.0.weight" in message
    assert "unexpected (conv1_1.weight" in message


def test_a_wav2lip_checkpoint_given_as_s3fd_is_named_in_the_error(tmp_path):
    path = tmp_path / "wav2lip.pth"
    state = models.build("wav2lip", "tiny").state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(CheckpointError, match=r"s3fd: checkpoint .*wav2lip\.pth does not match.*missing \(conv1_1"):
        models.load("s3fd", path, size="tiny")


def test_a_full_checkpoint_into_the_tiny_config_names_the_wrong_shapes(tmp_path):
    path = tmp_path / "s3fd.pth"
    torch.save(models.build("s3fd", "full").state_dict(), path)
    with pytest.raises(CheckpointError, match=r"wrong shape \(conv1_1.weight \(64, 3, 3, 3\) != \(4, 3, 3, 3\)"):
        models.load("s3fd", path, size="tiny")


def test_tiny_generator_maps_mel_windows_and_faces_to_96x96_crops():
    model = models.build("wav2lip", "tiny", seed=3)
    mel = torch.randn(4, 1, 80, 16)
    faces = torch.rand(4, 6, 96, 96)
    with torch.no_grad():
        out = model(mel, faces)
        assert out.shape == (4, 3, 96, 96)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        # the official 5-D form (time folded into the batch) gives the same crops
        out5 = model(mel.view(2, 2, 1, 80, 16), faces.view(2, 2, 6, 96, 96).permute(0, 2, 1, 3, 4))
    assert out5.shape == (2, 3, 2, 96, 96)
    torch.testing.assert_close(out5.permute(0, 2, 1, 3, 4).reshape(4, 3, 96, 96), out)


def test_tiny_configs_are_the_same_classes_with_fewer_channels():
    for name in ("wav2lip", "s3fd"):
        tiny, full_names = models.build(name, "tiny"), set(manifest_shapes(load_manifest(name)))
        assert set(tiny.state_dict()) == full_names
        assert sum(p.numel() for p in tiny.parameters()) < 1_000_000


def test_build_is_seeded():
    a, b = models.build("wav2lip", "tiny", seed=5), models.build("wav2lip", "tiny", seed=5)
    assert_state_dicts_equal(a.state_dict(), b.state_dict())
