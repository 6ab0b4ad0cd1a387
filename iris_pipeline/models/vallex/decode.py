"""Fast VALL-E X decoding: batched AR with a static KV cache (optionally CUDA-graph replayed), batched NAR.

Layout of the AR cache (one row per sequence, `capacity` columns): each sequence's prefix
[text tokens ; BOS ; prompt codebook-0 codes] is LEFT-padded so that every prefix ends at the same
column P. Step t then writes column P + t for all sequences at once, so the step has static shapes
(write column, audio positions and step index live in device tensors that the step itself advances).
Padding columns are never valid keys; a padding query row of the prefill only sees itself.

Semantics are the official `VALLE.inference` (see `model.py` for the uncached reference):
* sampling: logits / temperature (if != 1), top-k if top_k > 0, softmax, one multinomial draw from a
  seeded `torch.Generator` (in float32); `greedy=True` takes the argmax instead. With
  `in_graph=True` the draw is a Gumbel-max over noise drawn up front from the same generator (the
  same distribution, another random stream), so sampling, stop rules and the model step form ONE
  replayable graph per frame;
* stop: a sequence ends when it samples EOS (1024) or when it has `max_frames` new frames
  (default: the official cap 16 x its number of text tokens); EOS is suppressed while it has fewer
  than `min_frames` (default 1, so a sequence is never empty: the official code crashes then);
* NAR: stages 1..7, greedy, no attention mask, the whole prompt (8 codebooks) as prefix.

Buckets: a batch of n sequences decodes in the cache of the smallest batch bucket >= n, and a
prefix + new frames of length L in the smallest capacity bucket >= L, so a few (batch, capacity)
step graphs serve every request and can all be captured before any work starts (`capture_all`).
Bucketing is exact: padding rows are finished from the start, only the real rows are sampled (same
draws from the generator as an unpadded batch), and padding columns are masked keys. Every capacity
is a whole number of `CAPACITY_GRANULE` columns: the vectorised reductions over the key axis then
group the real columns alike in any capacity, and masked columns only add zeros, so a bucket's
logits equal those of the smallest possible cache bit for bit (on the CPU; tested).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.models.vallex.config import EOS_ID, MAX_NEW_FRAMES_PER_TEXT_TOKEN
from iris_pipeline.models.vallex.model import Vallex

# Cache columns (prefix + new frames) of the AR decode: a small fixed set, so that the step graph of
# every bucket can be captured up front. A need above the largest rounds up to a multiple of it.
CAPACITY_BUCKETS: tuple[int, ...] = (512, 1024, 1536, 2048)
# Every capacity is a multiple of this many columns (see the module doc: exact bucketing).
CAPACITY_GRANULE = 64
# Uniform noise of padding rows: any value in (0, 1) keeps the Gumbel transform finite.
_PADDING_NOISE = 0.5


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """Batch sizes a decode is padded to: powers of two below `max_batch`, then `max_batch` itself."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    sizes = [1 << k for k in range(max_batch.bit_length()) if (1 << k) < max_batch]
    return (*sizes, max_batch)


def check_capacity_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    """Sorted, distinct, positive multiples of `CAPACITY_GRANULE` (ValueError otherwise)."""
    if not buckets:
        raise ValueError("capacity buckets: at least one is needed")
    bad = [b for b in buckets if b < 1 or b % CAPACITY_GRANULE]
    if bad:
        raise ValueError(f"capacity buckets must be positive multiples of {CAPACITY_GRANULE}, got {bad[0]}")
    return tuple(sorted(set(buckets)))


def bucket_up(value: int, buckets: Sequence[int] | None) -> int:
    """The smallest bucket >= value; beyond the largest, the next multiple of it; no buckets: value."""
    if not buckets:
        return value
    for bucket in buckets:
        if bucket >= value:
            return bucket
    return math.ceil(value / buckets[-1]) * buckets[-1]


@dataclass
class DecodeRequest:
    """One sequence to decode.

    text: LongTensor [S] = prompt phoneme ids ++ target phoneme ids; languages: LongTensor [S], the
    model language id of each text token; prompt_codes: LongTensor [T_p, 8] (T_p may be 0).
    """

    text: torch.Tensor
    languages: torch.Tensor
    prompt_codes: torch.Tensor
    min_frames: int | None = None
    max_frames: int | None = None

    def frame_limits(self) -> tuple[int, int]:
        """(min, max) new frames, with the official defaults filled in."""
        max_frames = self.max_frames
        if max_frames is None:
            max_frames = MAX_NEW_FRAMES_PER_TEXT_TOKEN * int(self.text.shape[0])
        min_frames = 1 if self.min_frames is None else self.min_frames
        if max_frames < 1:
            raise InputError(f"vallex: max_frames must be >= 1, got {max_frames}")
        if not 0 <= min_frames <= max_frames:
            raise InputError(f"vallex: min_frames {min_frames} must lie in [0, max_frames={max_frames}]")
        return min_frames, max_frames


@dataclass
class DecodeResult:
    codes: torch.Tensor  # LongTensor [T_g, 8]
    ar_logits: torch.Tensor | None = None  # [T_g, 1025]: the logits each AR frame was drawn from


@dataclass(frozen=True)
class Sampling:
    top_k: int = -100  # <= 0: no top-k (official default)
    temperature: float = 1.0
    greedy: bool = False
    in_graph: bool = False  # Gumbel-max on pre-drawn noise, fused with the step (see module doc)


