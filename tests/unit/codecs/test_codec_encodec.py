"""EnCodec 24 kHz: official layout, strict loading, lengths, bandwidths, causality, RVQ."""

from __future__ import annotations

import math

import pytest
import torch

from iris_pipeline import models
from iris_pipeline.errors import CheckpointError, ConfigError, InputError
from iris_pipeline.models.encodec.conv import WeightNormConv1d
from tests.support.manifests import (
    assert_state_dicts_equal,
    load_manifest,
    manifest_shapes,
    model_shapes,
    random_state_dict,
)
from tests.unit.codecs.codec_helpers import write_malicious_checkpoint

NAME = "encodec_24khz"


@pytest.fixture(scope="module")
def full_model():
    return models.build(NAME, "full")


@pytest.fixture(scope="module")
def tiny_model():
    return models.build(NAME, "tiny", seed=3)


def test_full_state_dict_matches_official_manifest(full_model):
    manifest = load_manifest(NAME)
    assert model_shapes(full_model) == manifest_shapes(manifest)
    assert set(dict(full_model.named_buffers())) == set(manifest["buffers"])
    assert sum(p.numel() for p in full_model.parameters()) == manifest["total_params"] == 14_851_810
    assert sum(b.numel() for b in full_model.buffers()) == manifest["buffer_elements"]


def test_weight_norm_names_and_transposed_shapes(full_model):
    shapes = model_shapes(full_model)
    # transposed convs keep g over dim 0 of their weight, which is the INPUT channel count
    assert shapes["decoder.model.3.convtr.convtr.weight_g"] == (512, 1, 1)
    assert shapes["decoder.model.3.convtr.convtr.weight_v"] == (512, 256, 16)
    assert shapes["decoder.model.12.convtr.convtr.weight_g"] == (64, 1, 1)
    assert shapes["encoder.model.12.conv.conv.weight_g"] == (512, 1, 1)
    assert not any("parametrizations" in k or k.endswith(".weight") and ".conv." in k for k in shapes)


def test_weight_norm_conv_equals_torch_weight_norm():
    ours = WeightNormConv1d(6, 5, 3, stride=2)
    with torch.no_grad():
        ours.weight_g.mul_(torch.rand_like(ours.weight_g) + 0.5)  # g no longer equals ||v||
    reference = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(6, 5, 3, stride=2))
    reference.load_state_dict(ours.state_dict())  # torch's hook reads the old weight_g/weight_v names
    x = torch.randn(2, 6, 40)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-6)


def test_official_checkpoint_round_trip_is_bit_exact(full_model, tmp_path):
    state = random_state_dict(full_model, seed=7)
    path = tmp_path / "encodec_24khz-d7cc33bc.th"
    torch.save(state, path)
    loaded = models.load(NAME, path, "full")
    assert_state_dicts_equal(loaded.state_dict(), state)
    assert not loaded.training


