"""VallexStage on the tiny models: contract shapes, exact frame counts, batching, options."""

from __future__ import annotations

import math

import pytest
import torch

from iris_pipeline.audio import Waveform
from iris_pipeline.config import VallexConfig, parse_pipeline_config
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.stages.vallex import VallexPrompt, VallexStage

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small CPU ops, one thread


def make_stage(**options) -> VallexStage:
    stage = VallexStage(VallexConfig(precision="fp32", options=options), size="tiny")
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
        parse_pipeline_config({"vallex": {"options": {"beam": 3}}})
    with pytest.raises(ConfigError, match="vallex.options.temperature"):
        parse_pipeline_config({"vallex": {"options": {"temperature": 0}}})
    with pytest.raises(ConfigError, match="vallex.options.decoder"):
        parse_pipeline_config({"vallex": {"options": {"decoder": "hifigan"}}})


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


@pytest.fixture
def graphs_on_cpu(monkeypatch, cpu_graphs):
    """The stage's decoder replays graphs on the CPU (the stand-ins of `cpu_graphs`); the captures."""
    from iris_pipeline.models.vallex.decode import VallexDecoder
    from iris_pipeline.stages import vallex

    class GraphedOnCpu(VallexDecoder):
        def __init__(self, model, use_cuda_graph=False, **kwargs):
            super().__init__(model, **kwargs)
            self.use_cuda_graph = use_cuda_graph

    monkeypatch.setattr(vallex, "VallexDecoder", GraphedOnCpu)
    return cpu_graphs


def test_prepare_captures_every_bucket_graph_and_release_keeps_them(graphs_on_cpu, prompt):
    """With graphs on, prepare() captures (batch bucket x capacity bucket) for max_batch, in the
    stage's sampler; decoding captures nothing more, and release_caches() frees only the rest."""
    graphed = make_stage(greedy=True, use_cuda_graph=True, max_batch=3, capacity_buckets=[128, 256])
    assert len(graphs_on_cpu) == 3 * 2 and graphed.decoder.captured_up_front
    requests = [dict(text=text, language="en", prompt=prompt, num_frames=10, seed=1)
                for text in ("One.", "Two words.")]
    plain = make_stage(greedy=True, max_batch=3, capacity_buckets=[128, 256])
    for a, b in zip(plain.run_batch(requests), graphed.run_batch(requests), strict=True):
        assert torch.equal(a["codes"], b["codes"])
    assert len(graphs_on_cpu) == 6 and graphed.decoder.uncaptured_steps == 0
    assert graphed.release_caches() == 0  # only the pinned caches of the captured graphs exist
    assert plain.release_caches() > 0 and plain.release_caches() == 0


def test_graphs_that_do_not_fit_the_cache_budget_are_refused_at_prepare(graphs_on_cpu):
    with pytest.raises(ConfigError, match="raise vallex.options.cache_mib") as err:
        make_stage(use_cuda_graph=True, max_batch=64, capacity_buckets=[4096], cache_mib=1)
    assert "\n" not in str(err.value)


def test_a_decode_over_the_cache_budget_is_one_line_naming_the_option(prompt):
    small = make_stage(greedy=True, cache_mib=1, capacity_buckets=[64])
    request = dict(text="Hello there.", language="en", prompt=prompt, num_frames=900)
    with pytest.raises(ConfigError, match="raise vallex.options.cache_mib") as err:
        small.run_batch([request])
    assert "\n" not in str(err.value)
