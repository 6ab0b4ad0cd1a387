"""FastPitch 1.1: official architecture (manifest), official checkpoint layout, forced durations."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iris_pipeline import models
from iris_pipeline.errors import CheckpointError
from iris_pipeline.models.fastpitch import regulate_length
from tests.support.malicious import RunsCode
from tests.support.manifests import (
    assert_state_dicts_equal,
    load_manifest,
    manifest_shapes,
    model_shapes,
    random_state_dict,
)

NAME = "fastpitch"


@pytest.fixture(scope="module")
def full_model():
    return models.build(NAME, "full")


@pytest.fixture(scope="module")
def tiny_model():
    return models.build(NAME, "tiny", seed=5)


def test_full_state_dict_matches_derived_manifest(full_model):
    manifest = load_manifest(NAME)
    assert manifest["derived_by_reading"] is True
    assert model_shapes(full_model) == manifest_shapes(manifest)
    assert set(dict(full_model.named_buffers())) == set(manifest["buffers"])
    assert sum(p.numel() for p in full_model.parameters()) == manifest["total_params"] == 46_266_420
    # the state-dict order of the official class: its own buffers first, aligner last
    assert list(full_model.state_dict())[:3] == ["pitch_mean", "pitch_std", "encoder.word_emb.weight"]
    assert list(full_model.state_dict())[-1] == "attention.key_proj.2.conv.bias"


def test_full_config_is_the_released_one():
    config = load_manifest(NAME)["config"]
    ours = models.spec(NAME).factory("full").config
    for key, value in config.items():
        if hasattr(ours, key):
            assert getattr(ours, key) == value, key


def _official_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """What common/utils.py Checkpointer.maybe_save writes, with DDP's `module.` prefixes."""
    return {
        "epoch": 1000,
        "iteration": 123456,
        "config": dict(load_manifest(NAME)["config"]),
        "train_setup": {"symbol_set": "english_basic", "text_cleaners": ["english_cleaners_v2"], "p_arpabet": 1.0},
        "state_dict": {f"module.{k}": v for k, v in state.items()},
        # the real file holds a full EMA copy; a few entries show that it is ignored
        "ema_state_dict": {k: v + 1 for k, v in list(state.items())[:4]},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "scaler": {"scale": 65536.0},
    }


def test_official_checkpoint_round_trip_is_bit_exact(full_model, tmp_path):
    state = random_state_dict(full_model, seed=11)
    path = tmp_path / "nvidia_fastpitch_210824.pt"
    torch.save(_official_checkpoint(state), path)
    loaded = models.load(NAME, path, "full")
    assert_state_dicts_equal(loaded.state_dict(), state)


def test_bare_state_dict_loads(tiny_model, tmp_path):
    state = random_state_dict(tiny_model, seed=2)
    path = tmp_path / "plain.pt"
    torch.save(state, path)
    assert_state_dicts_equal(models.load(NAME, path, "tiny").state_dict(), state)


def test_checkpoint_of_another_config_is_refused_by_name(tiny_model, tmp_path):
    ckpt = _official_checkpoint(random_state_dict(tiny_model))
    ckpt["config"]["n_speakers"] = 4
    path = tmp_path / "multi.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="n_speakers=4"):
        models.load(NAME, path, "tiny")


def test_missing_aligner_weights_are_refused(tiny_model, tmp_path):
    # FastPitch 1.0 files have no aligner; our chain needs it, so strict loading names it.
    state = {k: v for k, v in random_state_dict(tiny_model).items() if not k.startswith("attention.")}
    path = tmp_path / "v1_0.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"12 missing \(attention\.query_proj"):
        models.load(NAME, path, "tiny")


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        models.load(NAME, path, "tiny")
    assert not marker.exists()


def test_regulate_length_equals_repeat_interleave():
    gen = torch.Generator().manual_seed(0)
    enc = torch.randn(2, 7, 5, generator=gen)
    durations = torch.randint(0, 4, (2, 7), generator=gen)
    out, lengths = regulate_length(durations, enc)
    for b in range(2):
        expected = torch.repeat_interleave(enc[b], durations[b], dim=0)
        assert lengths[b] == expected.shape[0]
        torch.testing.assert_close(out[b, : lengths[b]], expected, rtol=0, atol=0)
        assert out[b, lengths[b]:].abs().sum() == 0


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(durations=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=20),
       seed=st.integers(0, 2**16))
def test_forced_durations_give_exactly_their_sum_of_frames(tiny_model, durations, seed):
    gen = torch.Generator().manual_seed(seed)
    symbols = torch.randint(1, 148, (1, len(durations)), generator=gen)
    dur = torch.tensor([durations])
    with torch.inference_mode():
        out = tiny_model.infer(symbols, durations=dur)
    assert int(out.mel_lengths[0]) == sum(durations)
    assert out.mel.shape == (1, 80, max(sum(durations), 1))
    assert torch.isfinite(out.mel).all()


def test_batched_padding_holds_the_projection_bias_as_the_official(tiny_model):
    # The official infer masks the decoder output but not the mel projection after it.
    symbols = torch.tensor([[20, 30, 40, 50], [20, 30, 0, 0]])
    durations = torch.tensor([[2, 3, 1, 2], [2, 1, 0, 0]])
    with torch.inference_mode():
        out = tiny_model.infer(symbols, durations=durations)
    assert out.mel_lengths.tolist() == [8, 3]
    padded = out.mel[1, :, 3:]
    torch.testing.assert_close(padded, tiny_model.proj.bias[:, None].expand_as(padded), rtol=0, atol=0)
    assert tiny_model.proj.bias.abs().sum() > 0  # else the test could not tell bias from zeros
