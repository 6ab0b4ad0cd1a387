"""FastPitchStage on real speech (tiny model): the contract, both lip-sync modes, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from iris_pipeline.audio import Waveform, read_audio, resample_waveform, wav2lip_mel
from iris_pipeline.config import FastPitchConfig, parse_pipeline_config
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.stages.fastpitch import FastPitchStage
from iris_pipeline.subtitles import SymbolTiming, WordTiming
from iris_pipeline.text.fastpitch_en import encode

SPEECH = Path(__file__).resolve().parents[2] / "data" / "speech_en_16k.wav"
TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def speech() -> Waveform:
    return resample_waveform(read_audio(SPEECH), 24000)  # what VALL-E X hands over


@pytest.fixture(scope="module")
def stage() -> FastPitchStage:
    s = FastPitchStage(FastPitchConfig(precision="fp32"), size="tiny")
    s.prepare()
    return s


def test_run_follows_the_stage_contract(stage, speech):
    out = stage.run(text=TEXT, speech=speech)
    assert set(out) == set(FastPitchStage.outputs)
    m = 1 + round(speech.seconds * 16000) // 200
    assert out["lipsync_mel"].shape == (80, m) == wav2lip_mel(speech.samples, speech.sample_rate).shape
    assert out["lipsync_mel"].abs().max() <= 4.0
    durations = out["durations"]
    assert durations.dtype == torch.long and durations.shape == (len(encode(TEXT).ids),)
    n_frames = 1 + math.ceil(speech.samples.numel() * 22050 / 24000) // 256
    assert int(durations.sum()) == n_frames and int(durations.min()) >= 1
    timings = out["timings"]
    assert all(isinstance(t, SymbolTiming) for t in timings) and timings[0].start_s == 0.0
    assert timings[-1].end_s == pytest.approx(speech.seconds, abs=256 / 22050)
    # words shown as written even where they were encoded as ARPAbet
    assert [w.word for w in out["words"]] == "the quick brown fox jumps over the lazy dog".split()
    assert all(isinstance(w, WordTiming) and w.start_s < w.end_s for w in out["words"])


def test_forced_render_has_exactly_the_aligned_frames(stage, speech):
    alignment = stage.align(TEXT, speech)
    ids = torch.tensor(alignment.text.ids)
    mel = stage.render(ids, alignment.durations)
    assert mel.shape == alignment.speech_mel.shape


def test_speech_mode_returns_the_plain_wav2lip_mel(speech):
    s = FastPitchStage(FastPitchConfig(precision="fp32"), size="tiny", lipsync_features="speech")
    s.prepare()
    out = s.run(text=TEXT, speech=speech)
    torch.testing.assert_close(out["lipsync_mel"], wav2lip_mel(speech.samples, speech.sample_rate))
    assert int(out["durations"].sum()) > 0


def test_bf16_runs_and_keeps_the_shapes(speech):
    s = FastPitchStage(FastPitchConfig(precision="bf16"), size="tiny")
    s.prepare()
    out = s.run(text="Hello there.", speech=speech)
    assert out["lipsync_mel"].dtype == torch.float32 and torch.isfinite(out["lipsync_mel"]).all()


def test_text_without_speakable_symbols_is_refused(stage, speech):
    with pytest.raises(InputError, match=r"^text '\?! \.\.\.': has no speakable symbol"):
        stage.run(text="?! ...", speech=speech)


def test_speech_too_short_for_the_text_is_refused(stage):
    short = Waveform(torch.sin(torch.arange(2400) * 0.05) * 0.5, 24000)  # 0.1 s -> 9 mel frames
    with pytest.raises(InputError, match=f"9 mel frames, fewer than the {len(encode(TEXT).ids)} symbols of the text; cannot align"):
        stage.run(text=TEXT, speech=short)


def test_nan_audio_is_refused(stage, speech):
    samples = speech.samples.clone()
    samples[100] = float("nan")
    with pytest.raises(InputError, match="speech: audio contains NaN"):
        stage.run(text=TEXT, speech=Waveform(samples, speech.sample_rate))


def test_unknown_option_and_bad_mode_are_config_errors():
    with pytest.raises(ConfigError, match="fastpitch.options.pace: unknown option"):
        parse_pipeline_config({"fastpitch": {"options": {"pace": 1.2}}})
    with pytest.raises(ConfigError, match="fastpitch.options.use_prior"):
        parse_pipeline_config({"fastpitch": {"options": {"use_prior": "yes"}}})
    with pytest.raises(ConfigError, match="lipsync_features"):
        FastPitchStage(FastPitchConfig(), size="tiny", lipsync_features="video")