def filtered_logits(logits: torch.Tensor, step: int | torch.Tensor, min_frames: torch.Tensor,
                    sampling: Sampling) -> torch.Tensor:
    """float32 logits [B, V] after temperature, EOS suppression before `min_frames`, and top-k."""
    logits = logits.float()
    if not sampling.greedy and sampling.temperature != 1.0:
        logits = logits / sampling.temperature
    is_eos = torch.arange(logits.shape[1], device=logits.device) == EOS_ID
    logits = logits.masked_fill((min_frames > step).unsqueeze(1) & is_eos, float("-inf"))
    if not sampling.greedy and sampling.top_k > 0:
        kth = torch.topk(logits, min(sampling.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, step: int, min_frames: torch.Tensor, max_frames: torch.Tensor,
                finished: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """Next codebook-0 token [B] of every sequence from logits [B, 1025] at new-frame index `step`."""
    logits = filtered_logits(logits, step, min_frames, sampling)
    if sampling.greedy:
        token = logits.argmax(dim=-1)
    else:
        token = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)[:, 0]
    done = finished | (max_frames <= step)
    return torch.where(done, torch.full_like(token, EOS_ID), token)


@dataclass
class DecodeArena:
    """The large buffers of the caches of the graphs captured up front, shared by all of them: one
    decoder decodes one batch at a time, and each decode rewrites the state it reads (prefill), so
    every bucket's cache is a view of the same memory, sized for the largest bucket."""

    keys: torch.Tensor  # flat
    values: torch.Tensor
    valid: torch.Tensor
    tokens: torch.Tensor
    noise: torch.Tensor | None  # the in-graph sampler's, where it is used

    @classmethod
    def allocate(cls, model: Vallex, batch: int, capacity: int, noise: bool) -> DecodeArena:
        p = next(model.parameters())
        cfg = model.config
        columns = batch * capacity
        kv = cfg.num_layers * columns * cfg.nhead * cfg.head_dim
        return cls(keys=torch.zeros(kv, dtype=p.dtype, device=p.device),
                   values=torch.zeros(kv, dtype=p.dtype, device=p.device),
                   valid=torch.zeros(columns, dtype=torch.bool, device=p.device),
                   tokens=torch.zeros(columns, dtype=torch.long, device=p.device),
                   noise=torch.full((columns * (cfg.num_audio_tokens + 1),), _PADDING_NOISE, device=p.device)
                   if noise else None)

    @staticmethod
    def bytes_for(model: Vallex, batch: int, capacity: int, noise: bool) -> int:
        cfg = model.config
        columns = batch * capacity
        kv = 2 * cfg.num_layers * columns * cfg.nhead * cfg.head_dim * next(model.parameters()).element_size()
        return kv + columns * (1 + 8) + (StaticARCache.noise_bytes_for(model, batch, capacity) if noise else 0)

    @property
    def nbytes(self) -> int:
        tensors = [self.keys, self.values, self.valid, self.tokens]
        if self.noise is not None:
            tensors.append(self.noise)
        return sum(t.numel() * t.element_size() for t in tensors)


def _view(flat: torch.Tensor, *shape: int) -> torch.Tensor:
    """A contiguous view of the first elements of a flat buffer."""
    return flat[: math.prod(shape)].view(shape)


@dataclass
class StaticARCache:
    """Preallocated decode state for `batch` sequences of up to `capacity` positions."""

    keys: torch.Tensor  # [layers, B, H, capacity, head_dim]
    values: torch.Tensor
    valid: torch.Tensor  # [B, capacity] bool: column holds a real key
    token: torch.Tensor  # [B] long: the token fed at the next step
    audio_pos: torch.Tensor  # [B] long: its position in the AR audio stream
    column: torch.Tensor  # [1] long: the cache column the next step writes
    logits: torch.Tensor  # [B, 1025]: written by every step
    # state of the in-graph sampler
    step: torch.Tensor  # [1] long: new-frame index of the next sample
    finished: torch.Tensor  # [B] bool
    min_frames: torch.Tensor  # [B] long
    max_frames: torch.Tensor  # [B] long
    tokens: torch.Tensor  # [B, capacity] long: sampled tokens by new-frame index
    noise: torch.Tensor | None = None  # [capacity, B, V] uniform noise (allocated on first use)
    arena: DecodeArena | None = None  # where keys, values, valid, tokens (and noise) live, if shared
    graphs: dict = field(default_factory=dict)
    # tensors outside the cache that the captured graphs read (the positional table they saw):
    # held so that a regrown table never frees memory a graph still reads
    graph_inputs: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def allocate(cls, model: Vallex, batch: int, capacity: int, arena: DecodeArena | None = None) -> StaticARCache:
        """Its own buffers, or views of `arena` (which must be at least as large)."""
        p = next(model.parameters())
        cfg = model.config
        shape = (cfg.num_layers, batch, cfg.nhead, capacity, cfg.head_dim)

        def longs(*size: int) -> torch.Tensor:
            return torch.zeros(size, dtype=torch.long, device=p.device)

        if arena is None:
            big = dict(keys=torch.zeros(shape, dtype=p.dtype, device=p.device),
                       values=torch.zeros(shape, dtype=p.dtype, device=p.device),
                       valid=torch.zeros(batch, capacity, dtype=torch.bool, device=p.device),
                       tokens=longs(batch, capacity))
        else:
            big = dict(keys=_view(arena.keys, *shape), values=_view(arena.values, *shape),
                       valid=_view(arena.valid, batch, capacity), tokens=_view(arena.tokens, batch, capacity),
                       noise=None if arena.noise is None else _view(arena.noise, capacity, batch,
                                                                     cfg.num_audio_tokens + 1))
        return cls(
            token=longs(batch), audio_pos=longs(batch), column=longs(1),
            logits=torch.zeros(batch, cfg.num_audio_tokens + 1, dtype=p.dtype, device=p.device),
            step=longs(1), finished=torch.zeros(batch, dtype=torch.bool, device=p.device),
            min_frames=longs(batch), max_frames=longs(batch), arena=arena, **big,
        )

    @staticmethod
    def bytes_for(model: Vallex, batch: int, capacity: int, in_arena: bool = False) -> int:
        """Bytes `allocate(model, batch, capacity)` takes (the noise of the in-graph sampler apart);
        `in_arena`: only the small per-batch state, the rest being views of an arena."""
        p = next(model.parameters())
        cfg = model.config
        small = 8 * (4 * batch + 2) + batch + batch * (cfg.num_audio_tokens + 1) * p.element_size()
        if in_arena:
            return small
        kv = 2 * cfg.num_layers * batch * cfg.nhead * capacity * cfg.head_dim * p.element_size()
        return small + kv + batch * capacity * (1 + 8)  # + valid, tokens

    @staticmethod
    def noise_bytes_for(model: Vallex, batch: int, capacity: int) -> int:
        return capacity * batch * (model.config.num_audio_tokens + 1) * 4

    def allocate_noise(self) -> None:
        """The in-graph sampler's uniform noise, float32 [capacity, B, V]."""
        if self.noise is None:
            self.noise = torch.full((self.capacity, self.batch, self.logits.shape[1]), _PADDING_NOISE,
                                    device=self.logits.device)

    @property
    def nbytes(self) -> int:
        """Bytes this cache holds on its own (not counting an arena it is a view of)."""
        tensors = [self.token, self.audio_pos, self.column, self.logits, self.step, self.finished,
                   self.min_frames, self.max_frames]
        if self.arena is None:
            tensors += [self.keys, self.values, self.valid, self.tokens]
        if self.noise is not None and (self.arena is None or self.arena.noise is None):
            tensors.append(self.noise)
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def batch(self) -> int:
        return self.keys.shape[1]

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def state(self) -> list[torch.Tensor]:
        """Every small tensor a step changes (K/V columns beyond the valid ones are scratch)."""
        return [self.valid, self.token, self.audio_pos, self.column, self.logits, self.step, self.finished,
                self.tokens]


def ar_step(model: Vallex, cache: StaticARCache) -> None:
    """One AR step for every sequence: static shapes, in-place state, no host sync (CUDA-graph safe)."""
    cache.valid.index_fill_(1, cache.column, True)
    x = model.ar_audio_position.at(model.ar_audio_embedding(cache.token), cache.audio_pos).unsqueeze(1)
    # one additive mask for all layers (a boolean one would be converted in every layer)
    bias = torch.zeros_like(cache.valid, dtype=cache.keys.dtype).masked_fill_(~cache.valid, float("-inf"))
    bias = bias[:, None, None, :]
    for i, layer in enumerate(model.ar_decoder.layers):
        q, k, v = layer.self_attn.project(layer.norm1(x))
        cache.keys[i].index_copy_(2, cache.column, k)
        cache.values[i].index_copy_(2, cache.column, v)
        h = x + layer.self_attn.attend(q, cache.keys[i], cache.values[i], bias)
        x = layer.feed_forward(h)
    cache.logits.copy_(model.ar_predict_layer(model.ar_decoder.final_norm(x[:, 0])))
    cache.column.add_(1)
    cache.audio_pos.add_(1)


def gumbel_argmax(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """argmax(logits + Gumbel noise): a draw from softmax(logits), given uniform noise in [0, 1)."""
    return (logits - torch.log(-torch.log(uniform))).argmax(dim=-1)


def sample_and_step(model: Vallex, cache: StaticARCache, sampling: Sampling) -> None:
    """In-graph sampler: draw frame `cache.step` from `cache.logits`, record it, then run `ar_step` on it."""
    logits = filtered_logits(cache.logits, cache.step, cache.min_frames, sampling)
    if sampling.greedy:
        token = logits.argmax(dim=-1)
    else:
        token = gumbel_argmax(logits, cache.noise.index_select(0, cache.step)[0])
    done = cache.finished | (cache.max_frames <= cache.step)
    token = torch.where(done, torch.full_like(token, EOS_ID), token)
    cache.tokens.index_copy_(1, cache.step, token.unsqueeze(1))
    cache.finished.logical_or_(token == EOS_ID)
    cache.token.copy_(token)
    cache.step.add_(1)
    ar_step(model, cache)


def capture_graph(fn: Callable[[], None], state: list[torch.Tensor], warmup: int = 2,
                  pool: tuple | None = None) -> torch.cuda.CUDAGraph:
    """Capture `fn` in a CUDA graph; the tensors in `state` are left as they were before.

    `thread_local` capture: CUDA calls of other threads (the pipeline's other workers) neither fail
    the capture nor get captured. `pool` (a `torch.cuda.graph_pool_handle()`) is shared by a
    decoder's graphs: a step's temporaries die inside its capture (its results are copied into the
    cache), and one thread replays the graphs one at a time, so they can reuse the same memory.
    """
    saved = [t.clone() for t in state]
    device = state[0].device
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):  # allocations and lazy initialisation happen outside the capture
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        fn()
    for tensor, value in zip(state, saved, strict=True):
        tensor.copy_(value)
    # The warm-up wrote K/V into columns that are invalid again; later steps overwrite them.
    return graph


class DecodeCaches:
    """A decoder's static caches by (batch bucket, capacity bucket): least recently used first out,
    bounded in bytes. Pinned entries (those whose graphs were captured up front) are never evicted;
    `release()` drops every other one. Thread-safe: a benchmark may release between windows."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, int], StaticARCache] = OrderedDict()
        self._pinned: set[tuple[int, int]] = set()
        self._reserved = 0  # bytes held outside the entries (the arena of the pinned caches)
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._reserved + sum(entry.nbytes for entry in self._entries.values())

    def reserve(self, size: int, allocate: Callable[[], Any]) -> Any:
        """Count `size` bytes held for good (never evicted) and make them with `allocate()`."""
        with self._lock:
            self._make_room(size, keep=None)
            made = allocate()
            self._reserved += size
            return made

    def keys(self) -> list[tuple[int, int]]:
        with self._lock:
            return list(self._entries)

    def pinned(self) -> set[tuple[int, int]]:
        with self._lock:
            return set(self._pinned)

    def get(self, key: tuple[int, int], size: int, allocate: Callable[[], StaticARCache]) -> StaticARCache:
        """The entry for `key` (now the most recently used); made by `allocate()` (`size` bytes) if absent."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
            self._make_room(size, keep=None)
            entry = self._entries[key] = allocate()
            return entry

    def grow(self, key: tuple[int, int], size: int, add: Callable[[], None]) -> None:
        """Make room for `size` more bytes of the entry `key` (never evicting it), then `add()` them."""
        with self._lock:
            self._make_room(size, keep=key)
            add()

    def pin(self, key: tuple[int, int]) -> None:
        with self._lock:
            if key not in self._entries:
                raise KeyError(key)
            self._pinned.add(key)

    def release(self) -> int:
        """Drop every entry that is not pinned; the bytes dropped."""
        with self._lock:
            dropped = [k for k in self._entries if k not in self._pinned]
            freed = sum(self._entries[k].nbytes for k in dropped)
            for key in dropped:
                del self._entries[key]
            return freed

    def _make_room(self, size: int, keep: tuple[int, int] | None) -> None:
        """Evict unpinned entries, oldest first, until `size` more bytes fit; evict nothing if they cannot."""
        if self.max_bytes is None:
            return
        held = self._reserved + sum(entry.nbytes for entry in self._entries.values())
        evictable = [k for k in self._entries if k not in self._pinned and k != keep]  # oldest first
        staying = held - sum(self._entries[k].nbytes for k in evictable)
        if staying + size > self.max_bytes:
            pinned = self._reserved + sum(self._entries[k].nbytes for k in self._pinned)
            raise ConfigError(f"vallex decode caches: {size / 2**20:.1f} MiB more do not fit the budget of "
                              f"{self.max_bytes / 2**20:.1f} MiB ({pinned / 2**20:.1f} MiB held by graphs "
                              f"captured up front)")
        for key in evictable:
            if held + size <= self.max_bytes:
                break
            held -= self._entries.pop(key).nbytes


@torch.no_grad()
def decode_nar(model: Vallex, requests: list[DecodeRequest], codebook0: list[torch.Tensor]) -> list[torch.Tensor]:
    """Codes [T_g, 8] of every request from its generated codebook 0, all sequences in one batch."""
    emb = model.nar_audio_embeddings
    n_q = model.config.num_quantizers
    dev, d = next(model.parameters()).device, model.config.d_model
    dtype = next(model.parameters()).dtype
    texts = [model.nar_text(r.text.to(dev), r.languages.to(dev)) for r in requests]
    prompts = [r.prompt_codes.to(dev).long() for r in requests]
    gens = [c.to(dev).long() for c in codebook0]
    text_lens = [t.shape[0] for t in texts]
    prompt_lens = [p.shape[0] for p in prompts]
    gen_lens = [g.shape[0] for g in gens]
    total = [s + p + g for s, p, g in zip(text_lens, prompt_lens, gen_lens, strict=True)]
    batch, width, gen_width = len(requests), max(total), max(gen_lens)
    model.nar_audio_position.ensure_length(width)

    text_part = torch.zeros(batch, width, d, dtype=dtype, device=dev)
    audio_part = torch.zeros(batch, width, d, dtype=dtype, device=dev)
    audio_positions = torch.zeros(batch, width, dtype=torch.long, device=dev)
    is_audio = torch.zeros(batch, width, 1, dtype=dtype, device=dev)
    gen_cols = torch.zeros(batch, gen_width, dtype=torch.long, device=dev)
    gen_valid = torch.zeros(batch, gen_width, dtype=torch.bool, device=dev)
    for b in range(batch):
        s, p, g = text_lens[b], prompt_lens[b], gen_lens[b]
        text_part[b, :s] = texts[b].to(dtype)
        audio = emb[0](torch.cat([prompts[b][:, 0], gens[b]]))
        for j in range(1, n_q):  # the prompt is complete: all 8 codebooks
            audio[:p] = audio[:p] + emb[j](prompts[b][:, j])
        audio_part[b, s:s + p + g] = audio.to(dtype)
        audio_positions[b, s:s + p + g] = torch.arange(p + g, device=dev)
        is_audio[b, s:s + p + g] = 1
        gen_cols[b, :g] = torch.arange(s + p, s + p + g, device=dev)
        gen_valid[b, :g] = True
    allowed = None
    if min(total) != width:  # padding keys exist: hide them from every query
        lengths = torch.tensor(total, device=dev)
        allowed = (torch.arange(width, device=dev)[None, :] < lengths[:, None])[:, None, None, :]
    audio_pe = model.nar_audio_position.alpha * model.nar_audio_position.table[audio_positions] * is_audio

    codes = [g[:, None] for g in gens]
    gather = gen_cols.unsqueeze(-1).expand(-1, -1, d)
    for stage in range(1, n_q):
        x = text_part + audio_part + audio_pe
        h = model.nar_decoder(x, allowed, model.nar_stage_vector(stage))
        logits = model.nar_predict_layers[stage - 1](torch.gather(h, 1, gather))
        codes_stage = logits.argmax(dim=-1)  # [B, gen_width]
        if stage < n_q - 1:
            delta = emb[stage](codes_stage).to(dtype) * gen_valid.unsqueeze(-1)
            audio_part = audio_part.scatter_add(1, gather, delta)
        codes = [torch.cat([c, codes_stage[b, :gen_lens[b], None]], dim=1) for b, c in enumerate(codes)]
    return codes


class VallexDecoder:
    """Batched AR + NAR decoding for one model (bound to the model's current device and dtype).

    use_cuda_graph: replay the step as a `torch.cuda.CUDAGraph` (CUDA only), one per (batch
    bucket, capacity bucket, sampler). `capture_all()` captures every one of them up front and
    pins their caches, which share one `DecodeArena` sized for the largest bucket; from then on
    nothing is captured (a shape outside the buckets runs eagerly, in a cache of its own).
    Without `capture_all()` a graph is captured on first use.
    max_batch: batch sizes are padded to `batch_buckets(max_batch)`; None: not padded.
    capacity_buckets: cache capacities (see `bucket_up`); None: what a decode needs, rounded up to
    `CAPACITY_GRANULE` only.
    cache_bytes: budget of the decode caches (LRU by bytes); None: unbounded.
    eos_check_every: how often (in steps) the host checks whether every sequence has ended; a check
    is a device sync, and steps run after every sequence ended only cost time (their tokens are EOS).
    """

    def __init__(self, model: Vallex, use_cuda_graph: bool = False, eos_check_every: int = 8,
                 max_batch: int | None = None, capacity_buckets: Sequence[int] | None = CAPACITY_BUCKETS,
                 cache_bytes: int | None = None):
        self.model = model
        self.device = next(model.parameters()).device
        self.use_cuda_graph = bool(use_cuda_graph) and self.device.type == "cuda"
        self.batch_buckets = batch_buckets(max_batch) if max_batch is not None else None
        self.capacity_buckets = check_capacity_buckets(capacity_buckets) if capacity_buckets else None
        self.eos_check_every = max(1, eos_check_every)
        self.caches = DecodeCaches(cache_bytes)
        self.captured_up_front = False
        self.uncaptured_steps = 0  # steps run eagerly after capture_all() (a shape outside the buckets)
        self._graph_pool: tuple | None = None

    # ---- caches and graphs ------------------------------------------------------------------
    def cache_for(self, batch: int, needed: int, noise: bool = False) -> StaticARCache:
        """The cache of `batch`'s bucket with room for `needed` columns (with the sampler's noise)."""
        capacity = bucket_up(needed, self.capacity_buckets or (CAPACITY_GRANULE,))
        key = (bucket_up(batch, self.batch_buckets), capacity)
        size = StaticARCache.bytes_for(self.model, *key)
        cache = self.caches.get(key, size, lambda: StaticARCache.allocate(self.model, *key))
        if noise and cache.noise is None:
            self.caches.grow(key, StaticARCache.noise_bytes_for(self.model, *key), cache.allocate_noise)
        return cache

    def release_caches(self) -> int:
        """Free every decode cache whose graphs were not captured up front; the bytes freed."""
        return self.caches.release()

    def capture_all(self, sampling: Sampling) -> int:
        """Capture the step graph of every (batch bucket, capacity bucket) for `sampling` and pin
        their caches; afterwards no graph is captured. Returns the number of graphs captured."""
        if not self.use_cuda_graph:
            return 0
        if self.batch_buckets is None or self.capacity_buckets is None:
            raise ValueError("capture_all() needs batch buckets (max_batch) and capacity buckets")
        if self.captured_up_front:
            raise RuntimeError("capture_all() runs once per decoder")
        # the table covers every bucket's positions before any capture: no regrowth inside a bucket
        position = self.model.ar_audio_position
        position.ensure_length(max(self.capacity_buckets[-1], self.model.config.positional_table))
        noise = sampling.in_graph and not sampling.greedy
        biggest = (self.batch_buckets[-1], self.capacity_buckets[-1])
        arena = self.caches.reserve(DecodeArena.bytes_for(self.model, *biggest, noise=noise),
                                    lambda: DecodeArena.allocate(self.model, *biggest, noise=noise))
        captured = 0
        for batch in self.batch_buckets:
            for capacity in self.capacity_buckets:
                key = (batch, capacity)
                cache = self.caches.get(key, StaticARCache.bytes_for(self.model, *key, in_arena=True),
                                        partial(StaticARCache.allocate, self.model, *key, arena=arena))
                self.caches.pin(key)
                step_key, fn = self._step(cache, sampling)
                if step_key not in cache.graphs:
                    self._capture(cache, step_key, fn)
                    captured += 1
        self.captured_up_front = True
        return captured

    def _step(self, cache: StaticARCache, sampling: Sampling) -> tuple[tuple, Callable[[], None]]:
        """The graph key and function of one decode step with `sampling`."""
        if sampling.in_graph:
            return ("sample+step", sampling), partial(sample_and_step, self.model, cache, sampling)
        return ("step",), partial(ar_step, self.model, cache)

    def _capture(self, cache: StaticARCache, key: tuple, fn: Callable[[], None]) -> torch.cuda.CUDAGraph:
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        cache.graph_inputs.append(self.model.ar_audio_position.table)
        with torch.cuda.device(self.device):  # a capture records on the current device
            graph = cache.graphs[key] = capture_graph(fn, cache.state(), pool=self._graph_pool)
        return graph

    def _run(self, cache: StaticARCache, key: tuple, fn: Callable[[], None]) -> None:
        """`fn()` eagerly, or as a replay of its graph (captured on first use unless captured up front)."""
        if not self.use_cuda_graph:
            fn()
            return
        graph = cache.graphs.get(key)
        if graph is None:
            if self.captured_up_front:  # never capture while other work runs: eager instead
                self.uncaptured_steps += 1
                fn()
                return
            graph = self._capture(cache, key, fn)
        graph.replay()

    # ---- AR ---------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, requests: list[DecodeRequest], max_new: int, noise: bool = False) -> StaticARCache:
        """Run every prefix through the AR, fill the cache, leave the first step's logits in `cache.logits`.

        Rows past `len(requests)` (batch padding) are left empty: their keys are all invalid, and
        each step validates its own column, so they attend to themselves alone.
        """
        model = self.model
        n = len(requests)
        streams = [model.ar_stream(r.prompt_codes[:, 0].to(self.device)) for r in requests]
        texts = [model.ar_text(r.text.to(self.device), r.languages.to(self.device)) for r in requests]
        prefix_lens = [t.shape[0] + s.shape[0] for t, s in zip(texts, streams, strict=True)]
        width = max(prefix_lens)
        cache = self.cache_for(n, width + max_new, noise=noise)
        model.ar_audio_position.ensure_length(max(cache.capacity, model.config.positional_table))

        d = model.config.d_model
        dtype = cache.keys.dtype
        x = torch.zeros(n, width, d, dtype=dtype, device=self.device)
        allowed = torch.eye(width, dtype=torch.bool, device=self.device).repeat(n, 1, 1)
        cache.valid.zero_()
        for b, (text, stream, length) in enumerate(zip(texts, streams, prefix_lens, strict=True)):
            start = width - length
            x[b, start:] = torch.cat([text, model.ar_audio(stream)], dim=0).to(dtype)
            allowed[b, start:, start:] = model.ar_allowed_mask(text.shape[0], stream.shape[0], self.device)
            cache.valid[b, start:width] = True
        allowed = allowed.unsqueeze(1)
        for i, layer in enumerate(model.ar_decoder.layers):
            q, k, v = layer.self_attn.project(layer.norm1(x))
            cache.keys[i, :n, :, :width] = k
            cache.values[i, :n, :, :width] = v
            x = layer.feed_forward(x + layer.self_attn.attend(q, k, v, allowed))
        cache.logits[:n].copy_(model.ar_predict_layer(model.ar_decoder.final_norm(x[:, -1])))
        cache.column.fill_(width)
        cache.audio_pos.zero_()
        cache.audio_pos[:n].copy_(torch.tensor([s.shape[0] for s in streams], device=self.device))
        cache.token.fill_(EOS_ID)
        return cache

    @torch.no_grad()
    def decode_ar(self, requests: list[DecodeRequest], sampling: Sampling | None = None,
                  generator: torch.Generator | None = None,
                  return_logits: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Codebook 0 of the new frames of every request ([T_g] each), and optionally their logits."""
        sampling = sampling or Sampling()
        limits = [r.frame_limits() for r in requests]
        n = len(requests)
        max_new = max(hi for _, hi in limits)
        # Early exit is possible only once every sequence may stop.
        first_check = max(lo for lo, _ in limits)
        can_stop_early = any(lo < hi for lo, hi in limits)
        noise = sampling.in_graph and not sampling.greedy

        cache = self.prefill(requests, max_new, noise=noise)
        # padding rows: finished from the start (EOS every step, never holding up the early exit)
        cache.min_frames.zero_()
        cache.max_frames.zero_()
        cache.min_frames[:n].copy_(torch.tensor([lo for lo, _ in limits]))
        cache.max_frames[:n].copy_(torch.tensor([hi for _, hi in limits]))
        cache.finished.fill_(True)
        cache.finished[:n] = False
        cache.step.zero_()
        cache.tokens.fill_(EOS_ID)
        if noise:
            # drawn for the real rows only, in the order an unpadded batch draws them
            drawn = torch.rand(max_new, n, cache.noise.shape[2], generator=generator, device=self.device)
            cache.noise[:max_new, :n].copy_(drawn)
            cache.noise[:max_new, n:].fill_(_PADDING_NOISE)
        fused_key, fused = self._step(cache, sampling)
        plain_key, plain = self._step(cache, Sampling())

        logits_seen = [] if return_logits else None
        steps = max_new
        for t in range(max_new):
            if logits_seen is not None:
                logits_seen.append(cache.logits[:n].float().clone())
            if sampling.in_graph:
                self._run(cache, fused_key, fused)
            else:
                token = sample_next(cache.logits[:n], t, cache.min_frames[:n], cache.max_frames[:n],
                                    cache.finished[:n], sampling, generator)
                cache.tokens[:n, t] = token
                cache.finished[:n] |= token == EOS_ID
                if t + 1 < max_new:
                    cache.token[:n].copy_(token)
                    self._run(cache, plain_key, plain)
            if can_stop_early and t + 1 >= first_check and (t + 1) % self.eos_check_every == 0 \
                    and bool(cache.finished.all()):
                steps = t + 1
                break
        tokens = cache.tokens[:n, :steps].clone()
        is_eos = tokens == EOS_ID
        lengths = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1),
                              torch.full((n,), steps, device=self.device)).tolist()
        codes = [tokens[b, :length] for b, length in enumerate(lengths)]
        logits = None
        if logits_seen is not None:
            stacked = torch.stack(logits_seen, dim=1)
            logits = [stacked[b, :length] for b, length in enumerate(lengths)]
        return codes, logits

    # ---- NAR --------------------------------------------------------------------------------
    def decode_nar(self, requests: list[DecodeRequest], codebook0: list[torch.Tensor]) -> list[torch.Tensor]:
        """Codes [T_g, 8] of every request from its generated codebook 0, all sequences in one batch."""
        return decode_nar(self.model, requests, codebook0)

    # ---- both ---------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, requests: list[DecodeRequest], sampling: Sampling | None = None,
                 generator: torch.Generator | None = None, return_logits: bool = False) -> list[DecodeResult]:
        """AR then NAR for every request, batched."""
        if not requests:
            return []
        codebook0, logits = self.decode_ar(requests, sampling, generator, return_logits)
        codes = self.decode_nar(requests, codebook0)
        return [DecodeResult(codes=c, ar_logits=None if logits is None else logits[b])
                for b, c in enumerate(codes)]


# ---- continuous batching: a fixed set of slots ----------------------------------------------------
#
# Each slot of a `SlotCache` holds one sequence at its own columns [0, prefix + frames) of its own
# cache row, with its own position, step and random stream: rows never read each other, so a
# sequence's codes are a function of its request and stream key alone (batch-invariant), whatever
# shares the batch and whenever it joined. A sequence is prefilled alone into a free slot and joins
# the running batch at the next step; once finished it leaves and its slot is reset for the next.
# The step runs over the first `b` slots and the first `c` columns (b and c from the batch and
# capacity buckets: one static-shape graph per (b, c), all captured up front).

_MASK32 = 0xFFFF_FFFF


def stream_key(seed: int, *counters: int) -> int:
    """A 63-bit random-stream key for `seed` and counters (e.g. chunk, piece), stable across runs."""
    digest = hashlib.blake2b(repr((int(seed), *map(int, counters))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Wellons' lowbias32) of int64 values in [0, 2^32), kept in that range."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def counter_uniform(key: torch.Tensor, step: torch.Tensor, width: int) -> torch.Tensor:
    """Uniform noise float32 [B, width] in (0, 1), a pure function of (key[b], step[b], column).

    Counter-based: nothing is drawn from a generator, so it is the same on every device, inside a
    CUDA graph, and for a row whatever the other rows are. 23 random bits per value.
    """
    base = _mix32((key & _MASK32) ^ _mix32(((key >> 32) & _MASK32) ^ _mix32(step & _MASK32)))
    column = (torch.arange(width, device=key.device, dtype=torch.long) * 0x9E3779B9) & _MASK32
    bits = _mix32(_mix32(base[:, None] ^ column) ^ base[:, None])
    return ((bits >> 9).float() + 0.5) / float(1 << 23)


@dataclass
class SlotCache:
    """Decode state of `slots` sequences of up to `capacity` cache columns each (one row per slot)."""

    keys: torch.Tensor  # [layers, S, H, capacity, head_dim]
    values: torch.Tensor
    valid: torch.Tensor  # [S, capacity] bool: column holds a key of this row's sequence
    token: torch.Tensor  # [S] long: the token fed at the next step
    audio_pos: torch.Tensor  # [S] long: its position in the AR audio stream
    column: torch.Tensor  # [S] long: the column the next step writes
    logits: torch.Tensor  # [S, 1025]: the logits the next frame is drawn from
    step: torch.Tensor  # [S] long: new-frame index of the next draw
    finished: torch.Tensor  # [S] bool (a free slot is finished)
    min_frames: torch.Tensor  # [S] long
    max_frames: torch.Tensor  # [S] long
    stream: torch.Tensor  # [S] long: random-stream key of the in-graph sampler
    tokens: torch.Tensor  # [S, capacity] long: drawn tokens by new-frame index

    @classmethod
    def allocate(cls, model: Vallex, slots: int, capacity: int) -> SlotCache:
        p = next(model.parameters())
        cfg = model.config
        shape = (cfg.num_layers, slots, cfg.nhead, capacity, cfg.head_dim)

        def longs(*size: int) -> torch.Tensor:
            return torch.zeros(size, dtype=torch.long, device=p.device)

        return cls(keys=torch.zeros(shape, dtype=p.dtype, device=p.device),
                   values=torch.zeros(shape, dtype=p.dtype, device=p.device),
                   valid=torch.zeros(slots, capacity, dtype=torch.bool, device=p.device),
                   token=longs(slots), audio_pos=longs(slots), column=longs(slots),
                   logits=torch.zeros(slots, cfg.num_audio_tokens + 1, dtype=p.dtype, device=p.device),
                   step=longs(slots), finished=torch.ones(slots, dtype=torch.bool, device=p.device),
                   min_frames=longs(slots), max_frames=longs(slots), stream=longs(slots),
                   tokens=torch.full((slots, capacity), EOS_ID, dtype=torch.long, device=p.device))

    @staticmethod
    def bytes_for(model: Vallex, slots: int, capacity: int) -> int:
        cfg = model.config
        element = next(model.parameters()).element_size()
        kv = 2 * cfg.num_layers * slots * cfg.nhead * capacity * cfg.head_dim * element
        return kv + slots * capacity * (1 + 8) + slots * (8 * 7 + 1 + (cfg.num_audio_tokens + 1) * element)

    @property
    def slots(self) -> int:
        return self.keys.shape[1]

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def view(self, slots: int, capacity: int) -> SlotCache:
        """The first `slots` rows and `capacity` columns: views of this cache's memory."""
        return SlotCache(keys=self.keys[:, :slots, :, :capacity], values=self.values[:, :slots, :, :capacity],
                         valid=self.valid[:slots, :capacity], token=self.token[:slots],
                         audio_pos=self.audio_pos[:slots], column=self.column[:slots],
                         logits=self.logits[:slots], step=self.step[:slots], finished=self.finished[:slots],
                         min_frames=self.min_frames[:slots], max_frames=self.max_frames[:slots],
                         stream=self.stream[:slots], tokens=self.tokens[:slots, :capacity])

    def state(self) -> list[torch.Tensor]:
        """Every tensor a step changes apart from K/V (whose columns beyond the valid ones are scratch)."""
        return [self.valid, self.token, self.audio_pos, self.column, self.logits, self.step, self.finished,
                self.tokens]

    def clear(self, slot: int) -> None:
        """Reset a slot to free: finished, no valid key, writing column 0 (so an idle row that runs
        with the others stays in bounds and attends to its own scratch key alone)."""
        self.valid[slot].zero_()
        self.finished[slot] = True
        for tensor in (self.token, self.audio_pos, self.column, self.step, self.min_frames, self.max_frames,
                       self.stream):
            tensor[slot] = 0
        self.tokens[slot].fill_(EOS_ID)


def slot_step(model: Vallex, cache: SlotCache) -> None:
    """One AR step for every slot of `cache` (a view): each row writes its own column and attends to
    its own valid columns; finished rows stay where they are. Static shapes, no host sync."""
    cache.valid.scatter_(1, cache.column[:, None], True)
    x = model.ar_audio_position.at(model.ar_audio_embedding(cache.token), cache.audio_pos).unsqueeze(1)
    bias = torch.zeros_like(cache.valid, dtype=cache.keys.dtype).masked_fill_(~cache.valid, float("-inf"))
    bias = bias[:, None, None, :]
    cfg = model.config
    where = cache.column.view(-1, 1, 1, 1).expand(-1, cfg.nhead, 1, cfg.head_dim)
    for i, layer in enumerate(model.ar_decoder.layers):
        q, k, v = layer.self_attn.project(layer.norm1(x))
        cache.keys[i].scatter_(2, where, k)
        cache.values[i].scatter_(2, where, v)
        h = x + layer.self_attn.attend(q, cache.keys[i], cache.values[i], bias)
        x = layer.feed_forward(h)
    cache.logits.copy_(model.ar_predict_layer(model.ar_decoder.final_norm(x[:, 0])))
    moving = (~cache.finished).long()
    cache.column.add_(moving)
    cache.audio_pos.add_(moving)


def record_draw(cache: SlotCache, token: torch.Tensor) -> None:
    """Store each row's drawn token [S] at its step (EOS once done), mark the finished rows, feed the token."""
    done = cache.finished | (cache.max_frames <= cache.step)
    token = torch.where(done, torch.full_like(token, EOS_ID), token)
    cache.tokens.scatter_(1, cache.step[:, None], token[:, None])
    cache.step.add_((~cache.finished).long())  # a finished row's step stays in bounds
    cache.finished.logical_or_(token == EOS_ID)
    cache.token.copy_(token)


def slot_sample_and_step(model: Vallex, cache: SlotCache, sampling: Sampling) -> None:
    """In-graph sampler of the slots: each row draws with its own counter-based noise, then `slot_step`."""
    logits = filtered_logits(cache.logits, cache.step, cache.min_frames, sampling)
    if sampling.greedy:
        token = logits.argmax(dim=-1)
    else:
        token = gumbel_argmax(logits, counter_uniform(cache.stream, cache.step, logits.shape[1]))
    record_draw(cache, token)
    slot_step(model, cache)


@dataclass
class SlotSequence:
    """Host view of an occupied slot: its request and how far it got (no device sync needed)."""

    tag: Any
    request: DecodeRequest
    prefix: int  # cache columns of its prefix
    min_frames: int
    max_frames: int
    generator: torch.Generator | None  # the host sampler's stream (None in the in-graph sampler)
    drawn: int = 0  # frames drawn so far


@dataclass
class SlotBucket:
    """The step over the first `slots` rows and `capacity` columns: its view, function and graph."""

    view: SlotCache
    fn: Callable[[], None]
    graph: Any = None  # torch.cuda.CUDAGraph once captured


@dataclass
class SlotPool:
    """A `SlotCache` and who occupies which slot."""

    cache: SlotCache
    capture: bool  # its steps go through the buckets (replayed graphs on a GPU); else `step`, eagerly
    step: SlotBucket | None = None  # the whole cache's step, for a pool stepped eagerly
    occupants: dict[int, SlotSequence] = field(default_factory=dict)

    def free_slot(self) -> int | None:
        return next((s for s in range(self.cache.slots) if s not in self.occupants), None)


@dataclass
class FinishedSequence:
    tag: Any
    codes: torch.Tensor  # LongTensor [T_g, 8]


class SlotDecoder:
    """Continuous batching of the AR decode over `slots` slots; NAR of what finishes together.

    `admit(request, tag, key)` prefills a sequence into a free slot (it joins at the next step);
    `step()` draws one frame for every occupied slot, runs one model step, and returns the
    sequences that finished (EOS after their `min_frames`, or `max_frames`), which leave at once.
    A sequence's random stream is keyed by `key` (see `stream_key`): the host sampler draws with a
    `torch.Generator` of its own seeded with it (official `torch.multinomial` semantics), the
    in-graph sampler hashes (key, step, token) into Gumbel noise. Either way, and greedy too, a
    sequence's codes do not depend on the other slots.

    The step of b occupied slots (the highest occupied slot + 1, rounded up to a batch bucket) over
    c columns (the furthest column written, rounded up to a capacity bucket) is a view of the
    cache; with `use_cuda_graph` its graph is replayed (`capture_all()` captures every (b, c) up
    front). A sequence whose prefix + `max_frames` exceeds the largest capacity bucket gets a
    one-slot pool of its own, stepped eagerly beside the others.
    `eos_check_every`: how often the host reads the finished flags (a device sync) when no caller
    waits for a slot; `step(slot_wanted=True)` reads them at once.
    """

    def __init__(self, model: Vallex, slots: int, sampling: Sampling | None = None,
                 use_cuda_graph: bool = False, capacity_buckets: Sequence[int] = CAPACITY_BUCKETS,
                 eos_check_every: int = 8, cache_bytes: int | None = None):
        self.model = model
        self.device = next(model.parameters()).device
        self.sampling = sampling or Sampling()
        self.use_cuda_graph = bool(use_cuda_graph) and self.device.type == "cuda"
        self.batch_buckets = batch_buckets(slots)
        self.capacity_buckets = check_capacity_buckets(capacity_buckets)
        self.eos_check_every = max(1, eos_check_every)
        self.cache_bytes = cache_bytes
        self.overflow: list[SlotPool] = []  # one-slot pools of sequences longer than the largest bucket
        self._check_budget(SlotCache.bytes_for(model, slots, self.capacity_buckets[-1]), "the slots' cache", held=0)
        self.pool = SlotPool(SlotCache.allocate(model, slots, self.capacity_buckets[-1]), capture=True)
        self.captured_up_front = False
        self.uncaptured_steps = 0
        self._buckets: dict[tuple[int, int], SlotBucket] = {}
        self._graph_pool: tuple | None = None
        # tensors outside the cache that the captured graphs read: held so a regrown table is not freed
        self._graph_inputs: list[torch.Tensor] = []
        self._steps = 0
        model.ar_audio_position.ensure_length(max(self.capacity_buckets[-1], model.config.positional_table))

    # ---- bookkeeping ----------------------------------------------------------------------------
    @property
    def slots(self) -> int:
        return self.pool.cache.slots

    @property
    def occupied(self) -> int:
        """Sequences decoding now (in the slots and in overflow pools)."""
        return len(self.pool.occupants) + sum(len(p.occupants) for p in self.overflow)

    @property
    def free_slots(self) -> int:
        return self.slots - self.occupied

    @property
    def nbytes(self) -> int:
        pools = [self.pool, *self.overflow]
        return sum(SlotCache.bytes_for(self.model, p.cache.slots, p.cache.capacity) for p in pools)

    def _check_budget(self, size: int, what: str, held: int | None = None) -> None:
        """ConfigError unless `size` more bytes fit `cache_bytes` beside the `held` ones (default: all pools)."""
        held = self.nbytes if held is None else held
        if self.cache_bytes is not None and held + size > self.cache_bytes:
            raise ConfigError(f"vallex decode caches: {what} needs {size / 2**20:.1f} MiB more than the "
                              f"{(self.cache_bytes - held) / 2**20:.1f} MiB left of the budget of "
                              f"{self.cache_bytes / 2**20:.1f} MiB")

    # ---- graphs ---------------------------------------------------------------------------------
    def _step_fn(self, cache: SlotCache) -> Callable[[], None]:
        """One step of `cache` (a view): the model step, with the draw fused in for the in-graph sampler."""
        if self.sampling.in_graph:
            return partial(slot_sample_and_step, self.model, cache, self.sampling)
        return partial(slot_step, self.model, cache)

    def capture_all(self) -> int:
        """Capture the step of every (batch bucket, capacity bucket) of the slots while they are
        free; afterwards nothing is captured. The number of graphs captured (0 without graphs)."""
        if not self.use_cuda_graph:
            return 0
        if self.captured_up_front:
            raise RuntimeError("capture_all() runs once per decoder")
        if self.occupied:
            raise RuntimeError("capture_all() needs every slot free")
        captured = 0
        for slots in self.batch_buckets:
            for capacity in self.capacity_buckets:
                self._bucket(slots, capacity, capture=True)
                captured += 1
        self.captured_up_front = True
        return captured

    def captured(self) -> set[tuple[int, int]]:
        """(slots, capacity) of every step graph captured so far."""
        return {key for key, bucket in self._buckets.items() if bucket.graph is not None}

    def _bucket(self, slots: int, capacity: int, capture: bool) -> SlotBucket:
        """The step of the main pool over (slots, capacity); its graph captured now if `capture`."""
        bucket = self._buckets.get((slots, capacity))
        if bucket is None:
            view = self.pool.cache.view(slots, capacity)
            bucket = self._buckets[(slots, capacity)] = SlotBucket(view, self._step_fn(view))
        if bucket.graph is None and capture:
            if self._graph_pool is None:
                self._graph_pool = torch.cuda.graph_pool_handle()
            self._graph_inputs.append(self.model.ar_audio_position.table)  # see StaticARCache.graph_inputs
            with torch.cuda.device(self.device):
                bucket.graph = capture_graph(bucket.fn, self.pool.cache.state(), pool=self._graph_pool)
        return bucket

    # ---- admission ------------------------------------------------------------------------------
    @torch.no_grad()
    def admit(self, request: DecodeRequest, tag: Any, key: int) -> None:
        """Prefill `request` alone into a free slot (ValueError if none is free): it joins at the next step."""
        if self.free_slots < 1:
            raise ValueError("SlotDecoder.admit(): no free slot")
        min_frames, max_frames = request.frame_limits()
        model = self.model
        stream = model.ar_stream(request.prompt_codes[:, 0].to(self.device))
        text = model.ar_text(request.text.to(self.device), request.languages.to(self.device))
        prefix = text.shape[0] + stream.shape[0]
        need = prefix + max_frames
        if need <= self.pool.cache.capacity:
            pool = self.pool
        else:  # longer than the largest bucket: a slot of its own, stepped eagerly
            capacity = bucket_up(need, self.capacity_buckets)
            self._check_budget(SlotCache.bytes_for(model, 1, capacity), f"a sequence of {need} columns")
            cache = SlotCache.allocate(model, 1, capacity)
            pool = SlotPool(cache, capture=False, step=SlotBucket(cache, self._step_fn(cache)))
            model.ar_audio_position.ensure_length(capacity)
            self.overflow.append(pool)
        slot = pool.free_slot()
        cache = pool.cache
        x = torch.cat([text, model.ar_audio(stream)], dim=0).to(cache.keys.dtype).unsqueeze(0)
        allowed = model.ar_allowed_mask(text.shape[0], stream.shape[0], self.device)[None, None]
        for i, layer in enumerate(model.ar_decoder.layers):
            q, k, v = layer.self_attn.project(layer.norm1(x))
            cache.keys[i, slot, :, :prefix] = k[0]
            cache.values[i, slot, :, :prefix] = v[0]
            x = layer.feed_forward(x + layer.self_attn.attend(q, k, v, allowed))
        cache.logits[slot] = model.ar_predict_layer(model.ar_decoder.final_norm(x[:, -1]))[0]
        cache.valid[slot].zero_()
        cache.valid[slot, :prefix] = True
        cache.column[slot] = prefix
        cache.audio_pos[slot] = stream.shape[0]
        cache.token[slot] = EOS_ID
        cache.step[slot] = 0
        cache.finished[slot] = False
        cache.min_frames[slot] = min_frames
        cache.max_frames[slot] = max_frames
        cache.stream[slot] = key
        cache.tokens[slot].fill_(EOS_ID)
        generator = None
        if not self.sampling.greedy and not self.sampling.in_graph:
            generator = torch.Generator(device=self.device).manual_seed(key)
        pool.occupants[slot] = SlotSequence(tag, request, prefix, min_frames, max_frames, generator)

    # ---- steps ----------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, slot_wanted: bool = False) -> list[FinishedSequence]:
        """Draw one frame for every occupied slot and run one model step; the sequences that finished
        (codes of all 8 codebooks, NAR batched over them). `slot_wanted`: read the finished flags now."""
        self._steps += 1
        check = slot_wanted or self._steps % self.eos_check_every == 0
        done: list[tuple[SlotPool, int]] = []
        for pool in [self.pool, *self.overflow]:
            if pool.occupants:
                done += self._step_pool(pool, check)
        return self._finish(done)

    def _step_pool(self, pool: SlotPool, check: bool) -> list[tuple[SlotPool, int]]:
        occupants = pool.occupants
        slots = bucket_up(max(occupants) + 1, self.batch_buckets) if pool.capture else pool.cache.slots
        furthest = max(s.prefix + s.drawn for s in occupants.values())  # the column this step writes, at most
        capacity = bucket_up(furthest + 1, self.capacity_buckets) if pool.capture else pool.cache.capacity
        if pool.capture:
            bucket = self._bucket(slots, capacity, capture=self.use_cuda_graph and not self.captured_up_front)
        else:
            bucket = pool.step
        view, graph = bucket.view, bucket.graph
        if not self.sampling.in_graph:
            self._draw_on_host(view, occupants)
        if graph is not None:
            graph.replay()
        else:
            if self.use_cuda_graph:
                self.uncaptured_steps += 1
            bucket.fn()
        for sequence in occupants.values():
            sequence.drawn += 1
        # a sequence that drew max_frames frames has all of them; an EOS shows in the flags
        ended = {s for s, seq in occupants.items() if seq.drawn >= seq.max_frames}
        if check:
            flags = view.finished.tolist()
            ended |= {s for s in occupants if flags[s]}
        return [(pool, s) for s in sorted(ended)]

    def _draw_on_host(self, view: SlotCache, occupants: dict[int, SlotSequence]) -> None:
        """The host sampler: each occupied row draws from its own generator (official multinomial)."""
        logits = filtered_logits(view.logits, view.step, view.min_frames, self.sampling)
        if self.sampling.greedy:
            token = logits.argmax(dim=-1)
        else:
            token = torch.full((view.slots,), EOS_ID, dtype=torch.long, device=self.device)
            probs = F.softmax(logits, dim=-1)
            for slot, sequence in occupants.items():
                token[slot] = torch.multinomial(probs[slot], 1, generator=sequence.generator)[0]
        record_draw(view, token)

    def _finish(self, done: list[tuple[SlotPool, int]]) -> list[FinishedSequence]:
        """Codebook 0 of the finished sequences, their NAR together; their slots freed."""
        if not done:
            return []
        sequences, codebook0 = [], []
        for pool, slot in done:
            sequence = pool.occupants.pop(slot)
            tokens = pool.cache.tokens[slot, :sequence.drawn]
            is_eos = tokens == EOS_ID
            length = int(is_eos.int().argmax()) if bool(is_eos.any()) else sequence.drawn
            codebook0.append(tokens[:length].clone())
            sequences.append(sequence)
            pool.cache.clear(slot)
        self.overflow = [p for p in self.overflow if p.occupants]
        codes = decode_nar(self.model, [s.request for s in sequences], codebook0)
        return [FinishedSequence(s.tag, c) for s, c in zip(sequences, codes, strict=True)]

    def cancel(self, tags: set) -> None:
        """Free the slots of the sequences tagged with one of `tags` without finishing them."""
        for pool in [self.pool, *self.overflow]:
            for slot in [s for s, seq in pool.occupants.items() if seq.tag in tags]:
                del pool.occupants[slot]
                pool.cache.clear(slot)
        self.overflow = [p for p in self.overflow if p.occupants]
