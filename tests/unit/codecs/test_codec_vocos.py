"""Vocos on EnCodec codes: official layout, the released file without EnCodec weights, lengths, ISTFT."""

from __future__ import annotations

import pytest
import torch

from iris_pipeline import models
from iris_pipeline.errors import CheckpointError, InputError
from iris_pipeline.models.vocos import ENCODEC_PREFIX, load_vocos_with_encodec
from iris_pipeline.models.vocos.head import ISTFT
from tests.support.manifests import (
    assert_state_dicts_equal,
    load_manifest,
    manifest_shapes,
    model_shapes,
    random_state_dict,
)
from tests.unit.codecs.codec_helpers import write_malicious_checkpoint

NAME = "vocos_encodec_24khz"


@pytest.fixture(scope="module")
def full_model():
    return models.build(NAME, "full")


@pytest.fixture(scope="module")
def tiny_model():
    return models.build(NAME, "tiny", seed=5)


def _released_layout(state):
    return {k: v for k, v in state.items() if not k.startswith(ENCODEC_PREFIX)}


def test_full_state_dict_matches_official_manifest(full_model):
    manifest = load_manifest(NAME)
    assert model_shapes(full_model) == manifest_shapes(manifest)
    assert sum(p.numel() for p in full_model.parameters()) == manifest["total_params"]
    config = manifest["config"]
    assert full_model.config.bandwidths == tuple(config["feature_extractor"]["bandwidths"])
    assert (full_model.config.dim, full_model.config.intermediate_dim, full_model.config.num_layers) == (
        config["backbone"]["dim"], config["backbone"]["intermediate_dim"], config["backbone"]["num_layers"])
    assert (full_model.config.n_fft, full_model.config.hop_length) == (1280, 320)


def test_released_layout_without_encodec_loads_bit_exact(full_model, tmp_path):
    state = random_state_dict(full_model, seed=11)
    released = _released_layout(state)
    assert len(released) == len(state) - 252  # the file leaves out all of EnCodec's entries
    path = tmp_path / "pytorch_model.bin"
    torch.save(released, path)
    loaded = models.load(NAME, path, "full")
    got = loaded.state_dict()
    assert_state_dicts_equal(_released_layout(got), released)
    # the EnCodec part keeps the seeded init, and audio encoding says why it cannot run
    seeded = models.build(NAME, "full", seed=0).state_dict()
    assert all(torch.equal(got[k], seeded[k]) for k in got if k.startswith(ENCODEC_PREFIX))
    with pytest.raises(CheckpointError, match="EnCodec weights were not loaded"):
        loaded(torch.zeros(1, 640), bandwidth_id=2)


def test_full_layout_with_encodec_loads_bit_exact(tiny_model, tmp_path):
    state = random_state_dict(tiny_model, seed=12)
    torch.save(state, tmp_path / "vocos_full_layout.bin")
    loaded = models.load(NAME, tmp_path / "vocos_full_layout.bin", "tiny")
    assert_state_dicts_equal(loaded.state_dict(), state)
    assert loaded.feature_extractor.encodec_weights_loaded


def test_encodec_weights_filled_from_encodec_checkpoint(tiny_model, tmp_path):
    state = random_state_dict(tiny_model, seed=13)
    torch.save(_released_layout(state), tmp_path / "pytorch_model.bin")
    encodec_state = random_state_dict(models.build("encodec_24khz", "tiny"), seed=14)
    torch.save(encodec_state, tmp_path / "encodec_24khz-d7cc33bc.th")
    loaded = load_vocos_with_encodec(tmp_path / "pytorch_model.bin", tmp_path / "encodec_24khz-d7cc33bc.th",
                                     "tiny")
    expected = {**_released_layout(state), **{ENCODEC_PREFIX + k: v for k, v in encodec_state.items()}}
    assert_state_dicts_equal(loaded.state_dict(), expected)
    assert loaded.feature_extractor.encodec_weights_loaded
    assert loaded(torch.randn(1, 1000) * 0.1, bandwidth_id=2).shape == (1, 1280)


def test_other_mismatches_are_refused(tiny_model, tmp_path):
    released = _released_layout(random_state_dict(tiny_model))
    cases = {
        "missing": ({k: v for k, v in released.items() if k != "backbone.convnext.1.gamma"},
                    "1 missing .*convnext.1.gamma"),
        "extra": ({**released, "backbone.extra": torch.zeros(1)}, "1 unexpected .*backbone.extra"),
        "shape": ({**released, "feature_extractor.codebook_weights": torch.zeros(8 * 1024, 32)},
                  "wrong shape .*codebook_weights"),
        # some EnCodec entries but not all: a strict load of the full layout
        "partial_encodec": ({**released, ENCODEC_PREFIX + "encoder.model.0.conv.conv.bias": torch.zeros(4)},
                            "missing"),
    }
    for name, (state, message) in cases.items():
        torch.save(state, tmp_path / f"{name}.bin")
        with pytest.raises(CheckpointError, match=message):
            models.load(NAME, tmp_path / f"{name}.bin", "tiny")


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    path, marker = tmp_path / "evil.bin", tmp_path / "ran"
    write_malicious_checkpoint(path, marker)
    with pytest.raises(CheckpointError, match="refused"):
        models.load(NAME, path, "tiny")
    assert not marker.exists()


