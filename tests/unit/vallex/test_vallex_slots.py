"""Continuous batching of the VALL-E X AR decode (`SlotDecoder`, tiny config, fp32): a sequence's
codes are the same alone and amid others that join and leave at other steps; slots are reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from iris_pipeline import models
from iris_pipeline.errors import ConfigError
from iris_pipeline.models.vallex.config import EOS_ID, LANGUAGE_IDS
from iris_pipeline.models.vallex.decode import (
    DecodeRequest,
    Sampling,
    SlotCache,
    SlotDecoder,
    VallexDecoder,
    counter_uniform,
    stream_key,
)
from tests.support.manifests import random_state_dict

SAMPLERS = [Sampling(greedy=True), Sampling(greedy=True, in_graph=True), Sampling(), Sampling(in_graph=True),
            Sampling(top_k=5, temperature=0.8), Sampling(top_k=5, temperature=0.8, in_graph=True)]
SAMPLER_IDS = ["greedy", "greedy-in-graph", "sampled", "sampled-in-graph", "top-k", "top-k-in-graph"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return models.build("vallex", "tiny", seed=0)


def make_request(seed: int, text_len: int, prompt_frames: int, max_frames: int, min_frames: int = 1) -> DecodeRequest:
    gen = torch.Generator().manual_seed(seed)
    text = torch.randint(5, 70, (text_len,), generator=gen)
    languages = torch.zeros(text_len, dtype=torch.long)
    languages[text_len // 3:] = 1
    codes = torch.randint(0, 1024, (prompt_frames, 8), generator=gen)
    return DecodeRequest(text, languages, codes, min_frames=min_frames, max_frames=max_frames)


# (request, key) of five sequences of different lengths
REQUESTS = [(make_request(seed=s, text_len=8 + 3 * s, prompt_frames=4 * s, max_frames=10 + 4 * s), stream_key(7, s))
            for s in range(5)]


def run_schedule(decoder: SlotDecoder, arrivals: dict[int, list[int]],
                 requests: list[tuple[DecodeRequest, int]] = REQUESTS) -> dict[int, torch.Tensor]:
    """Admit requests[i] at step s for every i in arrivals[s] (or as soon as a slot is free after
    that), step until every sequence ended; the codes of each."""
    codes: dict[int, torch.Tensor] = {}
    waiting: list[int] = []
    step = 0
    while len(codes) < sum(len(v) for v in arrivals.values()):
        waiting += arrivals.get(step, [])
        while waiting and decoder.free_slots:
            i = waiting.pop(0)
            decoder.admit(requests[i][0], tag=i, key=requests[i][1])
        for finished in decoder.step(slot_wanted=bool(waiting)):
            codes[finished.tag] = finished.codes
        step += 1
        assert step < 1000
    return codes


def alone(model, sampling: Sampling, i: int) -> torch.Tensor:
    return run_schedule(SlotDecoder(model, slots=1, sampling=sampling, capacity_buckets=(128, 256)), {0: [i]})[i]


@pytest.mark.parametrize("sampling", SAMPLERS, ids=SAMPLER_IDS)
def test_codes_alone_equal_codes_amid_others_joining_at_other_steps(model, sampling):
    expected = {i: alone(model, sampling, i) for i in range(len(REQUESTS))}
    decoder = SlotDecoder(model, slots=3, sampling=sampling, capacity_buckets=(128, 256), eos_check_every=4)
    got = run_schedule(decoder, {0: [2], 3: [0, 4], 5: [1], 11: [3]})
    assert set(got) == set(expected)
    for i, codes in expected.items():
        assert torch.equal(got[i], codes), f"sequence {i} changed in company ({sampling})"
    assert decoder.occupied == 0 and decoder.free_slots == 3


@pytest.mark.parametrize("in_graph", [False, True])
def test_greedy_slots_give_the_static_decoder_codes(model, in_graph):
    """The continuous decode of one sequence is today's batched decode of that sequence, bit for bit."""
    sampling = Sampling(greedy=True, in_graph=in_graph)
    static = VallexDecoder(model).generate([r for r, _ in REQUESTS], sampling)
    together = run_schedule(SlotDecoder(model, slots=2, sampling=sampling, capacity_buckets=(128, 256)),
                            {0: [0, 1, 2, 3, 4]})
    for i, result in enumerate(static):
        assert torch.equal(together[i], result.codes)