def test_mismatching_checkpoints_are_refused(tiny_model, tmp_path):
    state = random_state_dict(tiny_model)
    missing = dict(state)
    del missing["quantizer.vq.layers.3._codebook.embed_avg"]
    torch.save(missing, tmp_path / "missing.th")
    with pytest.raises(CheckpointError, match="1 missing .*layers.3._codebook.embed_avg"):
        models.load(NAME, tmp_path / "missing.th", "tiny")
    renamed = {k.replace("weight_g", "parametrizations.weight.original0"): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.th")
    with pytest.raises(CheckpointError, match="unexpected"):
        models.load(NAME, tmp_path / "renamed.th", "tiny")


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    path, marker = tmp_path / "evil.th", tmp_path / "ran"
    write_malicious_checkpoint(path, marker)
    with pytest.raises(CheckpointError, match="refused"):
        models.load(NAME, path, "tiny")
    assert not marker.exists()


@pytest.mark.parametrize("length", [1, 7, 319, 320, 321, 1000, 4801, 24000])
def test_encode_decode_preserves_frame_length(tiny_model, length):
    wav = torch.randn(2, 1, length, generator=torch.Generator().manual_seed(length)) * 0.1
    codes = tiny_model.encode(wav)
    frames = math.ceil(length / 320)
    assert codes.shape == (2, 8, frames)
    assert codes.dtype == torch.int64
    assert 0 <= int(codes.min())
    assert int(codes.max()) < 1024
    audio = tiny_model.decode(codes)
    assert audio.shape == (2, 1, frames * 320)
    assert torch.isfinite(audio).all()


def test_full_model_lengths(full_model):
    wav = torch.randn(1, 1, 24000) * 0.1
    codes = full_model.encode(wav)
    assert codes.shape == (1, 8, 75)
    assert full_model.decode(codes[:, :, :10]).shape == (1, 1, 3200)


def test_bandwidth_sets_codebook_count(tiny_model, full_model):
    wav = torch.randn(1, 1, 3200) * 0.1
    try:
        for kbps, n_q in [(1.5, 2), (3.0, 4), (6.0, 8), (12.0, 16)]:
            tiny_model.set_target_bandwidth(kbps)
            assert tiny_model.encode(wav).shape == (1, n_q, 10)
        with pytest.raises(ConfigError, match="24"):
            tiny_model.set_target_bandwidth(24.0)  # tiny holds 16 codebooks only
    finally:
        tiny_model.set_target_bandwidth(6.0)
    assert full_model.config.n_q == 32
    assert full_model.config.codebooks_for_bandwidth(24.0) == 32
    assert full_model.num_codebooks == 8


def test_encoder_is_causal(tiny_model):
    wav = torch.randn(1, 1, 6400) * 0.1
    changed = wav.clone()
    changed[..., 3200:] = torch.randn(1, 1, 3200)
    a, b = tiny_model.encoder(wav), tiny_model.encoder(changed)
    assert a.shape == (1, 32, 20)
    torch.testing.assert_close(a[..., :10], b[..., :10], rtol=0, atol=0)
    assert not torch.equal(a[..., 10:], b[..., 10:])


def _greedy_rvq_reference(latent, codebooks):
    residual = latent.transpose(1, 2).reshape(-1, latent.shape[1])
    codes = []
    for embed in codebooks:
        index = torch.cdist(residual.double(), embed.double()).argmin(dim=1)
        residual = residual - embed[index]
        codes.append(index)
    return torch.stack(codes).view(len(codebooks), latent.shape[0], latent.shape[2])


def test_rvq_encode_matches_brute_force_and_decode_sums_codewords(tiny_model):
    quantizer = tiny_model.quantizer
    latent = torch.randn(2, 32, 30) * 0.3
    codes = quantizer.encode(latent, 8)
    books = [layer.codebook for layer in quantizer.vq.layers[:8]]
    assert torch.equal(codes, _greedy_rvq_reference(latent, books))
    expected = sum(book[c] for book, c in zip(books, codes, strict=True)).transpose(1, 2)
    torch.testing.assert_close(quantizer.decode(codes), expected, rtol=0, atol=1e-6)


def test_rvq_is_identity_on_codebook_vectors(tiny_model):
    quantizer = tiny_model.quantizer
    index = torch.randperm(1024)[:50].view(1, 1, 50)
    vectors = quantizer.decode(index)  # [1, 32, 50]: one codeword of codebook 0 per frame
    codes = quantizer.encode(vectors, 1)
    assert torch.equal(codes, index[0:1].transpose(0, 1))
    assert torch.equal(quantizer.decode(codes), vectors)


def test_bad_inputs_are_clear_errors(tiny_model):
    with pytest.raises(InputError, match=r"\[B, 1, N>0\]"):
        tiny_model.encode(torch.zeros(1, 2, 100))
    with pytest.raises(InputError, match=r"\[B, 1, N>0\]"):
        tiny_model.encode(torch.zeros(1, 1, 0))
    with pytest.raises(InputError, match="integer"):
        tiny_model.decode(torch.zeros(1, 8, 5))
    with pytest.raises(InputError, match=r"\[0, 1024\)"):
        tiny_model.decode(torch.full((1, 8, 5), 1024))
    with pytest.raises(InputError, match="K<=16"):
        tiny_model.decode(torch.zeros(1, 17, 5, dtype=torch.long))


def test_half_precision_model_takes_fp32_audio():
    model = models.build(NAME, "tiny").to(torch.bfloat16)
    codes = model.encode(torch.randn(1, 1, 1000) * 0.1)
    assert codes.shape == (1, 8, 4)
    audio = model.decode(codes)
    assert audio.shape == (1, 1, 1280)
    assert audio.dtype == torch.bfloat16
