"""Manifest equality and official-layout checkpoint round trips for hubert_base, rmvpe, rvc_v2_40k/48k."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import pytest
import torch

from iris_pipeline import models
from iris_pipeline.errors import CheckpointError
from iris_pipeline.models.checkpoint import safe_torch_load
from iris_pipeline.models.hubert import FAIRSEQ_GLOBALS, FairseqDictionary
from iris_pipeline.models.rvc import export_file_dict
from tests.support.malicious import RunsCode
from tests.support.manifests import (
    assert_state_dicts_equal,
    load_manifest,
    manifest_shapes,
    model_shapes,
    random_state_dict,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small CPU ops, one thread


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


# The published fairseq layout, written by tools/parity/hubert_fairseq_layout.py with fairseq's own
# Dictionary class (tiny fp16 weights of models.build("hubert_base", "tiny", seed=16)).
PUBLISHED_LAYOUT = Path(__file__).resolve().parents[2] / "data" / "parity" / "hubert_base_fairseq_layout_tiny.pt"


def pickled_as(monkeypatch, qualified_name: str, attributes: dict | None = None) -> object:
    """An object that pickles under `qualified_name`: the real class where it is importable (argparse),
    else a class in modules registered for this test only (fairseq and omegaconf are not installed)."""
    module_name, _, name = qualified_name.rpartition(".")
    cls = getattr(sys.modules.get(module_name), name, None)
    if cls is None:
        parts = module_name.split(".")
        for depth in range(1, len(parts) + 1):
            package = ".".join(parts[:depth])
            if package not in sys.modules:
                monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
        cls = type(name, (), {"__module__": module_name, "__qualname__": name})
        monkeypatch.setattr(sys.modules[module_name], name, cls, raising=False)
    obj = cls()
    obj.__dict__.update(attributes or {})
    return obj


def published_layout_with(task_state: dict) -> dict:
    """The fixture's top-level dict with its `task_state` replaced."""
    obj = safe_torch_load(PUBLISHED_LAYOUT, "hubert_base", FAIRSEQ_GLOBALS)
    return {**obj, "task_state": task_state}


def test_published_fairseq_file_loads_as_published():
    assert torch.serialization.get_unsafe_globals_in_checkpoint(PUBLISHED_LAYOUT) == [
        "fairseq.data.dictionary.Dictionary"]  # the fixture pickles what the real file pickles
    loaded = models.load("hubert_base", PUBLISHED_LAYOUT, size="tiny")
    obj = safe_torch_load(PUBLISHED_LAYOUT, "hubert_base", FAIRSEQ_GLOBALS)
    assert obj["args"] is None and obj["cfg"]["task"]["_name"] == "hubert_pretraining"
    dictionary = obj["task_state"]["dictionaries"][0]
    assert type(dictionary) is FairseqDictionary and dictionary.symbols[:5] == ["<s>", "<pad>", "</s>", "<unk>", "0"]
    file_state = obj["model"]
    assert all(v.dtype == torch.float16 for v in file_state.values())
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, file_state[name].float()), name


@pytest.mark.parametrize("qualified_name", [
    "omegaconf.dictconfig.DictConfig", "argparse.Namespace", "fairseq.models.hubert.hubert.HubertModel",
    "fairseq.data.dictionary.TruncatedDictionary",
])
def test_fairseq_layout_with_another_class_is_refused(monkeypatch, qualified_name, tmp_path):
    path = tmp_path / "hubert_base.pt"
    torch.save(published_layout_with({"dictionaries": [pickled_as(monkeypatch, qualified_name)]}), path)
    with pytest.raises(CheckpointError, match="not a plain weights file"):
        models.load("hubert_base", path, size="tiny")


def test_allowed_dictionary_cannot_carry_a_code_running_payload(monkeypatch, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "hubert_base.pt"
    dictionary = pickled_as(monkeypatch, "fairseq.data.dictionary.Dictionary", {"symbols": RunsCode(marker)})
    torch.save(published_layout_with({"dictionaries": [dictionary]}), path)
    with pytest.raises(CheckpointError):
        models.load("hubert_base", path, size="tiny")
    assert not marker.exists()


def test_allowed_dictionary_called_with_arguments_is_refused(monkeypatch, tmp_path):
    class Calls:
        def __reduce__(self):
            return (sys.modules["fairseq.data.dictionary"].Dictionary, ("<s>", "<pad>"))

    pickled_as(monkeypatch, "fairseq.data.dictionary.Dictionary")
    path = tmp_path / "hubert_base.pt"
    torch.save(published_layout_with({"dictionaries": [Calls()]}), path)
    with pytest.raises(CheckpointError):
        models.load("hubert_base", path, size="tiny")


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
