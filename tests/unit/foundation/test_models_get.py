"""`models.get`: the one load-or-build of a model."""

from __future__ import annotations

import torch

from iris_pipeline import models
from tests.support.manifests import assert_state_dicts_equal


def test_get_without_a_checkpoint_builds_the_seeded_model():
    built = models.get("fastpitch", size="tiny", seed=3)
    assert_state_dicts_equal(built.state_dict(), models.build("fastpitch", "tiny", seed=3).state_dict())
    other = models.get("fastpitch", size="tiny", seed=4).state_dict()
    assert any(not torch.equal(v, other[k]) for k, v in built.state_dict().items() if v.is_floating_point())
    assert not built.training


def test_get_with_a_checkpoint_loads_its_weights_whatever_the_seed(tmp_path):
    state = models.build("fastpitch", "tiny", seed=7).state_dict()
    path = tmp_path / "fastpitch.pt"
    torch.save(state, path)
    loaded = models.get("fastpitch", path, size="tiny", seed=0)
    assert_state_dicts_equal(loaded.state_dict(), state)
