"""VALL-E X model: official names/shapes, official checkpoint layout, safe loading."""

from __future__ import annotations

import pathlib
import pickletools
import zipfile

import pytest
import torch

from iris_pipeline import models
from iris_pipeline.errors import CheckpointError
from iris_pipeline.models.vallex import build_vallex
from tests.support.malicious import RunsCode
from tests.support.manifests import load_manifest, manifest_shapes, model_shapes, random_state_dict


class OfficialWindowsPath:
    """Pickles exactly as the released file's `pathlib.WindowsPath` value (built on Linux too)."""

    def __init__(self, *parts: str):
        self.parts = parts

    def __reduce__(self):
        return (pathlib.WindowsPath, self.parts)


def tied_state(model: torch.nn.Module, seed: int = 7) -> dict[str, torch.Tensor]:
    """Random state dict whose tied entries hold the same values, as in the official file."""
    state = random_state_dict(model, seed=seed)
    for out_name, emb_name in model.tied_pairs():
        state[out_name] = state[emb_name].clone()
    return state


def official_file(path: pathlib.Path, state: dict[str, torch.Tensor], **extra) -> pathlib.Path:
    """A file in the released layout: the state dict under 'model' next to trainer metadata."""
    torch.save({"model": state, "exp_dir": OfficialWindowsPath("C:\\", "exp", "valle"), "epoch": 10,
                "batch_idx_train": 123, **extra}, path)
    return path


def pickle_globals(path: pathlib.Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            found.add(f"{strings[-2]}.{strings[-1]}")
        elif op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
    return found


def test_full_model_matches_official_manifest():
    manifest = load_manifest("vallex")
    with torch.device("meta"):
        model = build_vallex("full")
    assert model_shapes(model) == manifest_shapes(manifest)
    assert len(model.state_dict()) == manifest["checkpoint_layout"]["state_dict_entries"] == 374
    assert [name for name, _ in model.named_parameters()] == list(manifest["params"])
    assert sum(p.numel() for p in model.parameters()) == manifest["total_params"]
    assert sum(p.numel() for n, p in model.named_parameters() if n.startswith("ar_")) == manifest["ar_params"]
    params = dict(model.named_parameters(remove_duplicate=False))
    for out_name, emb_name in manifest["tied"].items():
        assert params[out_name] is params[emb_name]


def test_official_layout_round_trip_is_bit_exact(tmp_path):
    model = models.build("vallex", "tiny")
    state = tied_state(model)
    path = official_file(tmp_path / "vallex-checkpoint.pt", state)
    assert "pathlib.WindowsPath" in pickle_globals(path)

    loaded = models.load("vallex", path, "tiny")
    got = loaded.state_dict()
    assert list(got) == list(state)
    for name, tensor in state.items():
        assert torch.equal(got[name], tensor), name
    # the tie survives loading: one tensor, two names
    assert loaded.nar_predict_layers[0].weight.data_ptr() == loaded.nar_audio_embeddings[2].weight.data_ptr()


def test_code_running_pickle_is_refused(tmp_path):
    model = models.build("vallex", "tiny")
    marker = tmp_path / "pwned"
    path = official_file(tmp_path / "evil.pt", tied_state(model), hook=RunsCode(marker))
    with pytest.raises(CheckpointError, match="refused"):
        models.load("vallex", path, "tiny")
    assert not marker.exists()


def test_only_the_windows_path_global_is_allowed(tmp_path):
    model = models.build("vallex", "tiny")
    path = tmp_path / "posix.pt"
    torch.save({"model": tied_state(model), "exp_dir": pathlib.PurePosixPath("/exp")}, path)
    with pytest.raises(CheckpointError, match="refused"):
        models.load("vallex", path, "tiny")


def test_tied_entries_that_differ_are_refused(tmp_path):
    model = models.build("vallex", "tiny")
    state = random_state_dict(model, seed=3)  # tied names get different random values
    path = official_file(tmp_path / "untied.pt", state)
    with pytest.raises(CheckpointError, match="nar_predict_layers.0.weight"):
        models.load("vallex", path, "tiny")


def test_layout_without_model_entry_is_refused(tmp_path):
    model = models.build("vallex", "tiny")
    path = tmp_path / "bare.pt"
    torch.save(tied_state(model), path)
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        models.load("vallex", path, "tiny")


def test_wrong_size_names_the_mismatch(tmp_path):
    model = models.build("vallex", "tiny")
    state = tied_state(model)
    del state["ar_predict_layer.weight"]
    path = official_file(tmp_path / "missing.pt", state)
    with pytest.raises(CheckpointError, match="1 missing \\(ar_predict_layer.weight\\)"):
        models.load("vallex", path, "tiny")


def test_tie_survives_dtype_conversion_and_build_is_seeded():
    model = models.build("vallex", "tiny", seed=1).to(torch.float16)
    for j in range(6):
        assert model.nar_predict_layers[j].weight is model.nar_audio_embeddings[j + 2].word_embeddings.weight
    assert model.nar_predict_layers[0].weight.dtype == torch.float16
    again = models.build("vallex", "tiny", seed=1).to(torch.float16)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(),
                                                 strict=True))
