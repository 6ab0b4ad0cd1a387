"""Fast VALL-E X decoding against the plain, uncached computation (tiny config, fp32)."""

from __future__ import annotations

import pytest
import torch

from iris_pipeline import models
from iris_pipeline.errors import InputError
from iris_pipeline.models.vallex.config import EOS_ID
from iris_pipeline.models.vallex.decode import DecodeRequest, Sampling, VallexDecoder, gumbel_argmax
from tests.support.vallex_perf import count_step_kernels, hbm_floor, synthetic_requests, time_ar_steps

# KV-cache logits vs full recompute, fp32: observed max |diff| ~1e-6 (summation order only).
LOGIT_ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small CPU ops, one thread


@pytest.fixture(scope="module")
def model():
    return models.build("vallex", "tiny", seed=0)


def make_request(seed: int, text_len: int, prompt_text: int, prompt_frames: int, **limits) -> DecodeRequest:
    gen = torch.Generator().manual_seed(seed)
    text = torch.randint(5, 70, (text_len,), generator=gen)
    languages = torch.zeros(text_len, dtype=torch.long)
    languages[prompt_text:] = 1  # prompt in English, target in Chinese
    codes = torch.randint(0, 1024, (prompt_frames, 8), generator=gen)
    return DecodeRequest(text, languages, codes, **limits)


THREE = [dict(seed=1, text_len=20, prompt_text=8, prompt_frames=30, max_frames=24),
         dict(seed=2, text_len=11, prompt_text=4, prompt_frames=9, max_frames=17),
         dict(seed=3, text_len=26, prompt_text=0, prompt_frames=0, max_frames=21)]


def reference_logits(model, request: DecodeRequest, codebook0: torch.Tensor) -> torch.Tensor:
    """Logits of every generated frame, recomputing the whole prefix (official path without a cache)."""
    stream = torch.cat([model.ar_stream(request.prompt_codes[:, 0]), codebook0])
    per_step = []
    for t in range(codebook0.shape[0]):  # one full pass per step, as without a KV cache
        logits = model.ar_logits_full(request.text, request.languages, stream[: request.prompt_codes.shape[0] + 1 + t])
        per_step.append(logits[-1])
    return torch.stack(per_step)


@pytest.mark.parametrize("in_graph", [False, True])
def test_kv_cache_logits_equal_full_recompute(model, in_graph):
    requests = [make_request(**spec) for spec in THREE]
    gen = torch.Generator().manual_seed(5)
    results = VallexDecoder(model).generate(requests, Sampling(in_graph=in_graph), gen, return_logits=True)
    for request, result in zip(requests, results, strict=True):
        expected = reference_logits(model, request, result.codes[:, 0])
        assert result.ar_logits.shape == expected.shape
        torch.testing.assert_close(result.ar_logits, expected, atol=LOGIT_ATOL, rtol=0)


@pytest.mark.parametrize("in_graph", [False, True])
def test_batched_decode_equals_separate_decodes(model, in_graph):
    requests = [make_request(**spec) for spec in THREE]
    decoder = VallexDecoder(model)
    greedy = Sampling(greedy=True, in_graph=in_graph)
    batched = decoder.generate(requests, greedy)
    for request, together in zip(requests, batched, strict=True):
        alone = decoder.generate([request], greedy)[0]
        assert together.codes.shape == (request.max_frames, 8)
        assert torch.equal(together.codes, alone.codes)
        # and the batched NAR equals the plain per-sequence NAR
        expected = model.nar_complete(request.text, request.languages, request.prompt_codes, alone.codes[:, 0])
        assert torch.equal(alone.codes, expected)


def eos_model(model, bias: float):
    """A copy whose EOS logit is pushed up (bias > 0) or down (bias < 0) for every input."""
    biased = models.build("vallex", "tiny", seed=0)
    biased.load_state_dict(model.state_dict())
    with torch.no_grad():
        biased.ar_predict_layer.weight[EOS_ID] = 0
        # the final LayerNorm's bias reaches the output layer unchanged: use it as a constant input
        biased.ar_decoder.norm.bias.fill_(1.0)
        biased.ar_predict_layer.weight[EOS_ID] = bias
    return biased


