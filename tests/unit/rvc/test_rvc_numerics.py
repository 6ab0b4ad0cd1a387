"""Formulas of the official code, checked value by value: coarse pitch, RMVPE decoding and mel front end,
relative-position attention, weight norm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iris_pipeline.models.hubert import conv_output_frames
from iris_pipeline.models.rmvpe.decode import decode_f0
from iris_pipeline.models.rmvpe.frontend import log_mel, mel_basis
from iris_pipeline.models.rvc.pitch import coarse_pitch
from iris_pipeline.models.rvc.text_encoder import RelativeMultiHeadAttention
from iris_pipeline.models.rvc.weight_norm import WNConv1d, WNConvTranspose1d

# --- f0 -> coarse ids --------------------------------------------------------------------------------
# By hand: mel(f) = 1127 ln(1 + f/700); mel(50) = 77.754966, mel(1100) = 1064.408233;
# id = rint((mel(f) - 77.754966) * 254 / 986.653267 + 1), clipped to [1, 255]; 0 Hz stays 1.
#   100 Hz: mel 150.4899 -> 19.7248 -> 20        220 Hz: mel 308.0479 -> 60.2863 -> 60
#   440 Hz: mel 549.6387 -> 122.4802 -> 122     1000 Hz: mel 1000.0211 -> 238.4285 -> 238
#   50 Hz -> exactly 1; 1100 Hz -> exactly 255; 30 Hz: mel 47.2 < 77.75 -> below 1 -> 1; 3000 Hz -> 255
KNOWN_COARSE = {0.0: 1, 30.0: 1, 50.0: 1, 100.0: 20, 220.0: 60, 440.0: 122, 1000.0: 238, 1100.0: 255,
                3000.0: 255}


def test_coarse_pitch_known_values():
    f0 = torch.tensor(list(KNOWN_COARSE))
    assert coarse_pitch(f0).tolist() == list(KNOWN_COARSE.values())


def test_coarse_pitch_matches_official_numpy_formula():
    f0 = np.concatenate([np.zeros(5), np.random.default_rng(0).uniform(20, 1500, 2000)])
    mel = 1127 * np.log(1 + f0 / 700)
    mel_min, mel_max = 1127 * np.log(1 + 50 / 700), 1127 * np.log(1 + 1100 / 700)
    mel[mel > 0] = (mel[mel > 0] - mel_min) * 254 / (mel_max - mel_min) + 1
    mel[mel <= 1] = 1
    mel[mel > 255] = 255
    assert coarse_pitch(torch.from_numpy(f0)).numpy().tolist() == np.rint(mel).astype(np.int64).tolist()


# --- RMVPE decoding --------------------------------------------------------------------------------

def official_decode(salience: np.ndarray, threshold: float = 0.03) -> np.ndarray:
    """RVC's `to_local_average_cents` + `decode`, written out frame by frame."""
    cents_mapping = np.pad(20 * np.arange(360) + 1997.3794084376191, (4, 4))
    padded = np.pad(salience, ((0, 0), (4, 4)))
    out = np.zeros(salience.shape[0])
    for i, row in enumerate(salience):
        c = int(np.argmax(row)) + 4
        s, m = padded[i, c - 4: c + 5], cents_mapping[c - 4: c + 5]
        if np.max(padded[i]) <= threshold:
            cents = 0.0
        else:
            cents = np.sum(s * m) / np.sum(s)
        f0 = 10 * 2 ** (cents / 1200)
        out[i] = 0.0 if f0 == 10 else f0
    return out


def synthetic_salience() -> np.ndarray:
    rng = np.random.default_rng(1)
    bins = np.arange(360)
    rows = []
    for center in [0, 1, 3, 100, 180.4, 356, 359]:  # peaks at and near both ends
        rows.append(0.9 * np.exp(-0.5 * ((bins - center) / 1.5) ** 2))
    rows.append(rng.uniform(0, 0.8, 360))  # noisy but voiced
    rows.append(rng.uniform(0, 0.029, 360))  # unvoiced: peak below the threshold
    flat = np.full(360, 0.01)
    flat[200] = 0.03  # exactly the threshold -> unvoiced (<=)
    rows.append(flat)
    rows.append(np.zeros(360))  # silence
    return np.stack(rows).astype(np.float32)