def test_greedy_slots_reproduce_the_official_codes():
    golden = json.loads((Path(__file__).parent / "official_greedy_tiny.json").read_text())
    model = models.build("vallex", "tiny")
    state = random_state_dict(model, seed=golden["state_seed"])
    for output_name, embedding_name in model.tied_pairs():
        state[output_name] = state[embedding_name].clone()
    model.load_state_dict(state, strict=True)
    decoder = SlotDecoder(model.eval(), slots=len(golden["cases"]), sampling=Sampling(greedy=True), eos_check_every=1)
    for n, case in enumerate(golden["cases"]):
        text = torch.tensor(case["text"])
        n_prompt = case["prompt_text_tokens"]
        languages = torch.tensor([LANGUAGE_IDS[case["prompt_language"]]] * n_prompt
                                 + [LANGUAGE_IDS[case["text_language"]]] * (len(case["text"]) - n_prompt))
        prompt = torch.tensor(case["prompt_codes"], dtype=torch.long).reshape(-1, 8)
        decoder.admit(DecodeRequest(text, languages, prompt, min_frames=0), tag=n, key=0)
    codes = {}
    while decoder.occupied:
        codes.update({f.tag: f.codes for f in decoder.step()})
    for n, case in enumerate(golden["cases"]):
        assert torch.equal(codes[n], torch.tensor(case["codes"]))


def test_the_stream_key_decides_the_sample(model):
    sampling = Sampling(in_graph=True)
    request = REQUESTS[3][0]

    def codes(key: int) -> torch.Tensor:
        decoder = SlotDecoder(model, slots=1, sampling=sampling, capacity_buckets=(256,))
        decoder.admit(request, tag=0, key=key)
        while True:
            finished = decoder.step()
            if finished:
                return finished[0].codes

    assert torch.equal(codes(stream_key(1, 0)), codes(stream_key(1, 0)))
    assert not torch.equal(codes(stream_key(1, 0)), codes(stream_key(1, 1)))
    assert stream_key(1, 0) != stream_key(0, 1) and 0 <= stream_key(2**40, 3) < 2**63


def test_slots_are_freed_and_reused_without_growth(model):
    decoder = SlotDecoder(model, slots=2, sampling=Sampling(greedy=True), capacity_buckets=(128, 256))
    footprint = decoder.nbytes
    for round_ in range(6):  # 30 sequences through 2 slots
        codes = run_schedule(decoder, {0: [0, 1, 2, 3, 4]})
        assert len(codes) == 5, round_
        assert decoder.occupied == 0 and decoder.free_slots == 2
        assert not decoder.overflow and decoder.nbytes == footprint
    assert bool(decoder.pool.cache.finished.all()) and not bool(decoder.pool.cache.valid.any())


def test_frame_limits_hold_per_slot(model):
    """max_frames ends a sequence exactly; min_frames suppresses EOS exactly, each slot its own."""
    eos_first = models.build("vallex", "tiny", seed=0)
    eos_first.load_state_dict(model.state_dict())
    with torch.no_grad():  # EOS wins every draw once allowed: the final norm's bias feeds it alone
        eos_first.ar_predict_layer.weight[EOS_ID] = 100.0
        eos_first.ar_decoder.norm.bias.fill_(1.0)
    decoder = SlotDecoder(eos_first, slots=3, sampling=Sampling(), capacity_buckets=(128,), eos_check_every=1)
    for tag, lo in enumerate((7, 12, 1)):
        decoder.admit(make_request(seed=tag, text_len=10, prompt_frames=5, max_frames=40, min_frames=lo), tag, key=tag)
    codes = {}
    while decoder.occupied:
        codes.update({f.tag: f.codes for f in decoder.step()})
    assert [codes[t].shape[0] for t in range(3)] == [7, 12, 1]
    never_eos = SlotDecoder(model, slots=2, sampling=Sampling(greedy=True), capacity_buckets=(128,))
    never_eos.admit(make_request(seed=1, text_len=10, prompt_frames=5, max_frames=9, min_frames=9), 0, key=0)
    steps = 0
    while never_eos.occupied:
        finished = never_eos.step()
        steps += 1
    assert steps == 9 and finished[0].codes.shape == (9, 8)


def test_a_sequence_longer_than_the_largest_bucket_gets_a_pool_of_its_own(model):
    long = make_request(seed=9, text_len=30, prompt_frames=150, max_frames=40, min_frames=40)  # 221 columns
    sampling = Sampling(greedy=True)
    wide = SlotDecoder(model, slots=1, sampling=sampling, capacity_buckets=(256,))
    decoder = SlotDecoder(model, slots=2, sampling=sampling, capacity_buckets=(64, 128))
    decoder.admit(long, "long", key=0)
    decoder.admit(REQUESTS[0][0], "short", key=0)
    assert len(decoder.overflow) == 1 and decoder.free_slots == 0
    codes = {}
    while decoder.occupied:
        codes.update({f.tag: f.codes for f in decoder.step()})
    wide.admit(long, "long", key=0)
    while wide.occupied:
        codes_wide = {f.tag: f.codes for f in wide.step()}
    assert torch.equal(codes["long"], codes_wide["long"]) and codes["long"].shape == (40, 8)
    assert not decoder.overflow  # freed with its sequence
    tight = SlotDecoder(model, slots=1, sampling=sampling, capacity_buckets=(64,),
                        cache_bytes=SlotCache.bytes_for(model, 1, 64) + 1024)
    with pytest.raises(ConfigError, match="a sequence of 221 columns needs"):
        tight.admit(long, "long", key=0)
    assert tight.occupied == 0


