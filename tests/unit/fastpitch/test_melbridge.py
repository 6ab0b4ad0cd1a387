"""MelBridge: FastPitch-format mel of real speech -> Wav2Lip mel, against Wav2Lip's own front end.

Error measures, in the normalised Wav2Lip units (+/-4 spans 100 dB, so 0.08 unit = 1 dB):
- mean absolute error over all bands and frames          <= 0.20  (measured 0.131 on the test WAV)
- mean signed error (overall level bias)                 |.| <= 0.05  (measured 0.003)
- mean per-frame Pearson correlation across the 80 bands, over frames with speech (max band > -3)
                                                          >= 0.95  (measured 0.981)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iris_pipeline.audio import read_audio, resample_waveform, wav2lip_mel
from iris_pipeline.melbridge import MelBridge, bridge_matrix
from iris_pipeline.models.fastpitch.mel import fastpitch_mel
from iris_pipeline.timebase import mel_column_count

SPEECH = Path(__file__).resolve().parents[2] / "data" / "speech_en_16k.wav"


def _errors(bridged: torch.Tensor, reference: torch.Tensor) -> tuple[float, float, float]:
    diff = bridged - reference
    active = reference.max(0).values > -3.0
    a = bridged[:, active] - bridged[:, active].mean(0)
    b = reference[:, active] - reference[:, active].mean(0)
    corr = (a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0))
    return diff.abs().mean().item(), diff.mean().item(), corr.mean().item()


@pytest.mark.parametrize("rate", [16000, 24000])
def test_bridge_of_real_speech_matches_the_wav2lip_mel(rate):
    wave = resample_waveform(read_audio(SPEECH), rate)
    reference = wav2lip_mel(wave.samples, wave.sample_rate)
    bridged = MelBridge()(fastpitch_mel(wave.samples, wave.sample_rate), wave.samples.shape[0], wave.sample_rate)
    assert bridged.shape == reference.shape
    mae, bias, corr = _errors(bridged, reference)
    assert mae <= 0.20, f"mean absolute error {mae:.3f}"
    assert abs(bias) <= 0.05, f"level bias {bias:.3f}"
    assert corr >= 0.95, f"per-frame correlation {corr:.3f}"


@pytest.mark.parametrize(("num_samples", "rate"), [
    (960, 16000), (8000, 16000), (37392, 16000), (1199, 24000), (12345, 24000), (52711, 22050), (240000, 24000),
])
def test_bridged_mel_has_the_column_count_of_wav2lip_mel_of_the_same_audio(num_samples, rate):
    # 1199 samples at 24 kHz: 5 columns (a count from rounded seconds gave 4)
    samples = torch.randn(num_samples, generator=torch.Generator().manual_seed(num_samples)) * 0.1
    expected = wav2lip_mel(samples, rate).shape[-1]
    bridged = MelBridge()(fastpitch_mel(samples, rate), num_samples, rate)
    assert bridged.shape == (80, expected)


def test_bridge_matrix_is_fixed_and_non_negative():
    matrix = bridge_matrix()
    assert matrix.shape == (80, 80)
    assert (matrix >= 0).all()
    assert bridge_matrix() is matrix  # computed once


def test_time_resampling_keeps_a_ramp_in_place():
    bridge = MelBridge()
    seconds = 2.0
    fp_frames = 1 + round(seconds * 22050) // 256
    ramp = torch.arange(fp_frames, dtype=torch.float32) * 256 / 22050  # value = frame time
    out = bridge.resample_time(ramp.expand(3, -1), mel_column_count(round(seconds * 16000), 16000))
    times = torch.arange(out.shape[-1]) / 80.0
    torch.testing.assert_close(out[0], times.clamp(max=ramp[-1]), rtol=0, atol=1e-5)
