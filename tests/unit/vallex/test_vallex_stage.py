"""VallexStage on the tiny models: contract shapes, exact frame counts, slots, batch invariance, options."""

from __future__ import annotations

import math

import pytest
import torch

from iris_pipeline.audio import Waveform
from iris_pipeline.config import VallexConfig, parse_pipeline_config
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.stages.contracts import SpeechRequest
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


def test_synthesize_emits_exactly_num_frames(stage, prompt):
    (out,) = stage.synthesize([SpeechRequest("How are you?", "en", prompt, num_frames=12, seed=3)])
    assert out.codes.shape == (12, 8)
    assert out.speech.sample_rate == 24000 and out.speech.samples.shape == (12 * 320,)
    assert torch.isfinite(out.speech.samples).all()


def test_encodec_decoder_option_gives_the_same_length(prompt):
    stage = make_stage(decoder="encodec", greedy=True)
    (out,) = stage.synthesize([SpeechRequest("Hi.", "en", prompt, num_frames=9)])
    assert out.speech.samples.shape == (9 * 320,)


def test_synthesize_equals_single_requests_when_greedy(stage, prompt):
    requests = [SpeechRequest("How are you?", "en", prompt, num_frames=10),
                SpeechRequest("你好", "zh", prompt, num_frames=6),
                SpeechRequest("[EN]Hi[EN][ZH]你好[ZH]", "mix", prompt, max_frames=8)]
    batched = stage.synthesize(requests)
    for request, out in zip(requests, batched, strict=True):
        (alone,) = stage.synthesize([request])
        assert torch.equal(out.codes, alone.codes)
        torch.testing.assert_close(out.speech.samples, alone.speech.samples)
    assert [o.codes.shape[0] for o in batched[:2]] == [10, 6]


@pytest.mark.parametrize("options", [dict(), dict(sampling_in_graph=True), dict(top_k=20, temperature=0.9)],
                         ids=["sampled", "sampled-in-graph", "top-k"])
def test_sampled_speech_depends_on_its_seed_and_chunk_alone(prompt, options):
    """Same (seed, chunk): the same codes alone, in a batch, or admitted while others decode."""
    stage = make_stage(max_batch=3, **options)
    request = SpeechRequest("How are you today?", "en", prompt, seed=5, chunk=2, max_frames=30)
    others = [SpeechRequest("One more sentence here.", "en", prompt, seed=s, chunk=0, max_frames=25) for s in (1, 2)]
    (alone,) = stage.synthesize([request])
    assert torch.equal(stage.synthesize([others[0], request, others[1]])[1].codes, alone.codes)
    # the slot API: join two steps after the others started
    stage.admit(others[0], "a")
    stage.admit(others[1], "b")
    results = dict(stage.step() + stage.step())
    stage.admit(request, "late")
    while stage.occupied:
        results.update(stage.step())
    assert torch.equal(results["late"].codes, alone.codes)
    other_chunk = stage.synthesize([SpeechRequest(request.text, "en", prompt, seed=5, chunk=3, max_frames=30)])[0]
    other_seed = stage.synthesize([SpeechRequest(request.text, "en", prompt, seed=6, chunk=2, max_frames=30)])[0]
    assert not torch.equal(other_chunk.codes, alone.codes) and not torch.equal(other_seed.codes, alone.codes)


def test_more_requests_than_slots_wait_for_a_free_one(prompt):
    stage = make_stage(greedy=True, max_batch=2)
    requests = [SpeechRequest(text, "en", prompt, num_frames=n) for text, n in
                (("One.", 5), ("Two words.", 9), ("Three short words.", 4), ("Four.", 7))]
    assert [r.codes.shape[0] for r in stage.synthesize(requests)] == [5, 9, 4, 7]
    assert stage.occupied == 0 and stage.free_slots == 2


def test_long_text_mode_keeps_the_total_frame_count(prompt):
    stage = make_stage(long_text="sentences", greedy=True, max_batch=2)
    (out,) = stage.synthesize([SpeechRequest("One sentence here. And another one! A third?", "en", prompt,
                                             num_frames=31)])
    assert out.codes.shape == (31, 8) and out.speech.samples.shape == (31 * 320,)
    assert stage.free_slots == 2  # the third sentence waited for a slot, then all left


