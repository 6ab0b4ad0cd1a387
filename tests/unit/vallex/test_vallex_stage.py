"""VallexStage on the tiny models: contract shapes, exact frame counts, batching, options."""

from __future__ import annotations

import math

import pytest
import torch

from iris_pipeline.audio import Waveform
from iris_pipeline.config import StageConfig
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.stages.vallex import VallexPrompt, VallexStage


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_stage(**options) -> VallexStage:
    stage = VallexStage(StageConfig(precision="fp32", options=options), size="tiny")
    stage.prepare()
    return stage


@pytest.fixture(scope="module")
def stage():
    return make_stage(greedy=True)


def tone(seconds: float, rate: int) -> Waveform:
    t = torch.arange(int(seconds * rate)) / rate
    return Waveform(0.3 * torch.sin(2 * math.pi * 220 * t), rate)


@pytest.fixture(scope="module")
def prompt(stage) -> VallexPrompt:
    return stage.encode_prompt(tone(1.0, 16000), "Hello there.", "en")


def test_encode_prompt(stage, prompt):
    assert prompt.codes.shape == (math.ceil(24000 / 320), 8) and prompt.codes.dtype == torch.long
    assert prompt.text_ids.tolist() == [24, 49, 62, 28, 31, 58, 16, 44, 49, 55, 10]  # hɛˈloʊ_ðɛɹ.
    assert prompt.language == "en"


def test_run_emits_exactly_num_frames(stage, prompt):
    out = stage.run(text="How are you?", language="en", prompt=prompt, num_frames=12, seed=3)
    assert out["codes"].shape == (12, 8)
    assert out["speech"].sample_rate == 24000 and out["speech"].samples.shape == (12 * 320,)
    assert torch.isfinite(out["speech"].samples).all()


def test_encodec_decoder_option_gives_the_same_length(prompt):
    stage = make_stage(decoder="encodec", greedy=True)
    out = stage.run(text="Hi.", language="en", prompt=prompt, num_frames=9)
    assert out["speech"].samples.shape == (9 * 320,)


def test_run_batch_equals_single_runs_when_greedy(stage, prompt):
    requests = [dict(text="How are you?", language="en", prompt=prompt, num_frames=10),
                dict(text="你好", language="zh", prompt=prompt, num_frames=6),
                dict(text="[EN]Hi[EN][ZH]你好[ZH]", language="mix", prompt=prompt, max_frames=8)]
    batched = stage.run_batch(requests)
    for request, out in zip(requests, batched, strict=True):
        alone = stage.run(**request)
        assert torch.equal(out["codes"], alone["codes"])
    assert [o["codes"].shape[0] for o in batched[:2]] == [10, 6]


def test_long_text_mode_keeps_the_total_frame_count(prompt):
    stage = make_stage(long_text="sentences", greedy=True, max_batch=2)
    out = stage.run(text="One sentence here. And another one! A third?", language="en", prompt=prompt,
                    num_frames=31)
    assert out["codes"].shape == (31, 8) and out["speech"].samples.shape == (31 * 320,)


def test_bad_options_name_the_key():
    with pytest.raises(ConfigError, match="vallex.options.beam: unknown option"):
        VallexStage(StageConfig(options={"beam": 3}), size="tiny")
    with pytest.raises(ConfigError, match="vallex.options.temperature"):
        VallexStage(StageConfig(options={"temperature": 0}), size="tiny")
    with pytest.raises(ConfigError, match="vallex.options.decoder"):
        VallexStage(StageConfig(options={"decoder": "hifigan"}), size="tiny")


def test_bad_inputs_are_one_line_errors(stage, prompt):
    with pytest.raises(InputError, match="'fr' is not supported"):
        stage.run(text="Bonjour", language="fr", prompt=prompt)
    with pytest.raises(InputError, match="empty"):
        stage.run(text="  ", language="en", prompt=prompt)
    with pytest.raises(InputError, match="num_frames must be >= 1"):
        stage.run(text="Hi", language="en", prompt=prompt, num_frames=0)
    with pytest.raises(InputError, match="longer than the maximum"):
        stage.encode_prompt(tone(16.0, 8000), "Hello.", "en")
    with pytest.raises(InputError, match="prompt must be a VallexPrompt"):
        stage.run(text="Hi", language="en", prompt="paimon")