@pytest.mark.parametrize("in_graph", [False, True])
def test_min_frames_suppress_eos_exactly(model, in_graph):
    eager_eos = eos_model(model, 100.0)
    decoder = VallexDecoder(eager_eos)
    requests = [make_request(**{**THREE[0], "max_frames": 40}, min_frames=7),
                make_request(**{**THREE[1], "max_frames": 40}, min_frames=12),
                make_request(**{**THREE[2], "max_frames": 40})]  # default min 1
    results = decoder.generate(requests, Sampling(in_graph=in_graph), torch.Generator().manual_seed(0))
    assert [r.codes.shape[0] for r in results] == [7, 12, 1]
    assert all(int(r.codes[:, 0].max()) < EOS_ID for r in results)


@pytest.mark.parametrize("in_graph", [False, True])
def test_max_frames_stop_exactly_and_default_cap(model, in_graph):
    never_eos = VallexDecoder(eos_model(model, -100.0))
    capped = [make_request(**{**THREE[0], "max_frames": 13}), make_request(**{**THREE[1], "max_frames": 5}),
              make_request(seed=4, text_len=3, prompt_text=1, prompt_frames=4)]  # official cap 16 x 3
    results = never_eos.generate(capped, Sampling(in_graph=in_graph), torch.Generator().manual_seed(0))
    assert [r.codes.shape[0] for r in results] == [13, 5, 48]
    exact = [make_request(**{**spec, "min_frames": spec["max_frames"]}) for spec in THREE]
    results = VallexDecoder(eos_model(model, 100.0)).generate(exact, Sampling(in_graph=in_graph), torch.Generator())
    assert [r.codes.shape[0] for r in results] == [spec["max_frames"] for spec in THREE]


def test_sampling_is_seeded_and_top_k_one_is_greedy(model):
    requests = [make_request(**spec) for spec in THREE]
    decoder = VallexDecoder(model)

    def codebook0(sampling, seed):
        return [r.codes[:, 0] for r in decoder.generate(requests, sampling, torch.Generator().manual_seed(seed))]

    first, again, other = codebook0(Sampling(), 11), codebook0(Sampling(), 11), codebook0(Sampling(), 12)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    greedy = codebook0(Sampling(greedy=True), 0)
    top1 = codebook0(Sampling(top_k=1, temperature=0.7), 99)
    assert all(torch.equal(a, b) for a, b in zip(greedy, top1, strict=True))


@pytest.mark.parametrize("in_graph", [False, True])
def test_sampling_in_graph_is_seeded(model, in_graph):
    requests = [make_request(**spec) for spec in THREE]
    decoder = VallexDecoder(model)
    runs = [[r.codes for r in decoder.generate(requests, Sampling(in_graph=in_graph),
                                               torch.Generator().manual_seed(seed))] for seed in (4, 4, 5)]
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[2], strict=True))