def test_cancel_frees_the_slots(model):
    decoder = SlotDecoder(model, slots=2, sampling=Sampling(greedy=True), capacity_buckets=(128, 256))
    decoder.admit(REQUESTS[0][0], "a", key=0)
    decoder.admit(REQUESTS[1][0], "b", key=0)
    decoder.step()
    decoder.cancel({"a"})
    assert decoder.occupied == 1 and decoder.free_slots == 1
    with pytest.raises(ValueError, match="no free slot"):
        decoder.admit(REQUESTS[2][0], "c", key=0) or decoder.admit(REQUESTS[3][0], "d", key=0)


def test_counter_uniform_is_uniform_and_keyed():
    keys = torch.tensor([stream_key(0, c) for c in range(64)])
    u = counter_uniform(keys, torch.full((64,), 5), 1025)
    assert u.dtype == torch.float32 and bool((u > 0).all()) and bool((u < 1).all())
    # 65,600 values: mean and each decile's share within ~5 standard deviations of uniform
    assert abs(float(u.mean()) - 0.5) < 5 * (1 / 12 / u.numel()) ** 0.5
    shares = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert float((shares - 0.1).abs().max()) < 5 * (0.09 / u.numel()) ** 0.5
    # rows are functions of their own (key, step): the same alone, different for another step
    alone_row = counter_uniform(keys[3:4], torch.tensor([5]), 1025)
    assert torch.equal(alone_row[0], u[3])
    assert not torch.equal(counter_uniform(keys[3:4], torch.tensor([6]), 1025), alone_row)


@pytest.mark.parametrize("sampling", [Sampling(greedy=True), Sampling(in_graph=True)], ids=["step", "sample+step"])
def test_capture_all_captures_every_slot_and_capacity_bucket_then_only_replays(model, cpu_graphs, sampling):
    decoder = SlotDecoder(model, slots=3, sampling=sampling, capacity_buckets=(64, 128, 256))
    decoder.use_cuda_graph = True  # graph replay on the CPU, with the stand-ins of `cpu_graphs`
    assert decoder.capture_all() == 3 * 3 == len(cpu_graphs)  # slot buckets (1, 2, 3) x 3 capacities
    assert decoder.captured() == {(b, c) for b in (1, 2, 3) for c in (64, 128, 256)}
    # capture left the slots as they were: free
    assert bool(decoder.pool.cache.finished.all()) and not bool(decoder.pool.cache.valid.any())
    eager = SlotDecoder(model, slots=3, sampling=sampling, capacity_buckets=(64, 128, 256))
    schedule = {0: [2], 3: [0, 4], 5: [1], 11: [3]}
    assert run_schedule(decoder, schedule).keys() == run_schedule(eager, schedule).keys()
    for i, codes in run_schedule(eager, schedule).items():
        assert torch.equal(run_schedule(decoder, schedule)[i], codes)
    assert len(cpu_graphs) == 9 and decoder.uncaptured_steps == 0
    with pytest.raises(RuntimeError, match="once"):
        decoder.capture_all()


@pytest.mark.gpu
@pytest.mark.parametrize("sampling", [Sampling(greedy=True), Sampling(in_graph=True), Sampling()],
                         ids=["greedy", "sampled-in-graph", "sampled-host"])
def test_gpu_graphs_per_slot_bucket_keep_codes_batch_invariant(sampling):
    cuda_model = models.build("vallex", "tiny", seed=0).cuda().eval()
    requests = [(DecodeRequest(r.text.cuda(), r.languages.cuda(), r.prompt_codes.cuda(), r.min_frames,
                               r.max_frames), key) for r, key in REQUESTS]
    graphed = SlotDecoder(cuda_model, slots=4, sampling=sampling, use_cuda_graph=True, capacity_buckets=(128, 256))
    assert graphed.capture_all() == 3 * 2  # slot buckets (1, 2, 4) x 2 capacities
    assert graphed.captured() == {(b, c) for b in (1, 2, 4) for c in (128, 256)}
    together = run_schedule(graphed, {0: [2], 3: [0, 4], 5: [1], 11: [3]}, requests)
    assert graphed.uncaptured_steps == 0
    for i in range(len(requests)):
        single = SlotDecoder(cuda_model, slots=1, sampling=sampling, use_cuda_graph=True, capacity_buckets=(128, 256))
        single.capture_all()
        assert torch.equal(run_schedule(single, {0: [i]}, requests)[i], together[i]), i
