"""VALL-E X stage: (prompt codes + prompt phonemes, script) -> codes -> 24 kHz speech.

`encode_prompt` runs once per job (EnCodec on the prompt waveform, the transcript's phonemes);
`run` / `run_batch` assemble the official inference input (prompt phonemes ++ script phonemes,
prompt language for the prompt part, per-character language for the script part), decode AR + NAR
with the batched fast decoder, and turn the codes into audio with Vocos (EnCodec's decoder as option).

Backends: `eager` runs the decode step as plain PyTorch; `compile` replays the static-KV-cache step
as a CUDA graph (in the manner of gpt-fast; `use_cuda_graph` overrides the choice). Batches and
cache capacities are bucketed, and `prepare()` captures the graph of every (batch bucket, capacity
bucket) for `max_batch` before any work starts, so no capture ever runs beside other work or inside
a measured window. The decode caches are bounded by `cache_mib` (least recently used first out;
the caches of the graphs captured up front stay) and `release_caches()` frees the others.
`tensorrt` is refused with a ConfigError: the decode is a host-driven loop of sampling and early
stopping around one step, not one exported graph; the replayed CUDA graph is this stage's fast path. `options.backend` is validated like every stage's (its compile settings
do not apply here: the step is captured by hand, not by torch.compile).
"""

from __future__ import annotations

import zlib
from typing import Any, ClassVar

import torch

from iris_pipeline import models
from iris_pipeline.audio import Waveform, check_waveform, resample
from iris_pipeline.config import VallexConfig
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.models.vallex.config import LANGUAGE_IDS, NUM_QUANTIZERS
from iris_pipeline.models.vallex.decode import (
    DecodeRequest,
    Sampling,
    VallexDecoder,
)
from iris_pipeline.stages.backend_support import require_backend
from iris_pipeline.stages.base import Stage
from iris_pipeline.stages.contracts import VallexPrompt
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
    inputs: ClassVar[tuple[str, ...]] = ("text", "language", "prompt")
    outputs: ClassVar[tuple[str, ...]] = ("speech", "codes")

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
        self.decoder: VallexDecoder | None = None

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
        self.decoder = VallexDecoder(self.model, use_cuda_graph=use_graph, eos_check_every=opts.eos_check_every,
                                     max_batch=opts.max_batch, capacity_buckets=opts.capacity_buckets,
                                     cache_bytes=opts.cache_mib * 2**20)
        try:
            self.decoder.capture_all(self._sampling())  # before any worker starts (no-op without graphs)
        except ConfigError as exc:  # the captured graphs' caches over the budget
            raise ConfigError(f"{exc}: raise vallex.options.cache_mib, or lower max_batch or the largest of "
                              f"capacity_buckets") from None

    def release_caches(self) -> int:
        """Free the decode caches that no graph captured in `prepare()` uses; the bytes freed."""
        return self.decoder.release_caches() if self.decoder is not None else 0

    def _require_prepared(self, what: str) -> None:
        if not self._prepared:
            raise RuntimeError(f"vallex.{what}() called before prepare()")

    # --- prompt ---------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompt: Waveform, transcript: str, language: str) -> VallexPrompt:
        """EnCodec codes of the prompt audio (resampled to 24 kHz) and its transcript's phoneme ids."""
        self._require_prepared("encode_prompt")
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
        batch_codes = codes.transpose(0, 1).unsqueeze(0)  # [1, 8, F]
        if self.options.decoder == "vocos":
            samples = self.vocos.decode_codes(batch_codes, bandwidth_id=2)[0]
        else:
            samples = self.encodec.decode(batch_codes)[0, 0]
        return Waveform(samples.float(), CODEC_RATE)

    def _sampling(self) -> Sampling:
        opts = self.options
        return Sampling(top_k=opts.top_k, temperature=opts.temperature, greedy=opts.greedy,
                        in_graph=opts.sampling_in_graph)

    def _generator(self, seeds: list[int]) -> torch.Generator:
        # One generator per decoded batch: the same jobs in the same batch give the same samples.
        seed = seeds[0] if len(seeds) == 1 else zlib.crc32(repr(seeds).encode())
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def run(self, **inputs: Any) -> dict[str, Any]:
        """run(text, language, prompt, num_frames=None, seed=0) -> {"speech": Waveform, "codes": [F, 8]}."""
        self.check_inputs(inputs)
        return self.run_batch([inputs])[0]

    @torch.no_grad()
    def run_batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Several jobs (dicts with run()'s arguments; also min_frames / max_frames), decoded in batches."""
        self._require_prepared("run_batch")
        allowed = {"text", "language", "prompt", "num_frames", "seed", "min_frames", "max_frames"}
        jobs = []
        for i, request in enumerate(requests):
            unknown = sorted(set(request) - allowed)
            if unknown:
                raise InputError(f"vallex request {i}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
            missing = [k for k in self.inputs if k not in request]
            if missing:
                raise InputError(f"vallex request {i}: missing {', '.join(missing)}")
            lo, hi = request.get("min_frames"), request.get("max_frames")
            if request.get("num_frames") is not None:
                if int(request["num_frames"]) < 1:
                    raise InputError(f"vallex request {i}: num_frames must be >= 1, got {request['num_frames']}")
                lo = hi = int(request["num_frames"])
            pieces = self._requests_for(request["text"], request["language"], request["prompt"], lo, hi)
            jobs.append((pieces, int(request.get("seed", 0))))

        flat = [(j, piece) for j, (pieces, _) in enumerate(jobs) for piece in pieces]
        pieces_codes: list[torch.Tensor] = [None] * len(flat)  # type: ignore[list-item]
        step = self.options.max_batch
        for start in range(0, len(flat), step):
            group = flat[start:start + step]
            generator = self._generator([jobs[j][1] for j, _ in group])
            try:
                results = self.decoder.generate([piece for _, piece in group], self._sampling(), generator)
            except ConfigError as exc:  # a cache over the budget: name the option that sets it
                raise ConfigError(f"{exc}: raise vallex.options.cache_mib or shorten the chunks") from None
            for offset, result in enumerate(results):
                pieces_codes[start + offset] = result.codes

        outputs = []
        for j in range(len(jobs)):
            codes = torch.cat([c for (owner, _), c in zip(flat, pieces_codes, strict=True) if owner == j], dim=0)
            outputs.append({"speech": self.codes_to_speech(codes), "codes": codes})
        return outputs
