from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from iris_pipeline import models
from iris_pipeline.models.vallex.config import EOS_ID
from iris_pipeline.training.dataset import Utterance, collate
from iris_pipeline.training.losses import NarDraw, ar_loss, draw_nar, nar_loss, training_loss


def random_utterances(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (s, t) in enumerate(lengths):
        out.append(Utterance(f"u{i}", torch.randint(5, 70, (s,), generator=g),
                             torch.randint(0, 3, (s,), generator=g), torch.randint(0, 1024, (t, 8), generator=g)))
    return out


@pytest.fixture(scope="module")
def model():
    return models.build("vallex", "tiny", seed=0)


@pytest.fixture(scope="module")
def uneven():
    # different text and audio lengths, so padding is present in both blocks
    return random_utterances([(9, 30), (14, 21), (6, 37)])


def reference_ar_sum(model, u: Utterance) -> torch.Tensor:
    """Summed AR cross-entropy of one utterance with the model's own uncached reference forward."""
    logits = model.ar_logits_full(u.text, u.languages, model.ar_stream(u.codes[:, 0]))
    targets = torch.cat([u.codes[:, 0], torch.tensor([EOS_ID])])
    return F.cross_entropy(logits, targets, reduction="sum")


def reference_nar_sum(model, u: Utterance, draw: NarDraw) -> torch.Tensor:
    """Summed NAR cross-entropy of one utterance: prefix frames complete, the rest codebooks < stage."""
    emb, p, k = model.nar_audio_embeddings, draw.prefix_len, draw.stage
    audio = emb[0](u.codes[:, 0])
    for j in range(1, 8):
        e = emb[j](u.codes[:, j])
        audio = audio + (e if j < k else torch.cat([e[:p], torch.zeros_like(e[p:])]))
    logits = model.nar_logits(u.text, u.languages, audio, k)[p:]
    return F.cross_entropy(logits, u.codes[p:, k], reduction="sum")


def test_batched_ar_loss_equals_the_per_utterance_reference(model, uneven):
    batch = collate(uneven)
    loss, count = ar_loss(model, batch)
    assert count == sum(u.frames + 1 for u in uneven)  # every frame plus one EOS each, no padding
    expected = sum(reference_ar_sum(model, u) for u in uneven) / count
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stage,prefix", [(1, 0), (3, 5), (7, 10)])
def test_batched_nar_loss_equals_the_per_utterance_reference(model, uneven, stage, prefix):
    batch = collate(uneven)
    draw = NarDraw(stage, prefix)
    loss, count = nar_loss(model, batch, draw)
    assert count == sum(u.frames - prefix for u in uneven)
    expected = sum(reference_nar_sum(model, u, draw) for u in uneven) / count
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_nar_draws_are_seeded_and_in_the_official_ranges(uneven):
    batch = collate(uneven)  # shortest utterance: 21 frames -> prefix in [0, 10)
    draws = [draw_nar(batch, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert draws[0] == draws[1]
    g = torch.Generator().manual_seed(0)
    many = [draw_nar(batch, g) for _ in range(400)]
    assert {d.stage for d in many} == set(range(1, 8))
    assert {d.prefix_len for d in many} == set(range(0, 10))
    long = collate(random_utterances([(5, 2000)]))
    assert max(draw_nar(long, g).prefix_len for _ in range(50)) <= 225  # 3 s cap


def gradients(model, batch, draw, checkpointing):
    model.zero_grad(set_to_none=True)
    training_loss(model, batch, draw, checkpointing).total.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_checkpointed_and_plain_steps_give_the_same_gradients(model, uneven):
    batch = collate(uneven)
    draw = NarDraw(stage=4, prefix_len=6)
    plain = gradients(model, batch, draw, checkpointing=False)
    checkpointed = gradients(model, batch, draw, checkpointing=True)
    assert plain.keys() == checkpointed.keys()
    assert any(n.startswith("ar_decoder.layers.") for n in plain)
    assert any(n.startswith("nar_decoder.") for n in plain)
    worst = max(float((plain[n] - checkpointed[n]).abs().max()) for n in plain)
    print(f"max |grad difference| checkpointed vs plain (fp32, {len(plain)} tensors): {worst:.3e}")
    assert worst <= 1e-6
    model.zero_grad(set_to_none=True)


def test_padding_does_not_change_an_utterances_loss(model, uneven):
    draw = NarDraw(stage=2, prefix_len=4)
    alone = training_loss(model, collate(uneven[:1]), draw)
    padded = collate(uneven[:1] + random_utterances([(20, 60)], seed=9))
    # the second utterance adds targets; the first one's share must be its own loss
    ar_first = reference_ar_sum(model, uneven[0]) / (uneven[0].frames + 1)
    torch.testing.assert_close(alone.ar, ar_first, rtol=1e-5, atol=1e-5)
    both = training_loss(model, padded, draw)
    ar_second = reference_ar_sum(model, random_utterances([(20, 60)], seed=9)[0])
    expected = (ar_first * (uneven[0].frames + 1) + ar_second) / (uneven[0].frames + 1 + 61)
    torch.testing.assert_close(both.ar, expected, rtol=1e-5, atol=1e-5)