def test_rmvpe_decoding_equals_official_formula():
    salience = synthetic_salience()
    ours = decode_f0(torch.from_numpy(salience)).numpy()
    expected = official_decode(salience)
    # official sums the 9 weights in float32 (numpy's pairwise order), we in float64: ~1e-7 apart
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=0)
    assert (ours[-3:] == 0).all() and (ours[:-3] > 30).all()
    # a lone peak at bin b decodes to exactly the bin's frequency
    one_hot = np.zeros((1, 360), dtype=np.float32)
    one_hot[0, 100] = 1.0
    assert decode_f0(torch.from_numpy(one_hot)).item() == pytest.approx(10 * 2 ** ((2000 + 1997.3794084376191) / 1200))


def test_rmvpe_decoding_keeps_batch_shape():
    salience = torch.from_numpy(synthetic_salience())
    batch = torch.stack([salience, salience.flip(0)])
    assert decode_f0(batch).shape == (2, salience.shape[0])


def test_rmvpe_mel_front_end():
    librosa = pytest.importorskip("librosa")
    expected = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=128, fmin=30, fmax=8000, htk=True)
    np.testing.assert_allclose(mel_basis().numpy(), expected, rtol=1e-5, atol=1e-8)
    basis = mel_basis().double()
    assert basis.sum().item() == pytest.approx(8.1892475, rel=1e-6)
    assert int((basis > 0).sum()) == 1010
    t = torch.arange(16000) / 16000
    mel = log_mel(torch.sin(2 * math.pi * 220 * t)[None])
    assert mel.shape == (1, 128, 16000 // 160 + 1)
    assert mel.min().item() >= math.log(1e-5) - 1e-6


def test_hubert_frame_count():
    assert conv_output_frames(16000) == 49
    assert conv_output_frames(176000) == 549
    assert conv_output_frames(399) == 0 and conv_output_frames(400) == 1


# --- relative-position attention ----------------------------------------------------------------------

def naive_relative_attention(attn: RelativeMultiHeadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scores q_i.k_j + q_i.Ek[j-i]; output sum_j p_ij (v_j + Ev[j-i]); offsets beyond +-W contribute 0."""
    b, c, t = x.shape
    h, d, w = attn.n_heads, attn.head_channels, attn.window_size

    def heads(y):
        return y.view(b, h, d, t).transpose(2, 3)

    q = heads(attn.conv_q(x)) / math.sqrt(d)
    k, v = heads(attn.conv_k(x)), heads(attn.conv_v(x))
    rel_k, rel_v = torch.zeros(t, t, d), torch.zeros(t, t, d)
    for i in range(t):
        for j in range(t):
            if abs(j - i) <= w:
                rel_k[i, j] = attn.emb_rel_k[0, j - i + w]
                rel_v[i, j] = attn.emb_rel_v[0, j - i + w]
    scores = q @ k.transpose(-2, -1) + torch.einsum("bhid,ijd->bhij", q, rel_k)
    scores = scores.masked_fill((mask.unsqueeze(2) * mask.unsqueeze(-1)) == 0, -1e4)
    p = torch.softmax(scores, dim=-1)
    out = p @ v + torch.einsum("bhij,ijd->bhid", p, rel_v)
    return attn.conv_o(out.transpose(2, 3).reshape(b, c, t))


@pytest.mark.parametrize("length", [1, 4, 11, 12, 30])
def test_relative_attention_matches_naive_formula(length):
    torch.manual_seed(length)
    attn = RelativeMultiHeadAttention(8, 2, window_size=10)
    x = torch.randn(2, 8, length)
    mask = torch.ones(2, 1, length)
    mask[1, :, max(1, length - 3):] = 0
    with torch.no_grad():
        ours = attn(x, mask.unsqueeze(2) * mask.unsqueeze(-1))
        expected = naive_relative_attention(attn, x, mask)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


# --- weight norm ----------------------------------------------------------------------------------------

def test_weight_norm_layers_match_torch_weight_norm():
    torch.manual_seed(0)
    conv = WNConv1d(4, 6, 3, padding=1)
    transposed = WNConvTranspose1d(6, 3, 4, 2, padding=1)
    positional = WNConv1d(8, 8, 4, padding=2, groups=2, weight_norm_dim=2)
    for layer, dim, g_shape in ((conv, 0, (6, 1, 1)), (transposed, 0, (6, 1, 1)), (positional, 2, (1, 1, 4))):
        assert layer.weight_g.shape == g_shape
        assert list(layer.state_dict()) == ["bias", "weight_g", "weight_v"]
        with torch.no_grad():
            layer.weight_g.mul_(torch.rand_like(layer.weight_g) + 0.5)
        expected = torch._weight_norm(layer.weight_v, layer.weight_g, dim)
        torch.testing.assert_close(layer.normalized_weight(), expected)
    x = torch.randn(1, 4, 9)
    before = conv(x)
    conv.fold_weight_norm()
    torch.testing.assert_close(conv(x), before)


def test_unvoiced_f0_interpolation_of_the_2026_pipeline():
    from iris_pipeline.models.rvc.inference import fill_unvoiced

    f0 = torch.tensor([[0.0, 0.0, 100.0, 0.0, 0.0, 200.0, 0.0], [0.0] * 7], dtype=torch.float64)
    filled = fill_unvoiced(f0)
    assert filled[0].tolist() == pytest.approx([100, 100, 100, 100 + 100 / 3, 100 + 200 / 3, 200, 200])
    assert filled[1].tolist() == [0.0] * 7  # nothing voiced: stays unvoiced
    assert f0[0, 0] == 0  # input untouched


def test_protect_rule_matches_official():
    from iris_pipeline.models.rvc.inference import protect_unvoiced

    gen = torch.Generator().manual_seed(0)
    feats, raw = torch.randn(1, 6, 4, generator=gen), torch.randn(1, 6, 4, generator=gen)
    pitchf = torch.tensor([[0.0, 120.0, 0.0, 300.0, 0.5, 55.0]])
    # official: pitchff = pitchf; pitchff[pitchf > 0] = 1; pitchff[pitchf < 1] = protect
    pitchff = pitchf.clone()
    pitchff[pitchf > 0] = 1
    pitchff[pitchf < 1] = 0.33
    expected = feats * pitchff.unsqueeze(-1) + raw * (1 - pitchff.unsqueeze(-1))
    torch.testing.assert_close(protect_unvoiced(feats, raw, pitchf, 0.33), expected)


# --- long-audio split points and loudness mixing ------------------------------------------------------

def test_split_points_search_the_quietest_absolute_moving_sum():
    from iris_pipeline.models.rvc.inference import ChunkConstants, split_points

    chunks = ChunkConstants(x_pad=1, x_query=1, x_center=3, x_max=4)
    rng = np.random.default_rng(0)
    audio = 0.3 * rng.standard_normal(16000 * 5)
    # near 3 s: a quiet stretch at 2.5 s, and at 3.4 s a loud alternating stretch whose signed sum is ~0
    audio[40000:40400] *= 0.01
    audio[54400:54800] = 0.5 * (-1.0) ** np.arange(400)
    (point,) = split_points(audio, chunks)
    assert 40000 + 80 <= point <= 40400 - 80  # centred in the quiet stretch; the signed sum picks the other
    # the official definition, point by point: sum of |x| over the 160 samples centred on each sample
    padded = np.pad(audio, (80, 80), mode="reflect")
    sums = np.array([np.abs(padded[i: i + 160]).sum() for i in range(32000, 64000)])
    assert point == 32000 + int(np.argmin(sums))


def test_half_second_rms_equals_librosa():
    librosa = pytest.importorskip("librosa")
    from iris_pipeline.models.rvc.inference import half_second_rms

    for rate, n in [(16000, 40_000), (40000, 123_457)]:
        x = np.random.default_rng(rate).standard_normal(n).astype(np.float32)
        expected = librosa.feature.rms(y=x, frame_length=rate // 2 * 2, hop_length=rate // 2)[0]
        np.testing.assert_allclose(half_second_rms(torch.from_numpy(x), rate).numpy(), expected, rtol=2e-6)


def test_loudness_mix_follows_the_input_envelope():
    from iris_pipeline.models.rvc.inference import half_second_rms, mix_loudness

    t = torch.arange(16000 * 4) / 16000
    source = torch.sin(2 * math.pi * 200 * t) * torch.linspace(0.05, 0.8, t.numel())  # crescendo
    converted = 0.3 * torch.sin(2 * math.pi * 300 * torch.arange(40000 * 4) / 40000)  # flat, 40 kHz
    assert torch.equal(mix_loudness(source, 16000, converted, 40000, 1.0), converted)
    imposed = mix_loudness(source, 16000, converted, 40000, 0.0)
    ratio = half_second_rms(imposed, 40000)[1:-1] / half_second_rms(source, 16000)[1:-1]
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0.1, atol=0)  # envelopes are interpolated
    mixed = half_second_rms(mix_loudness(source, 16000, converted, 40000, 0.25), 40000)
    assert mixed[-2] > 3 * mixed[1]  # the crescendo carries over
