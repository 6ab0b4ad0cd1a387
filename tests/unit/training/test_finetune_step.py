from __future__ import annotations

import copy
import re

import pytest
import torch

from iris_pipeline import models
from iris_pipeline.errors import CheckpointError, ConfigError
from iris_pipeline.training.checkpoint import load_trainer_state, save_checkpoint, trainer_state_path
from iris_pipeline.training.dataset import Utterance, collate
from iris_pipeline.training.losses import draw_nar, evaluation_loss, training_loss
from iris_pipeline.training.step import Trainer, TrainSettings
from tests.support.manifests import load_manifest, manifest_shapes


def synthetic_set(n=6, seed=0):
    """Random phoneme ids and codes: a set the model can only learn by fitting it."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        s, t = 8 + 2 * i, 30 + 5 * i
        out.append(Utterance(f"s{i}", torch.randint(5, 70, (s,), generator=g), torch.zeros(s, dtype=torch.long),
                             torch.randint(0, 1024, (t, 8), generator=g)))
    return out


def fresh(settings: TrainSettings) -> Trainer:
    return Trainer(models.build("vallex", "tiny", seed=0), settings)


def test_loss_decreases_over_a_few_dozen_steps():
    batch = collate(synthetic_set())
    trainer = fresh(TrainSettings(lr=3e-3, checkpointing=True, seed=1))
    ar_before, nar_before = evaluation_loss(trainer.model, batch)
    losses = [trainer.step([batch]).loss for _ in range(30)]
    ar_after, nar_after = evaluation_loss(trainer.model, batch)
    print(f"train loss per step: {[round(x, 3) for x in losses]}")
    print(f"eval AR {ar_before:.3f} -> {ar_after:.3f}, eval NAR (mean of 7 stages) {nar_before:.3f} -> {nar_after:.3f}")
    assert ar_after < 0.8 * ar_before
    assert nar_after < 0.8 * nar_before
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


def test_gradient_accumulation_averages_the_micro_batch_gradients():
    data = synthetic_set()
    micro = [collate(data[:3]), collate(data[3:])]
    settings = TrainSettings(lr=1e-3, accumulate=2, clip_grad_norm=0.0, checkpointing=False, seed=4)
    trainer = fresh(settings)
    reference = copy.deepcopy(trainer.model)
    result = trainer.step(micro)
    assert result.step == 1
    assert len(result.nar_stages) == 2

    g = torch.Generator().manual_seed(4)
    total = sum(training_loss(reference, b, draw_nar(b, g)).total for b in micro) / 2
    total.backward()
    expected = dict(reference.named_parameters())
    worst = max(float((p.grad - expected[n].grad).abs().max())
                for n, p in trainer.model.named_parameters() if p.grad is not None)
    assert worst < 1e-6
    torch.testing.assert_close(torch.tensor(result.loss), total.detach(), rtol=1e-6, atol=1e-6)


def test_bf16_autocast_steps_on_the_cpu_and_fp16_needs_cuda():
    batch = collate(synthetic_set(3))
    trainer = fresh(TrainSettings(lr=1e-3, precision="bf16", checkpointing=True))
    results = [trainer.step([batch]) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(r.loss)) and not r.skipped for r in results)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # fp32 master weights
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        fresh(TrainSettings(precision="fp16"))
    with pytest.raises(ConfigError, match="precision must be"):
        TrainSettings(precision="int8")


def test_checkpoint_is_the_official_layout_and_loads_strictly(tmp_path):
    trainer = fresh(TrainSettings(lr=1e-3, checkpointing=False))
    trainer.step([collate(synthetic_set(2))])
    path = save_checkpoint(tmp_path / "ft.pt", trainer.model, trainer)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model", "batch_idx_train"}
    assert raw["batch_idx_train"] == 1
    state = raw["model"]
    assert list(state) == list(trainer.model.state_dict())
    # same names as the official file, up to the number of layers
    official = {re.sub(r"layers\.\d+\.", "layers.N.", k) for k in manifest_shapes(load_manifest("vallex"))}
    assert {re.sub(r"layers\.\d+\.", "layers.N.", k) for k in state} == official
    for j in range(6):  # tied entries stored once, as in the released file
        a, b = state[f"nar_predict_layers.{j}.weight"], state[f"nar_audio_embeddings.{j + 2}.word_embeddings.weight"]
        assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    loaded = models.load("vallex", path, "tiny")
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.nar_predict_layers[0].weight is loaded.nar_audio_embeddings[2].word_embeddings.weight
    del raw["model"]["ar_predict_layer.weight"]
    torch.save(raw, tmp_path / "incomplete.pt")
    with pytest.raises(CheckpointError, match="ar_predict_layer.weight"):
        models.load("vallex", tmp_path / "incomplete.pt", "tiny")
    assert trainer_state_path(path).is_file()
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_a_reloaded_checkpoint_continues_to_the_same_loss(tmp_path):
    data = synthetic_set()
    stream = [collate(data[i % 3 * 2:i % 3 * 2 + 2]) for i in range(6)]
    settings = TrainSettings(lr=2e-3, checkpointing=True, seed=7)
    uninterrupted = fresh(settings)
    for b in stream[:3]:
        uninterrupted.step([b])
    path = save_checkpoint(tmp_path / "k3.pt", uninterrupted.model, uninterrupted)
    expected = [uninterrupted.step([b]) for b in stream[3:]]

    resumed = Trainer(models.load("vallex", path, "tiny"), settings)
    load_trainer_state(path, resumed)
    assert resumed.step_count == 3
    got = [resumed.step([b]) for b in stream[3:]]
    print(f"losses after reload {[r.loss for r in got]} vs uninterrupted {[r.loss for r in expected]}")
    for a, b in zip(got, expected, strict=True):
        assert a.nar_stages == b.nar_stages
        assert a.step == b.step
        assert abs(a.loss - b.loss) <= 1e-5 * max(1.0, abs(b.loss))
    for (name, p), q in zip(resumed.model.named_parameters(), uninterrupted.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)

    # the comparison can fail: with fresh AdamW moments (same weights, same draws) the second step differs
    cold = Trainer(models.load("vallex", path, "tiny"), settings)
    cold.generator.set_state(torch.load(trainer_state_path(path), weights_only=True)["generator"])
    cold_losses = [cold.step([b]).loss for b in stream[3:]]
    assert abs(cold_losses[0] - expected[0].loss) <= 1e-5 * max(1.0, abs(expected[0].loss))
    assert abs(cold_losses[1] - expected[1].loss) > 1e-4


def test_trainer_state_of_another_step_is_refused(tmp_path):
    trainer = fresh(TrainSettings(lr=1e-3, checkpointing=False))
    batch = collate(synthetic_set(2))
    trainer.step([batch])
    first = save_checkpoint(tmp_path / "a.pt", trainer.model, trainer)
    stale = trainer_state_path(first).read_bytes()
    trainer.step([batch])
    save_checkpoint(first, trainer.model, trainer)
    trainer_state_path(first).write_bytes(stale)
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_trainer_state(first, fresh(TrainSettings()))
    with pytest.raises(CheckpointError, match="no trainer state"):
        load_trainer_state(tmp_path / "other.pt", fresh(TrainSettings()))