def test_gumbel_argmax_draws_from_the_softmax():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0, float("-inf")])
    draws = 40_000
    uniform = torch.rand(draws, 5, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(gumbel_argmax(logits.expand(draws, 5), uniform), minlength=5).float()
    expected = torch.softmax(logits, dim=0) * draws
    assert counts[4] == 0
    # ~4 standard deviations of a binomial count
    assert torch.all((counts - expected).abs() <= 4 * (expected * (1 - expected / draws)).sqrt() + 1)


def test_bad_frame_limits_are_input_errors(model):
    with pytest.raises(InputError, match="min_frames 9 must lie in"):
        VallexDecoder(model).generate([make_request(**{**THREE[0], "max_frames": 5}, min_frames=9)])


def test_hbm_floor_counts_weights_and_cache(model):
    floor = hbm_floor(model, batch=2, context=100, bandwidth=1e12)
    cfg = model.config
    assert floor.kv_bytes == 2 * cfg.num_layers * 2 * 100 * cfg.d_model * 4
    decoder_bytes = sum(p.numel() for p in model.ar_decoder.parameters()) * 4
    assert floor.weight_bytes == decoder_bytes + model.ar_predict_layer.weight.numel() * 4 + 2 * cfg.d_model * 4
    assert floor.floor_ms == pytest.approx((floor.weight_bytes + floor.kv_bytes) / 1e12 * 1e3)


@pytest.mark.parametrize("in_graph", [False, True])
def test_step_timing_harness_runs_on_the_cpu(model, in_graph):
    decoder = VallexDecoder(model)
    requests = synthetic_requests(2, text_tokens=10, prompt_frames=5, frames=6)
    timing = time_ar_steps(decoder, requests, Sampling(in_graph=in_graph), warmup=1, repeats=2)
    # (on a loaded CPU the prefill alone can time longer than a whole decode: only signs are checked)
    assert timing["frames"] == 6 and timing["ms_per_step"] >= 0 and timing["decode_ms"] > 0
    assert count_step_kernels(model, decoder.prefill(requests, 6)) is None  # CUDA only


def graphed(decoder: VallexDecoder) -> VallexDecoder:
    """The decoder with graph replay on, on the CPU (with the stand-ins of the `cpu_graphs` fixture)."""
    decoder.use_cuda_graph = True
    return decoder


def test_graph_capture_restores_state_and_replays_like_eager(model, cpu_graphs):
    """The capture logic (warm-up steps, state restore, graph reuse per key) with CPU stand-ins."""
    requests = [make_request(**spec, min_frames=lo) for spec, lo in zip(THREE, (3, 17, 9), strict=True)]
    eager = VallexDecoder(model)
    replayed = graphed(VallexDecoder(model))
    for sampling in (Sampling(greedy=True), Sampling(greedy=True, in_graph=True), Sampling(in_graph=True)):
        expected = eager.generate(requests, sampling, torch.Generator().manual_seed(0))
        for _ in range(2):  # first call captures, second reuses
            got = replayed.generate(requests, sampling, torch.Generator().manual_seed(0))
            assert all(torch.equal(a.codes, b.codes) for a, b in zip(expected, got, strict=True))
    (key,) = replayed.caches.keys()
    assert len(replayed.cache_for(*key).graphs) == 3 == len(cpu_graphs)


@pytest.mark.parametrize("sampling", [Sampling(greedy=True), Sampling(in_graph=True)], ids=["step", "sample+step"])
def test_capture_all_captures_every_bucket_up_front_and_nothing_later(model, cpu_graphs, sampling):
    decoder = graphed(VallexDecoder(model, max_batch=3, capacity_buckets=(128, 256)))
    assert decoder.capture_all(sampling) == 3 * 2 == len(cpu_graphs)  # batch buckets (1, 2, 3)
    assert decoder.caches.pinned() == {(b, c) for b in (1, 2, 3) for c in (128, 256)}
    # every pinned cache is a view of one arena sized for the largest bucket: memory of one cache
    from iris_pipeline.models.vallex.decode import DecodeArena, StaticARCache

    pinned = [decoder.cache_for(b, c) for b, c in sorted(decoder.caches.pinned())]
    assert len({c.keys.data_ptr() for c in pinned}) == 1 and len({c.values.data_ptr() for c in pinned}) == 1
    arena = DecodeArena.bytes_for(model, 3, 256, noise=sampling.in_graph)
    small = sum(StaticARCache.bytes_for(model, b, c, in_arena=True) for b, c in decoder.caches.pinned())
    assert decoder.caches.nbytes == arena + small == pinned[0].arena.nbytes + sum(c.nbytes for c in pinned)
    assert all(decoder.cache_for(b, c).noise is not None for b, c in decoder.caches.keys()) == sampling.in_graph
    requests = [make_request(**spec, min_frames=2) for spec in THREE]
    expected = VallexDecoder(model).generate(requests, sampling, torch.Generator().manual_seed(0))
    got = decoder.generate(requests, sampling, torch.Generator().manual_seed(0))
    assert all(torch.equal(a.codes, b.codes) for a, b in zip(expected, got, strict=True))
    assert len(cpu_graphs) == 6 and decoder.uncaptured_steps == 0  # replayed, not captured
    # a need beyond the largest bucket runs eagerly in its own cache: still no capture
    long = [make_request(seed=9, text_len=30, prompt_text=5, prompt_frames=200, max_frames=40)]
    alone = VallexDecoder(model).generate(long, sampling, torch.Generator().manual_seed(1))
    assert torch.equal(decoder.generate(long, sampling, torch.Generator().manual_seed(1))[0].codes, alone[0].codes)
    assert len(cpu_graphs) == 6 and decoder.uncaptured_steps > 0
    assert (1, 512) in decoder.caches.keys()
    # releasing drops what was not captured up front, and only that
    freed = decoder.release_caches()
    assert freed > 0 and set(decoder.caches.keys()) == decoder.caches.pinned()
    assert decoder.release_caches() == 0


def test_decode_caches_evict_least_recently_used_by_bytes(model):
    from iris_pipeline.errors import ConfigError
    from iris_pipeline.models.vallex.decode import DecodeCaches, StaticARCache

    size = StaticARCache.bytes_for(model, 2, 128)
    assert StaticARCache.allocate(model, 2, 128).nbytes == size
    caches = DecodeCaches(max_bytes=3 * size)

    def get(key, entries=1):  # an entry of `entries` x size bytes under `key`
        shape = (2 * entries, 128)
        return caches.get(key, StaticARCache.bytes_for(model, *shape), lambda: StaticARCache.allocate(model, *shape))

    a, b, c, d, e = ((k, 0) for k in range(5))
    for key in (a, b, c):
        get(key)
    caches.pin(b)
    get(a)  # a is now the most recently used: c is the least
    get(d)
    assert caches.keys() == [b, a, d] and caches.nbytes == 3 * size
    get(e)  # evicts a, never the pinned b
    assert caches.keys() == [b, d, e]
    with pytest.raises(ConfigError, match="do not fit the budget"):
        get((9, 0), entries=3)  # even without d and e, the pinned b leaves too little room
    assert caches.keys() == [b, d, e]  # and nothing was evicted for nothing
    assert caches.release() == 2 * size and caches.keys() == [b]


@pytest.mark.gpu
def test_cuda_graph_step_equals_eager_step(model):
    cuda_model = models.build("vallex", "tiny", seed=0).cuda()
    requests = synthetic_requests(3, text_tokens=20, prompt_frames=30, frames=40)
    for in_graph in (False, True):
        sampling = Sampling(greedy=True, in_graph=in_graph)
        eager = VallexDecoder(cuda_model, use_cuda_graph=False).generate(requests, sampling, return_logits=True)
        graph = VallexDecoder(cuda_model, use_cuda_graph=True).generate(requests, sampling, return_logits=True)
        for a, b in zip(eager, graph, strict=True):
            assert torch.equal(a.codes, b.codes)
            torch.testing.assert_close(a.ar_logits, b.ar_logits, atol=1e-5, rtol=0)
    # sampled (Gumbel) draws replayed from the graph equal the eager ones for the same seed
    sampling = Sampling(in_graph=True)
    runs = [VallexDecoder(cuda_model, use_cuda_graph=g).generate(
        requests, sampling, torch.Generator(device="cuda").manual_seed(1)) for g in (False, True)]
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a.codes, b.codes)


