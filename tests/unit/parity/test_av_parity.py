"""Parity with the official code for S3FD, Wav2Lip's mel / paste-back / frame count and RMVPE.

The expected values under tests/data/parity/ were produced by the official implementations
(tools/parity/official_av.py documents how and at which commits); the networks of both sides get
the same seeded weights (`tests.support.parity`), so no weights are stored.
Tolerances are stated per test, with the error measured when the fixtures were made.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from iris_pipeline import models
from iris_pipeline.audio import wav2lip_mel
from iris_pipeline.face_detectors import S3FDDetector
from iris_pipeline.models.rmvpe import estimate_f0
from iris_pipeline.models.s3fd import preprocess
from iris_pipeline.stages.wav2lip import Wav2LipStage
from iris_pipeline.timebase import frames_for_columns
from tests.support.parity import with_seeded_weights

PARITY = Path(__file__).resolve().parents[2] / "data" / "parity"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small CPU ops, one thread


def seeded(name: str, seed: int) -> torch.nn.Module:
    return with_seeded_weights(models.build(name, "full"), seed)


# --- S3FD ---------------------------------------------------------------------------------------------

def test_s3fd_input_and_box_equal_the_official_pipeline():
    """The official detector flips OpenCV's BGR frame to RGB before subtracting (104, 117, 123):
    our RGB frame gives the same network input bit for bit, and the same box."""
    data = np.load(PARITY / "s3fd_frame.npz")
    frame_rgb = np.ascontiguousarray(data["frame_bgr"][..., ::-1])
    network_input = preprocess(torch.from_numpy(frame_rgb)[None])
    assert torch.equal(network_input, torch.from_numpy(data["network_input"]))
    detector = S3FDDetector(seeded("s3fd", int(data["seed"])))
    assert detector.detect(frame_rgb[None]) == [tuple(int(v) for v in data["box"])]


# --- Wav2Lip ------------------------------------------------------------------------------------------

def test_wav2lip_mel_of_16k_speech_equals_the_official():
    """Same formula; the official computes in float64 (scipy's pre-emphasis), ours in float32."""
    data = np.load(PARITY / "wav2lip_mel.npz")
    ours = wav2lip_mel(torch.from_numpy(data["speech_16k"]), 16000).numpy()
    assert ours.shape == data["mel_16k"].shape
    np.testing.assert_allclose(ours, data["mel_16k"], rtol=0, atol=1e-4)  # measured 4.8e-5 (of +/-4)


def test_wav2lip_mel_of_24k_speech_equals_the_official_load_and_resample():
    data = np.load(PARITY / "wav2lip_mel.npz")
    ours = wav2lip_mel(torch.from_numpy(data["speech_24k"]), 24000).numpy()
    assert ours.shape == data["mel_from_24k"].shape
    np.testing.assert_allclose(ours, data["mel_from_24k"], rtol=0, atol=1e-4)


def test_paste_back_equals_the_official_loop():
    """uint8 truncation of the crop x 255, then OpenCV's resize to the box: exactly the official pixels."""
    data = np.load(PARITY / "wav2lip_paste.npz")
    frames = torch.from_numpy(np.ascontiguousarray(data["frames"][..., ::-1]))  # ours are RGB
    boxes = torch.from_numpy(data["coords"])
    Wav2LipStage._paste(frames, torch.from_numpy(data["pred"]), boxes)
    assert np.array_equal(frames.numpy()[..., ::-1], data["pasted"])


def test_frame_count_equals_the_official_loop():
    cases = json.loads((PARITY / "wav2lip_frames.json").read_text())
    assert len(cases) == 40
    assert [frames_for_columns(c["mel_frames"], c["fps"]) for c in cases] == [c["frames"] for c in cases]


# --- RMVPE --------------------------------------------------------------------------------------------

def test_rmvpe_f0_track_equals_the_official():
    """131 frames, zero-padded to 160 as the official does (reflection changed the whole track)."""
    data = np.load(PARITY / "rmvpe_f0.npz")
    f0 = estimate_f0(seeded("rmvpe", int(data["seed"])), torch.from_numpy(data["audio"])[None])[0].numpy()
    expected = data["f0"]
    assert f0.shape == expected.shape
    assert np.array_equal(f0 > 0, expected > 0)
    voiced = expected > 0
    cents = 1200 * np.abs(np.log2(f0[voiced] / expected[voiced]))
    assert cents.max() < 0.01  # measured 0.001 cents


# --- RVC conversion -----------------------------------------------------------------------------------

def test_rvc_conversion_equals_the_official_pipeline():
    """The whole offline conversion of 1.5 s (RMVPE zero padding, 2026 unvoiced-f0 interpolation,
    rms_mix_rate 0.25, peak limit) against the official `Pipeline.pipeline`, whose int16 output
    (32768 x the float, truncated) is the reference: within 2 int16 steps (6e-5 of full scale)."""
    from dataclasses import replace

    from iris_pipeline.models.hubert import HubertConfig, HubertModel
    from iris_pipeline.models.rvc.config import FULL_CONFIGS, tiny_config
    from iris_pipeline.models.rvc.inference import CHUNKS_FULL, VoiceConverter
    from iris_pipeline.models.rvc.synthesizer import SynthesizerTrnMs768NSFsid

    data = np.load(PARITY / "rvc_conversion.npz")
    rmvpe_seed, hubert_seed, synth_seed, noise_seed = (int(s) for s in data["seeds"])
    # the narrow networks of the fixture: one 768-d HuBERT layer, a synthesizer 16 channels wide
    hubert = with_seeded_weights(HubertModel(HubertConfig(
        conv_channels=32, embed_dim=768, ffn_dim=128, n_layers=1, n_heads=12, conv_pos=16, conv_pos_groups=4,
        final_dim=16, n_label_rows=24)), hubert_seed)
    synth = with_seeded_weights(SynthesizerTrnMs768NSFsid(
        replace(tiny_config(FULL_CONFIGS["rvc_v2_40k"]), content_channels=768)), synth_seed)
    synth.fold_weight_norms()
    converter = VoiceConverter(hubert, seeded("rmvpe", rmvpe_seed), synth, CHUNKS_FULL, interpolate_unvoiced=True,
                               rms_mix_rate=0.25)
    assert converter.sample_rate == int(data["sample_rate"])
    out = converter.convert(data["audio"], generator=torch.Generator().manual_seed(noise_seed)).numpy()
    expected = data["converted_int16"]
    assert out.shape == expected.shape
    error = np.abs(out * 32768.0 - expected.astype(np.float64))
    assert error.max() <= 2.0, error.max()
