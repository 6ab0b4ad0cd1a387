"""Manifest equality and official-layout checkpoint round trips for hubert_base, rmvpe, rvc_v2_40k/48k."""

from __future__ import annotations

import pickle

import pytest
import torch

from iris_pipeline import models
from iris_pipeline.errors import CheckpointError
from iris_pipeline.models.rvc import export_file_dict
from tests.support.malicious import RunsCode
from tests.support.manifests import (
    assert_state_dicts_equal,
    load_manifest,
    manifest_shapes,
    model_shapes,
    random_state_dict,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small CPU ops run faster without intra-op threads on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def full_models():
    """Each full-size model built once for the module (HuBERT 95M and RMVPE 90M parameters)."""
    return {name: models.build(name, "full") for name in ("hubert_base", "rmvpe", "rvc_v2_40k", "rvc_v2_48k")}


@pytest.mark.parametrize("name", ["hubert_base", "rmvpe", "rvc_v2_40k", "rvc_v2_48k"])
def test_full_model_matches_manifest(full_models, name):
    manifest = load_manifest(name)
    model = full_models[name]
    assert model_shapes(model) == manifest_shapes(manifest)
    assert sum(p.numel() for p in model.parameters()) == manifest["total_params"]


@pytest.mark.parametrize("name", ["rvc_v2_40k", "rvc_v2_48k"])
def test_rvc_config_list_is_the_exported_one(full_models, name):
    assert full_models[name].config.to_list() == load_manifest(name)["config_list"]


@pytest.mark.parametrize("name", ["rvc_v2_40k", "rvc_v2_48k"])
def test_exported_rvc_file_round_trip_fp16(full_models, name, tmp_path):
    model = full_models[name]
    exported = export_file_dict(model, info="200epoch")
    exported["weight"] = random_state_dict(model, seed=7, dtype=torch.float16)
    exported["timestamp"] = "2024-01-01"  # unknown keys some RVC versions add are ignored
    path = tmp_path / f"{name}.pth"
    torch.save(exported, path)
    loaded = models.load(name, path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert_state_dicts_equal(loaded.state_dict(), exported["weight"])


def test_rvc_training_checkpoint_drops_enc_q(tmp_path):
    model = models.build("rvc_v2_40k", "tiny")
    state = random_state_dict(model, seed=3)
    enc_q = {k: torch.zeros(v) for k, v in load_manifest("rvc_v2_40k")["training_only"]["params"].items()}
    path = tmp_path / "G_100.pth"
    torch.save({"model": {**state, **enc_q}, "iteration": 100, "learning_rate": 1e-4}, path)
    assert_state_dicts_equal(models.load("rvc_v2_40k", path, size="tiny").state_dict(), state)


def test_rvc_speaker_count_comes_from_the_file(tmp_path):
    model = models.build("rvc_v2_48k", "tiny")
    exported = export_file_dict(model)
    exported["weight"]["emb_g.weight"] = torch.randn(3, model.config.gin_channels).half()
    path = tmp_path / "three_speakers.pth"
    torch.save(exported, path)
    assert models.load("rvc_v2_48k", path, size="tiny").emb_g.weight.shape[0] == 3


@pytest.mark.parametrize("size", ["full", "tiny"])
def test_mismatched_config_is_refused(full_models, size, tmp_path):
    path = tmp_path / "voice_48k.pth"
    model = full_models["rvc_v2_48k"] if size == "full" else models.build("rvc_v2_48k", "tiny")
    torch.save(export_file_dict(model), path)
    with pytest.raises(CheckpointError) as err:
        models.load("rvc_v2_40k", path, size=size)
    message = str(err.value)
    assert "\n" not in message
    assert "upsample_rates" in message and "load it as rvc_v2_48k" in message


def test_v1_and_no_f0_models_are_refused(tmp_path):
    model = models.build("rvc_v2_40k", "tiny")
    for changes, words in (({"version": "v1"}, "v1 model"), ({"f0": 0}, "without pitch")):
        path = tmp_path / "other.pth"
        torch.save({**export_file_dict(model), **changes}, path)
        with pytest.raises(CheckpointError, match=words):
            models.load("rvc_v2_40k", path, size="tiny")


@pytest.mark.parametrize("name", ["hubert_base", "rmvpe", "rvc_v2_40k"])
def test_code_running_pickle_is_refused(name, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        torch.save({"weight": {}, "model": {}, "payload": RunsCode(marker)}, fh, pickle_module=pickle)
    with pytest.raises(CheckpointError):
        models.load(name, path, size="tiny")
    assert not marker.exists()


class Dictionary:
    """Stands in for the fairseq `Dictionary` objects pickled in hubert_base.pt's task_state."""

    symbols = ("<s>", "<pad>", "</s>", "<unk>")


def test_hubert_pickle_refusal_names_the_file_and_never_advises_running_it(tmp_path):
    path = tmp_path / "hubert_base.pt"
    torch.save({"model": {}, "task_state": {"dictionaries": [Dictionary()]}}, path)
    with pytest.raises(CheckpointError) as err:
        models.load("hubert_base", path, size="tiny")
    message = str(err.value)
    assert str(path) in message and "could run code" in message and "\n" not in message
    assert "weights_only=False" not in message and "hubert_base.weights.pt" not in message


@pytest.mark.parametrize(("layout", "size"), [("fairseq_dict", "full"), ("plain", "tiny")])
def test_hubert_round_trip_fp16(full_models, layout, size, tmp_path):
    model = full_models["hubert_base"] if size == "full" else models.build("hubert_base", "tiny")
    state = random_state_dict(model, seed=11, dtype=torch.float16)
    obj = {"args": None, "cfg": {"task": {"normalize": False}}, "model": state} if layout == "fairseq_dict" else state
    path = tmp_path / "hubert.pt"
    torch.save(obj, path)
    loaded = models.load("hubert_base", path, size=size)
    kernel = 128 if size == "full" else 16
    assert loaded.encoder.pos_conv._modules["0"].weight_g.shape == (1, 1, kernel)
    assert_state_dicts_equal(loaded.state_dict(), state)


@pytest.mark.parametrize(("with_tracked", "size"), [(False, "full"), (True, "tiny")])
def test_rmvpe_round_trip(full_models, with_tracked, size, tmp_path):
    model = full_models["rmvpe"] if size == "full" else models.build("rmvpe", "tiny")
    state = random_state_dict(model, seed=5, dtype=torch.float16)
    if not with_tracked:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "rmvpe.pt"
    torch.save(state, path)
    loaded = models.load("rmvpe", path, size=size).state_dict()
    if not with_tracked:
        loaded = {k: v for k, v in loaded.items() if not k.endswith("num_batches_tracked")}
    assert_state_dicts_equal(loaded, state)


def test_wrong_shapes_are_named(tmp_path):
    path = tmp_path / "rmvpe_bad.pt"
    torch.save(models.build("rmvpe", "tiny").state_dict() | {"cnn.weight": torch.zeros(3, 99, 3, 3)}, path)
    with pytest.raises(CheckpointError, match="cnn.weight"):
        models.load("rmvpe", path, size="tiny")