# ---- buckets ------------------------------------------------------------------------------------

def test_batch_and_capacity_buckets():
    assert decode_module().batch_buckets(16) == (1, 2, 4, 8, 16)
    assert decode_module().batch_buckets(6) == (1, 2, 4, 6)
    assert decode_module().batch_buckets(1) == (1,)
    bucket_up = decode_module().bucket_up
    assert [bucket_up(v, (512, 1024, 2048)) for v in (1, 512, 513, 2048, 2049, 5000)] == \
        [512, 512, 1024, 2048, 4096, 6144]
    assert bucket_up(777, None) == 777
    assert decode_module().check_capacity_buckets([1024, 512, 1024]) == (512, 1024)
    with pytest.raises(ValueError, match="multiples of 64"):
        decode_module().check_capacity_buckets([500])


def decode_module():  # imported late: the module-level names above are what the tests use
    from iris_pipeline.models.vallex import decode

    return decode


@pytest.mark.parametrize("sampling", [Sampling(greedy=True), Sampling(), Sampling(in_graph=True),
                                      Sampling(top_k=5, temperature=0.8, in_graph=True)],
                         ids=["greedy", "sampled", "sampled-in-graph", "top-k-in-graph"])
def test_bucketed_decode_is_exactly_the_unbucketed_decode(model, sampling):
    """Three sequences padded to a batch of 4 and to a 4x wider cache: the same logits and codes, bit for bit."""
    requests = [make_request(**spec, min_frames=lo) for spec, lo in zip(THREE, (3, 2, 5), strict=True)]
    exact = VallexDecoder(model, max_batch=None, capacity_buckets=None)
    bucketed = VallexDecoder(model, max_batch=4, capacity_buckets=(64, 512))
    want = exact.generate(requests, sampling, torch.Generator().manual_seed(3), return_logits=True)
    got = bucketed.generate(requests, sampling, torch.Generator().manual_seed(3), return_logits=True)
    # the longest prefix (text + BOS + prompt frames) and the most new frames
    needed = max(s["text_len"] + 1 + s["prompt_frames"] for s in THREE) + max(s["max_frames"] for s in THREE)
    assert needed == 75
    assert exact.caches.keys() == [(3, 128)] and bucketed.caches.keys() == [(4, 512)]
    for a, b in zip(want, got, strict=True):
        assert torch.equal(a.codes, b.codes)
        assert torch.equal(a.ar_logits, b.ar_logits)