@pytest.mark.parametrize("frames", [1, 2, 7, 75, 375])
def test_decode_codes_gives_exactly_frames_times_320(tiny_model, frames):
    codes = torch.randint(0, 1024, (2, 8, frames), generator=torch.Generator().manual_seed(frames))
    audio = tiny_model.decode_codes(codes, bandwidth_id=2)
    assert audio.shape == (2, frames * 320)
    assert audio.dtype == torch.float32
    assert torch.isfinite(audio).all()


def test_full_model_decodes_75_frames(full_model):
    codes = torch.randint(0, 1024, (1, 8, 75))
    assert full_model.decode_codes(codes).shape == (1, 24000)


def test_codes_to_features_uses_offset_codebook_rows(tiny_model):
    features = tiny_model.feature_extractor
    codes = torch.randint(0, 1024, (3, 8, 11))
    weights = features.codebook_weights
    expected = sum(weights[k * 1024 + codes[:, k]] for k in range(8)).transpose(1, 2)
    torch.testing.assert_close(features.codes_to_features(codes), expected, rtol=0, atol=1e-6)
    # a built model's copy equals its EnCodec's codebooks, so both paths agree
    from_encodec = features.encodec.quantizer.decode(codes.transpose(0, 1))
    torch.testing.assert_close(features.codes_to_features(codes), from_encodec, rtol=0, atol=1e-6)


def test_bandwidth_id_selects_adaptive_norm_row(tiny_model):
    codes = torch.randint(0, 1024, (1, 8, 6))
    with torch.no_grad():
        tiny_model.backbone.norm.shift.weight[3].add_(1.0)
    try:
        assert torch.equal(tiny_model.decode_codes(codes, 0), tiny_model.decode_codes(codes, 2))
        assert not torch.equal(tiny_model.decode_codes(codes, 3), tiny_model.decode_codes(codes, 2))
    finally:
        with torch.no_grad():
            tiny_model.backbone.norm.shift.weight[3].sub_(1.0)


def test_bad_inputs_are_clear_errors(tiny_model):
    codes = torch.zeros(1, 8, 4, dtype=torch.long)
    with pytest.raises(InputError, match="bandwidth_id"):
        tiny_model.decode_codes(codes, bandwidth_id=4)
    with pytest.raises(InputError, match=r"\[0, 1024\)"):
        tiny_model.decode_codes(codes - 1)
    with pytest.raises(InputError, match="K<=16"):
        tiny_model.decode_codes(torch.zeros(1, 17, 4, dtype=torch.long))
    with pytest.raises(InputError, match="integer"):
        tiny_model.decode_codes(codes.float())


def test_copy_synthesis_length(tiny_model):
    assert tiny_model(torch.randn(2, 1000) * 0.1, bandwidth_id=1).shape == (2, 1280)


def _same_padded_stft(signal, n_fft, hop, window):
    pad = (n_fft - hop) // 2
    padded = torch.nn.functional.pad(signal[:, None], (pad, pad), mode="reflect")[:, 0]
    frames = padded.unfold(-1, n_fft, hop) * window  # [B, T, n_fft]
    return torch.fft.rfft(frames, dim=-1).transpose(1, 2)


def test_istft_inverts_a_same_padded_stft():
    n_fft, hop = 1280, 320
    istft = ISTFT(n_fft, hop)
    signal = torch.randn(2, 320 * 20, dtype=torch.float64).float()
    spectrum = _same_padded_stft(signal, n_fft, hop, istft.window)
    assert spectrum.shape[-1] == 20
    torch.testing.assert_close(istft(spectrum), signal, rtol=0, atol=1e-4)


def test_istft_equals_a_plain_overlap_add_loop():
    n_fft, hop, frames = 64, 16, 9
    istft = ISTFT(n_fft, hop)
    spectrum = torch.randn(1, n_fft // 2 + 1, frames, dtype=torch.complex64)
    chunks = torch.fft.irfft(spectrum, n_fft, dim=1)[0] * istft.window[:, None]
    total = torch.zeros((frames - 1) * hop + n_fft)
    envelope = torch.zeros_like(total)
    for t in range(frames):
        total[t * hop: t * hop + n_fft] += chunks[:, t]
        envelope[t * hop: t * hop + n_fft] += istft.window.square()
    pad = (n_fft - hop) // 2
    expected = (total / envelope)[pad:-pad]
    torch.testing.assert_close(istft(spectrum)[0], expected, rtol=1e-5, atol=1e-6)


def test_half_precision_model_returns_fp32_audio():
    model = models.build(NAME, "tiny").to(torch.bfloat16)
    audio = model.decode_codes(torch.randint(0, 1024, (1, 8, 5)))
    assert audio.shape == (1, 1600)
    assert audio.dtype == torch.float32
    assert torch.isfinite(audio).all()