def test_bad_options_name_the_key():
    with pytest.raises(ConfigError, match="vallex.options.beam: unknown option"):
        parse_pipeline_config({"vallex": {"options": {"beam": 3}}})
    with pytest.raises(ConfigError, match="vallex.options.temperature"):
        parse_pipeline_config({"vallex": {"options": {"temperature": 0}}})
    with pytest.raises(ConfigError, match="vallex.options.decoder"):
        parse_pipeline_config({"vallex": {"options": {"decoder": "hifigan"}}})


def test_bad_inputs_are_one_line_errors(stage, prompt):
    with pytest.raises(InputError, match="'fr' is not supported"):
        stage.synthesize([SpeechRequest("Bonjour", "fr", prompt)])
    with pytest.raises(InputError, match="empty"):
        stage.synthesize([SpeechRequest("  ", "en", prompt)])
    with pytest.raises(InputError, match="num_frames must be >= 1"):
        stage.synthesize([SpeechRequest("Hi", "en", prompt, num_frames=0)])
    with pytest.raises(InputError, match="longer than the maximum"):
        stage.encode_prompt(tone(16.0, 8000), "Hello.", "en")
    with pytest.raises(InputError, match="prompt must be a VallexPrompt"):
        stage.synthesize([SpeechRequest("Hi", "en", "paimon")])
    # a bad request among good ones: refused before anything decodes, no slot left taken
    with pytest.raises(InputError, match="min_frames 9 must lie in"):
        stage.synthesize([SpeechRequest("Hi", "en", prompt, num_frames=4),
                          SpeechRequest("Hi", "en", prompt, min_frames=9, max_frames=5)])
    assert stage.occupied == 0 and stage.free_slots == stage.slots


@pytest.fixture
def graphs_on_cpu(monkeypatch, cpu_graphs):
    """The stage's decoder replays graphs on the CPU (the stand-ins of `cpu_graphs`); the captures."""
    from iris_pipeline.models.vallex.decode import SlotDecoder
    from iris_pipeline.stages import vallex

    class GraphedOnCpu(SlotDecoder):
        def __init__(self, model, use_cuda_graph=False, **kwargs):
            super().__init__(model, **kwargs)
            self.use_cuda_graph = use_cuda_graph

    monkeypatch.setattr(vallex, "SlotDecoder", GraphedOnCpu)
    return cpu_graphs


def test_prepare_captures_every_bucket_graph_and_decoding_only_replays(graphs_on_cpu, prompt):
    """With graphs on, prepare() captures (slot bucket x capacity bucket) for max_batch, in the
    stage's sampler; decoding captures nothing more and gives the eager codes."""
    graphed = make_stage(greedy=True, use_cuda_graph=True, max_batch=3, capacity_buckets=[128, 256])
    assert len(graphs_on_cpu) == 3 * 2 and graphed.decoder.captured_up_front
    requests = [SpeechRequest(text, "en", prompt, num_frames=10, seed=1) for text in ("One.", "Two words.")]
    plain = make_stage(greedy=True, max_batch=3, capacity_buckets=[128, 256])
    for a, b in zip(plain.synthesize(requests), graphed.synthesize(requests), strict=True):
        assert torch.equal(a.codes, b.codes)
    assert len(graphs_on_cpu) == 6 and graphed.decoder.uncaptured_steps == 0


def test_slots_over_the_cache_budget_are_refused_at_prepare():
    with pytest.raises(ConfigError, match="raise vallex.options.cache_mib") as err:
        make_stage(max_batch=64, capacity_buckets=[4096], cache_mib=1)
    assert "\n" not in str(err.value)


def test_a_decode_over_the_cache_budget_is_one_line_naming_the_option(prompt):
    small = make_stage(greedy=True, cache_mib=1, max_batch=1, capacity_buckets=[64])
    request = SpeechRequest("Hello there.", "en", prompt, num_frames=5000)
    with pytest.raises(ConfigError, match="raise vallex.options.cache_mib") as err:
        small.synthesize([request])
    assert "\n" not in str(err.value)
    assert small.occupied == 0 and small.free_slots == 1
