"""RVCStage on tiny models: output length, cache behaviour, retrieval, bad input and bad options."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from iris_pipeline.audio import Waveform
from iris_pipeline.config import RVCConfig, parse_pipeline_config
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.models.rvc.inference import split_points
from iris_pipeline.stages.rvc import RVCStage
from iris_pipeline.timebase import CODEC_RATE

RATES = {"rvc_v2_40k": 40000, "rvc_v2_48k": 48000}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small CPU ops, one thread


def make_stage(tmp_path, **options) -> RVCStage:
    options = {"cache_dir": str(tmp_path / "cache"), **options}
    stage = RVCStage(RVCConfig(precision="fp32", options=options), size="tiny")
    stage.prepare()
    return stage


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    root = tmp_path_factory.mktemp("rvc")
    return {name: make_stage(root, model=name, cache=False) for name in RATES}


def voice_like(seconds: float, rate: int, seed: int = 0) -> Waveform:
    """A gliding harmonic tone with a pause: voiced and unvoiced frames."""
    t = torch.arange(int(round(seconds * rate)), dtype=torch.float64) / rate
    f0 = 140 + 40 * torch.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / rate
    x = 0.4 * torch.sin(phase) + 0.2 * torch.sin(2 * phase)
    x[(t > seconds * 0.4) & (t < seconds * 0.55)] *= 0.01
    x += 0.003 * torch.from_numpy(np.random.default_rng(seed).standard_normal(x.shape[0]))
    return Waveform(x.float(), rate)


def hubert_frames(n: int) -> int:
    for kernel, stride in ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2)):
        n = (n - kernel) // stride + 1
    return n


def expected_prompt_samples(n_input: int, input_rate: int, model_rate: int, x_pad: int = 1) -> int:
    """The official length arithmetic (no split): 16 kHz length -> padded -> frames -> model rate -> 24 kHz."""
    n16 = math.ceil(n_input * 16000 / input_rate)
    padded = n16 + 2 * 16000 * x_pad
    frames = min(padded // 160, 2 * hubert_frames(padded))
    at_model_rate = frames * (model_rate // 100) - 2 * model_rate * x_pad
    return math.ceil(at_model_rate * CODEC_RATE / model_rate)


@settings(max_examples=6, deadline=None)
@given(seconds=st.floats(min_value=1.0, max_value=2.5), rate=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
       model=st.sampled_from(sorted(RATES)))
def test_output_length_follows_the_padding_rules(stages, seconds, rate, model):
    reference = voice_like(seconds, rate)
    prompt = stages[model].run(reference=reference)["prompt"]
    assert prompt.sample_rate == CODEC_RATE
    assert prompt.samples.shape[0] == expected_prompt_samples(reference.samples.shape[0], rate, RATES[model])
    # RVC's output is up to ~3 frames (30 ms) shorter than its input
    assert 0 <= reference.seconds - prompt.seconds <= 0.03
    assert torch.isfinite(prompt.samples).all() and prompt.samples.abs().max() <= 0.99 + 1e-6


def test_long_reference_is_split_and_keeps_its_length(tmp_path):
    stage = make_stage(tmp_path, cache=False, x_query=1, x_center=2, x_max=3)
    reference = voice_like(5.2, 16000)
    audio = reference.samples.double().numpy()
    assert len(split_points(audio, stage.converter.chunks)) == 2
    prompt = stage.run(reference=reference)["prompt"]
    # each chunk loses at most one or two 10 ms frames to the HuBERT frame arithmetic
    assert 0 <= reference.seconds - prompt.seconds <= 0.01 * (2 + 2 + 1)


def test_cache_hit_on_second_run_and_miss_after_pitch_shift(tmp_path):
    stage = make_stage(tmp_path)
    calls = []
    convert = stage.convert
    stage.convert = lambda ref: calls.append(ref) or convert(ref)
    reference = voice_like(1.3, 22050)
    first = stage.run(reference=reference)["prompt"]
    second = stage.run(reference=reference)["prompt"]
    assert len(calls) == 1 and len(stage.cache) == 1
    assert torch.equal(first.samples, second.samples)

    shifted = make_stage(tmp_path, pitch_shift=4.0)
    calls_shifted = []
    convert_shifted = shifted.convert
    shifted.convert = lambda ref: calls_shifted.append(ref) or convert_shifted(ref)
    third = shifted.run(reference=reference)["prompt"]
    assert len(calls_shifted) == 1 and len(shifted.cache) == 2
    assert not torch.equal(first.samples, third.samples)


@pytest.mark.parametrize("damage", [
    lambda p: {**p, "samples": torch.full_like(p["samples"], float("nan"))},
    lambda p: {**p, "samples": p["samples"][:0]},
    lambda p: {**p, "samples": p["samples"][:100]},
    lambda p: {**p, "sample_rate": 16000},
    lambda p: {**p, "samples": p["samples"].double()},
], ids=["nan", "empty", "too-short", "rate", "dtype"])
def test_a_wrong_cached_prompt_is_converted_again(tmp_path, capsys, damage):
    from iris_pipeline.cache import ENTRY_FORMAT, payload_checksum

    stage = make_stage(tmp_path)
    calls = []
    convert = stage.convert
    stage.convert = lambda ref: calls.append(ref) or convert(ref)
    reference = voice_like(1.3, 22050)
    first = stage.run(reference=reference)["prompt"]
    key = stage.cache_key(reference)
    path = stage.cache.directory / f"{key}.pt"
    payload = damage(torch.load(path, weights_only=True)["payload"])
    torch.save({"format": ENTRY_FORMAT, "key": key, "checksum": payload_checksum(payload), "payload": payload}, path)
    capsys.readouterr()
    again = stage.run(reference=reference)["prompt"]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(calls) == 2 and len(lines) == 1 and key in lines[0], lines
    assert torch.equal(first.samples, again.samples)
    stage.run(reference=reference)
    assert len(calls) == 2  # repaired


def test_conversion_is_deterministic_for_a_seed(stages):
    reference = voice_like(1.1, 16000)
    stage = stages["rvc_v2_48k"]
    assert torch.equal(stage.convert(reference).samples, stage.convert(reference).samples)


def test_index_retrieval_blends_features(tmp_path):
    faiss = pytest.importorskip("faiss")
    vectors = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    index = faiss.IndexFlatL2(64)
    index.add(vectors)
    path = tmp_path / "voice.index"
    faiss.write_index(index, str(path))
    reference = voice_like(1.2, 16000)
    plain = make_stage(tmp_path, cache=False).convert(reference).samples
    retrieved = make_stage(tmp_path, cache=False, index_path=str(path), index_rate=1.0).convert(reference).samples
    assert retrieved.shape == plain.shape and not torch.equal(retrieved, plain)

    from iris_pipeline.models.rvc.retrieval import FeatureIndex

    feature_index = FeatureIndex(path)
    queries = vectors[:3] + 0.01
    distances, ids = index.search(queries, 8)
    weights = np.square(1 / distances)
    weights /= weights.sum(axis=1, keepdims=True)
    expected = np.sum(vectors[ids] * weights[..., None], axis=1)
    np.testing.assert_allclose(feature_index.retrieve(queries), expected, rtol=1e-5, atol=1e-6)


def test_index_of_wrong_width_is_refused(tmp_path):
    faiss = pytest.importorskip("faiss")
    index = faiss.IndexFlatL2(32)
    index.add(np.zeros((4, 32), dtype=np.float32))
    path = tmp_path / "narrow.index"
    faiss.write_index(index, str(path))
    with pytest.raises(ConfigError, match="index_path: the index holds 32-d vectors"):
        make_stage(tmp_path, index_path=str(path))


@pytest.mark.parametrize(("reference", "words"), [
    (Waveform(torch.full((8000,), 0.1), 16000), "shorter than the minimum 1 s"),
    (Waveform(torch.zeros(32000), 16000), "silent"),
    (Waveform(torch.tensor([0.1, float("nan")] * 16000), 16000), "NaN"),
    (Waveform(torch.full((8000,), 0.1), 4000), "sample rate 4000 Hz is not supported (supported: 8000-96000 Hz)"),
    (Waveform(torch.full((400000,), 0.1), 192000), "sample rate 192000 Hz is not supported"),
])
def test_bad_reference_gives_one_clear_line(stages, reference, words):
    with pytest.raises(InputError) as err:
        stages["rvc_v2_40k"].run(reference=reference)
    message = str(err.value)
    assert message.startswith("reference: ") and words in message and "\n" not in message


@pytest.mark.parametrize(("options", "words"), [
    ({"modle": "rvc_v2_40k"}, "rvc.options.modle: unknown option"),
    ({"model": "rvc_v1_40k"}, "rvc.options.model: not allowed"),
    ({"pitch_shift": 40}, "rvc.options.pitch_shift"),
    ({"protect": 0.7}, "rvc.options.protect"),
    ({"x_center": 5}, "x_query, x_center and x_max must be given together"),
])
def test_bad_options_are_config_errors(options, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_pipeline_config({"rvc": {"options": options}})
