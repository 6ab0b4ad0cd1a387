"""Parity with the official implementations, where they are installed (`pip install encodec vocos`).

Same random weights in both; fp32 on the CPU; outputs must be bit-identical. Skipped when the
official packages are absent (they are not dependencies of the project).
"""

from __future__ import annotations

import pytest
import torch

from iris_pipeline import models
from tests.support.manifests import random_state_dict

official_encodec = pytest.importorskip("encodec")
pytest.importorskip("vocos")


def _bounded(state):
    """Random weights with moderate gains so the LSTMs are not chaotic (differences would not grow anyway)."""
    out = dict(state)
    for name, value in state.items():
        if name.endswith("weight_g"):
            out[name] = value.abs() * 0.5
        elif name.startswith("backbone") and "norm" not in name and name.endswith(("weight", "gamma")):
            out[name] = value * 0.05
    if "head.istft.window" in out:
        out["head.istft.window"] = torch.hann_window(out["head.istft.window"].numel())
    return out


@pytest.fixture(scope="module")
def encodec_pair():
    official = official_encodec.EncodecModel.encodec_model_24khz(pretrained=False)
    ours = models.build("encodec_24khz", "full")
    state = _bounded(random_state_dict(ours, seed=3))
    official.load_state_dict(state)
    ours.load_state_dict(state)
    return official.eval(), ours


@pytest.mark.parametrize(("length", "kbps"), [(1, 6.0), (320, 1.5), (12345, 24.0), (24000, 6.0)])
def test_encodec_codes_and_audio_are_bit_identical(encodec_pair, length, kbps):
    official, ours = encodec_pair
    official.set_target_bandwidth(kbps)
    ours.set_target_bandwidth(kbps)
    try:
        wav = torch.randn(2, 1, length, generator=torch.Generator().manual_seed(length)) * 0.2
        with torch.no_grad():
            (expected_codes, _), = official.encode(wav)
            expected_audio = official.decode([(expected_codes, None)])
        codes = ours.encode(wav)
        assert torch.equal(codes, expected_codes)
        assert torch.equal(ours.decode(codes), expected_audio)
    finally:
        ours.set_target_bandwidth(6.0)


def test_vocos_is_bit_identical(monkeypatch):
    from vocos.feature_extractors import EncodecFeatures
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone
    from vocos.pretrained import Vocos

    build_pretrained = official_encodec.EncodecModel.encodec_model_24khz
    # EncodecFeatures asks for the pretrained EnCodec (a download); the weights come from our state instead
    monkeypatch.setattr(official_encodec.EncodecModel, "encodec_model_24khz",
                        staticmethod(lambda pretrained=True, repository=None: build_pretrained(pretrained=False)))
    official = Vocos(EncodecFeatures("encodec_24khz", [1.5, 3.0, 6.0, 12.0], False),
                     VocosBackbone(128, 384, 1152, 8, adanorm_num_embeddings=4),
                     ISTFTHead(384, 1280, 320, "same")).eval()
    ours = models.build("vocos_encodec_24khz", "full")
    state = _bounded(random_state_dict(ours, seed=4))
    official.load_state_dict(state)
    ours.load_state_dict(state)
    generator = torch.Generator().manual_seed(0)
    for frames in (1, 3, 375):
        codes = torch.randint(0, 1024, (2, 8, frames), generator=generator)
        with torch.inference_mode():
            # the official VALL-E X call: codes [K, B, F], bandwidth id 2 as a tensor
            expected = official.decode(official.codes_to_features(codes.transpose(0, 1)),
                                       bandwidth_id=torch.tensor([2]))
        assert torch.equal(ours.decode_codes(codes, bandwidth_id=2), expected)
    audio = torch.randn(1, 7000, generator=generator) * 0.2
    with torch.inference_mode():
        expected = official(audio, bandwidth_id=torch.tensor([1]))
    assert torch.equal(ours(audio, bandwidth_id=1), expected)