@pytest.mark.gpu
def test_capture_all_beside_busy_workers_then_replays_like_eager():
    """Capture up front while another thread allocates and synchronises (as the pipeline's workers
    do): thread-local capture neither fails nor records their work; replay equals eager."""
    import threading

    cuda_model = models.build("vallex", "tiny", seed=0).cuda()
    stop = threading.Event()

    def busy() -> None:
        with torch.cuda.stream(torch.cuda.Stream()):
            while not stop.is_set():
                x = torch.randn(256, 256, device="cuda")
                float((x @ x).sum())  # a host sync: forbidden in another thread under a global capture

    worker = threading.Thread(target=busy, daemon=True)
    worker.start()
    try:
        decoder = VallexDecoder(cuda_model, use_cuda_graph=True, max_batch=4, capacity_buckets=(128, 256))
        assert decoder.capture_all(Sampling(greedy=True)) == 3 * 2
    finally:
        stop.set()
        worker.join()
    requests = synthetic_requests(3, text_tokens=20, prompt_frames=30, frames=40)
    eager = VallexDecoder(cuda_model, max_batch=4, capacity_buckets=(128, 256))
    for a, b in zip(eager.generate(requests, Sampling(greedy=True), return_logits=True),
                    decoder.generate(requests, Sampling(greedy=True), return_logits=True), strict=True):
        assert torch.equal(a.codes, b.codes)
        torch.testing.assert_close(a.ar_logits, b.ar_logits, atol=1e-5, rtol=0)
    assert decoder.uncaptured_steps == 0
