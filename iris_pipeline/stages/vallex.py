"""VALL-E X stage: (prompt codes + prompt phonemes, script) -> codes -> 24 kHz speech.

`encode_prompt` runs once per job (EnCodec on the prompt waveform, the transcript's phonemes).
Each `SpeechRequest` becomes the official inference input (prompt phonemes ++ script phonemes,
prompt language for the prompt part, per-character language for the script part), decoded AR + NAR
and turned into audio with Vocos (EnCodec's decoder as option).

The decode is continuous (`models.vallex.decode.SlotDecoder`): `options.max_batch` slots; a
scheduler `admit()`s a request into free slots, where it joins the running batch at the next
`step()`, and `step()` hands back the requests that finished. `synthesize(requests)` drives the
same slots for a list. Every request's random choices come from its own stream keyed by (`seed`,
`chunk`), so its codes do not depend on what else decodes beside it.

Backends: `eager` runs the decode step as plain PyTorch; `compile` replays the static-KV-cache step
as a CUDA graph (in the manner of gpt-fast; `use_cuda_graph` overrides the choice). Slot counts and
cache capacities are bucketed, and `prepare()` captures the graph of every (slot bucket, capacity
bucket) for `max_batch` before any work starts, so no capture ever runs beside other work or inside
a measured window. The slots' cache must fit `cache_mib`.
`tensorrt` is refused with a ConfigError: the decode is a host-driven loop of sampling and early
stopping around one step, not one exported graph; the replayed CUDA graph is this stage's fast path. `options.backend` is validated like every stage's (its compile settings
do not apply here: the step is captured by hand, not by torch.compile).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import ClassVar

import torch

from iris_pipeline import models
from iris_pipeline.audio import Waveform, check_waveform
from iris_pipeline.config import VallexConfig
from iris_pipeline.dsp import resample
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.models.vallex.config import LANGUAGE_IDS, NUM_QUANTIZERS
from iris_pipeline.models.vallex.decode import (
    DecodeRequest,
    Sampling,
    SlotDecoder,
    stream_key,
)
from iris_pipeline.stages.backend_support import require_backend
from iris_pipeline.stages.base import Stage
from iris_pipeline.stages.contracts import SpeechRequest, SpeechResult, VallexPrompt
from iris_pipeline.text.vallex_g2p import LANGUAGES, phonemize
from iris_pipeline.text.vallex_sentences import split_sentences
from iris_pipeline.timebase import CODEC_RATE


def _split_frames(total: int, weights: list[int]) -> list[int]:
    """`total` frames shared in proportion to `weights` (largest remainder), every share >= 1."""
    if total < len(weights):
        raise InputError(f"vallex: num_frames {total} is fewer than the {len(weights)} sentences of the text")
    exact = [(total - len(weights)) * w / sum(weights) for w in weights]
    shares = [int(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[: total - len(weights) - sum(shares)]:
        shares[i] += 1
    return [s + 1 for s in shares]


class VallexStage(Stage):
    name: ClassVar[str] = "vallex"

    def __init__(self, config: VallexConfig, size: str = "full", device: str | torch.device = "cpu",
                 seed: int = 0):
        super().__init__(config, size, device)
        require_backend(config, self.name, ("eager", "compile"), "for the autoregressive decode")
        self.options = config.options
        self.backend_options = config.options.backend
        self.seed = seed
        self.model: torch.nn.Module | None = None
        self.encodec: torch.nn.Module | None = None
        self.vocos: torch.nn.Module | None = None
        self.decoder: SlotDecoder | None = None
        self._pending: dict[Hashable, list[torch.Tensor | None]] = {}  # admitted: codes of each piece
        self._queued: deque[tuple[Hashable, int, DecodeRequest, int]] = deque()  # pieces waiting for a slot

    # --- models ---------------------------------------------------------------------------------

    @property
    def codec_dtype(self) -> torch.dtype:
        # Half-precision convolutions and LSTMs are a CUDA matter; on the CPU the codecs stay fp32.
        return self.dtype if self.device.type == "cuda" else torch.float32

    def _prepare(self) -> None:
        opts = self.options
        size, seed = self.size, self.seed
        self.model = models.get("vallex", self.config.checkpoint, size, seed).to(self.device, self.dtype).eval()
        self.encodec = models.get("encodec_24khz", opts.encodec_checkpoint, size, seed).to(self.device, self.codec_dtype)
        if opts.decoder == "vocos":
            self.vocos = models.get("vocos_encodec_24khz", opts.vocos_checkpoint, size, seed).to(self.device,
                                                                                                 self.codec_dtype)
        use_graph = opts.use_cuda_graph if opts.use_cuda_graph is not None else self.config.backend == "compile"
        try:
            self.decoder = SlotDecoder(self.model, slots=opts.max_batch, sampling=self._sampling(),
                                       use_cuda_graph=use_graph, capacity_buckets=opts.capacity_buckets,
                                       eos_check_every=opts.eos_check_every, cache_bytes=opts.cache_mib * 2**20)
        except ConfigError as exc:  # the slots' cache over the budget
            raise ConfigError(f"{exc}: raise vallex.options.cache_mib, or lower max_batch or the largest of "
                              f"capacity_buckets") from None
        self.decoder.capture_all()  # before any worker starts (no-op without graphs)

    # --- prompt ---------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompt: Waveform, transcript: str, language: str) -> VallexPrompt:
        """EnCodec codes of the prompt audio (resampled to 24 kHz) and its transcript's phoneme ids."""
        self.require_prepared("encode_prompt")
        if language not in LANGUAGES:
            raise InputError(f"vallex prompt: language {language!r} is not supported; use one of "
                             f"{', '.join(LANGUAGES)}")
        check_waveform(prompt, "vallex prompt", max_seconds=self.options.max_prompt_seconds)
        phonemes = phonemize(transcript, language)
        samples = resample(prompt.samples.float().cpu(), prompt.sample_rate, CODEC_RATE)
        wav = samples.to(self.device, self.codec_dtype)[None, None]
        codes = self.encodec.encode(wav)[0].transpose(0, 1).long()  # [F, 8]
        if codes.shape[1] != NUM_QUANTIZERS:
            raise ConfigError(f"vallex: encodec_24khz gave {codes.shape[1]} codebooks, VALL-E X needs "
                              f"{NUM_QUANTIZERS} (6 kbps)")
        ids = torch.tensor(phonemes.ids, dtype=torch.long, device=self.device)
        return VallexPrompt(codes=codes, text_ids=ids, language=language, phonemes=phonemes.text)

    # --- synthesis ------------------------------------------------------------------------------

    def _requests_for(self, text: str, language: str, prompt: VallexPrompt, min_frames: int | None,
                      max_frames: int | None) -> list[DecodeRequest]:
        """One decode request, or one per sentence in the long-text mode (frames shared by length)."""
        if not isinstance(prompt, VallexPrompt):
            raise InputError(f"vallex: prompt must be a VallexPrompt from encode_prompt(), got "
                             f"{type(prompt).__name__}")
        if self.options.long_text == "sentences" and language in LANGUAGES:
            pieces = split_sentences(text, language) or [text]
        else:
            pieces = [text]
        targets = [phonemize(piece, language) for piece in pieces]
        mins, maxs = [min_frames] * len(targets), [max_frames] * len(targets)
        if len(targets) > 1 and max_frames is not None:
            maxs = _split_frames(max_frames, [len(t.ids) for t in targets])
            mins = maxs if min_frames == max_frames else [None if min_frames is None else min(min_frames, m)
                                                          for m in maxs]
        prompt_language = LANGUAGE_IDS[prompt.language]
        accent = self.options.accent
        requests = []
        for target, lo, hi in zip(targets, mins, maxs, strict=True):
            target_languages = [accent if accent != "no-accent" else lang for lang in target.languages]
            languages = [prompt_language] * prompt.text_ids.shape[0] + [LANGUAGE_IDS[x] for x in target_languages]
            requests.append(DecodeRequest(
                text=torch.cat([prompt.text_ids.to(self.device),
                                torch.tensor(target.ids, dtype=torch.long, device=self.device)]),
                languages=torch.tensor(languages, dtype=torch.long, device=self.device),
                prompt_codes=prompt.codes.to(self.device),
                min_frames=lo, max_frames=hi,
            ))
        return requests

    @torch.no_grad()
    def codes_to_speech(self, codes: torch.Tensor) -> Waveform:
        """Codes [F, 8] -> 24 kHz waveform of F * 320 samples (Vocos at 6 kbps, or EnCodec's decoder)."""
        return Waveform(self._decode_codes(codes.transpose(0, 1).unsqueeze(0))[0].float(), CODEC_RATE)

    def _sampling(self) -> Sampling:
        opts = self.options
        return Sampling(top_k=opts.top_k, temperature=opts.temperature, greedy=opts.greedy,
                        in_graph=opts.sampling_in_graph)

    def _pieces(self, request: SpeechRequest) -> list[tuple[DecodeRequest, int]]:
        """The decode sequences of a request (one, or one per sentence) with their random-stream keys."""
        lo, hi = request.min_frames, request.max_frames
        if request.num_frames is not None:
            if request.num_frames < 1:
                raise InputError(f"vallex: num_frames must be >= 1, got {request.num_frames}")
            lo = hi = int(request.num_frames)
        pieces = self._requests_for(request.text, request.language, request.prompt, lo, hi)
        for piece in pieces:
            piece.frame_limits()  # every piece valid before any takes a slot
        return [(piece, stream_key(request.seed, request.chunk, k)) for k, piece in enumerate(pieces)]

    # --- slots: the continuous decode a scheduler drives ----------------------------------------

    @property
    def slots(self) -> int:
        """Sequences decoded together at most (`options.max_batch`)."""
        return self.options.max_batch

    @property
    def free_slots(self) -> int:
        """Slots a new request may take now (pieces of admitted requests still waiting count as taken)."""
        self.require_prepared("free_slots")
        return max(0, self.decoder.free_slots - len(self._queued))

    @property
    def occupied(self) -> int:
        """Requests admitted and not finished."""
        return len(self._pending)

    def admit(self, request: SpeechRequest, tag: Hashable) -> None:
        """Start decoding `request` (it joins the running batch at the next `step()`); its result
        comes out of `step()` under `tag`. Bad input raises here, before any slot is taken."""
        self.require_prepared("admit")
        if tag in self._pending:
            raise ValueError(f"vallex.admit(): tag {tag!r} is already decoding")
        pieces = self._pieces(request)
        self._pending[tag] = [None] * len(pieces)
        self._queued.extend((tag, k, piece, key) for k, (piece, key) in enumerate(pieces))
        self._fill_slots()

    def _fill_slots(self) -> None:
        while self._queued and self.decoder.free_slots > 0:
            tag, k, piece, key = self._queued.popleft()
            self._admit_piece(tag, k, piece, key)

    def _admit_piece(self, tag: Hashable, k: int, piece: DecodeRequest, key: int) -> None:
        try:
            self.decoder.admit(piece, (tag, k), key)
        except ConfigError as exc:  # a sequence longer than the budget allows: name the option
            raise ConfigError(f"{exc}: raise vallex.options.cache_mib or shorten the chunks") from None

    @torch.no_grad()
    def step(self, slot_wanted: bool = False) -> list[tuple[Hashable, SpeechResult]]:
        """One decode step of every admitted request; the requests that finished, with their tags.
        `slot_wanted`: someone waits for a slot, so finished sequences are looked for now."""
        self.require_prepared("step")
        self._fill_slots()
        if not self.decoder.occupied:
            return []
        finished = self.decoder.step(slot_wanted=slot_wanted or bool(self._queued))
        complete = []
        for sequence in finished:
            tag, k = sequence.tag
            codes = self._pending[tag]
            codes[k] = sequence.codes
            if all(c is not None for c in codes):
                complete.append((tag, torch.cat(self._pending.pop(tag), dim=0)))
        self._fill_slots()
        speech = self.codes_to_speech_batch([codes for _, codes in complete])
        return [(tag, SpeechResult(speech=wave, codes=codes))
                for (tag, codes), wave in zip(complete, speech, strict=True)]

    def cancel(self, tags: set[Hashable]) -> None:
        """Stop decoding the requests under `tags` and free their slots (their results never come)."""
        if self.decoder is not None:
            self.decoder.cancel({(tag, k) for tag in tags for k in range(len(self._pending.get(tag, ())))})
        self._queued = deque(q for q in self._queued if q[0] not in tags)
        for tag in tags:
            self._pending.pop(tag, None)

    def synthesize(self, requests: list[SpeechRequest]) -> list[SpeechResult]:
        """Speech of every request, in order, decoded together in the slots (admitted as slots free).

        Each result depends on its own request alone (its stream is keyed by `seed` and `chunk`).
        Not to be mixed with a scheduler's `admit` / `step` on the same stage.
        """
        self.require_prepared("synthesize")
        if self._pending:
            raise RuntimeError("vallex.synthesize() called while a scheduler's requests are decoding")
        tags = [("synthesize", i) for i in range(len(requests))]
        results: dict[Hashable, SpeechResult] = {}
        waiting = deque(zip(tags, requests, strict=True))
        try:
            for _, request in waiting:
                self._pieces(request)  # bad input: refused before anything runs
            while waiting or self._pending:
                while waiting and self.free_slots > 0:
                    self.admit(*reversed(waiting.popleft()))
                results.update(self.step(slot_wanted=bool(waiting)))
        except BaseException:
            self.cancel(set(tags))
            raise
        return [results[tag] for tag in tags]

    @torch.no_grad()
    def codes_to_speech_batch(self, codes: list[torch.Tensor]) -> list[Waveform]:
        """`codes_to_speech` of several code sequences; those of equal length in one batch."""
        by_length: dict[int, list[int]] = {}
        for i, c in enumerate(codes):
            by_length.setdefault(int(c.shape[0]), []).append(i)
        speech: list[Waveform | None] = [None] * len(codes)
        for indices in by_length.values():
            batch = torch.stack([codes[i] for i in indices]).transpose(1, 2)  # [B, 8, F]
            for i, samples in zip(indices, self._decode_codes(batch), strict=True):
                speech[i] = Waveform(samples.float(), CODEC_RATE)
        return speech  # type: ignore[return-value]

    def _decode_codes(self, batch_codes: torch.Tensor) -> torch.Tensor:
        """Samples [B, F * 320] of codes [B, 8, F] (Vocos at 6 kbps, or EnCodec's decoder)."""
        if self.options.decoder == "vocos":
            return self.vocos.decode_codes(batch_codes, bandwidth_id=2)
        return self.encodec.decode(batch_codes)[:, 0]
