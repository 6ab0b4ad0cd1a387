"""The RVC stage: converts the reference recording into the avatar's voice (VALL-E X's acoustic prompt).

`convert(VoiceRequest) -> VoiceResult` (the prompt at 24 kHz). The result depends only on the
reference and the voice, so it is cached on disk by (reference hash, voice hash, pitch shift); the
voice hash covers every file and setting that changes the output (RVC model, HuBERT, RMVPE, index,
options). `convert_uncached` is the conversion itself.

Backends: `eager`, or `compile`: torch.compile (dynamic shapes: segment lengths vary) of the HuBERT
transformer and of the synthesizer's text encoder, flow and NSF decoder, with `options.backend`'s
compile settings; RMVPE and the index search stay eager. `tensorrt` is refused: the conversion runs
once per reference and its result is cached on disk, so an engine per model would not pay for itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from iris_pipeline import models
from iris_pipeline.audio import Waveform, check_waveform
from iris_pipeline.backends import compile_callable
from iris_pipeline.cache import (
    DiskCache,
    EntrySchema,
    TensorSpec,
    content_hash,
    default_cache_dir,
    tensor_hash,
)
from iris_pipeline.config import RVCConfig
from iris_pipeline.dsp import resample
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.models.rvc.inference import (
    CHUNKS_FULL,
    CHUNKS_HALF,
    ChunkConstants,
    VoiceConverter,
)
from iris_pipeline.models.rvc.inference import SAMPLE_RATE as CONVERTER_INPUT_RATE
from iris_pipeline.models.rvc.retrieval import FeatureIndex
from iris_pipeline.stages.backend_support import require_backend
from iris_pipeline.stages.base import Stage
from iris_pipeline.stages.contracts import VoiceRequest, VoiceResult
from iris_pipeline.timebase import CODEC_RATE

MIN_REFERENCE_SECONDS = 1.0
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 96000
# A cached prompt: finite float32 samples at the prompt rate, at least a reference's length
PROMPT_CACHE_SCHEMA = EntrySchema(
    tensors={"samples": TensorSpec(torch.float32, ("T",), finite=True)},
    values={"sample_rate": int},
    check=lambda entry: None if entry["sample_rate"] == CODEC_RATE and
    entry["samples"].shape[0] >= MIN_REFERENCE_SECONDS * CODEC_RATE
    else f"a prompt of {entry['samples'].shape[0]} samples at {entry['sample_rate']} Hz",
)



def check_reference(reference: Waveform) -> None:
    """One clear line for a reference RVC cannot use."""
    if not isinstance(reference, Waveform):
        raise InputError(f"reference: expected an audio Waveform, got {type(reference).__name__}")
    rate = int(reference.sample_rate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InputError(f"reference: sample rate {rate} Hz is not supported "
                         f"(supported: {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)")
    check_waveform(reference, "reference", min_seconds=MIN_REFERENCE_SECONDS)


class RVCStage(Stage):
    name: ClassVar[str] = "rvc"

    def __init__(self, config: RVCConfig, size: str = "full", device: str | torch.device = "cpu",
                 seed: int = 0):
        super().__init__(config, size, device)
        require_backend(config, self.name, ("eager", "compile"),
                        "for RVC (one conversion per reference, cached on disk: an engine would not pay off)")
        self.options = config.options
        self.backend_options = config.options.backend
        self.seed = seed
        self.converter: VoiceConverter | None = None
        self.voice_hash: str | None = None
        self.cache: DiskCache | None = None

    @property
    def compute_dtype(self) -> torch.dtype:
        """The precision's dtype on a GPU; fp32 on the CPU (RVC's official half path is GPU-only)."""
        return self.dtype if self.device.type == "cuda" else torch.float32

    def chunk_constants(self) -> ChunkConstants:
        official = CHUNKS_HALF if self.compute_dtype != torch.float32 else CHUNKS_FULL
        o = self.options
        x_pad = o.x_pad if o.x_pad is not None else official.x_pad
        if o.x_query is None:
            return ChunkConstants(x_pad, official.x_query, official.x_center, official.x_max)
        return ChunkConstants(x_pad, o.x_query, o.x_center, o.x_max)

    # --- models ---------------------------------------------------------------------------------

    def _model(self, name: str, checkpoint: Path | None, seed_offset: int) -> torch.nn.Module:
        model = models.get(name, checkpoint, size=self.size, seed=self.seed + seed_offset)
        return model.to(device=self.device, dtype=self.compute_dtype).eval()

    def _prepare(self) -> None:
        o = self.options
        hubert = self._model("hubert_base", o.hubert_checkpoint, 1)
        rmvpe = self._model("rmvpe", o.rmvpe_checkpoint, 2)
        synthesizer = self._model(o.model, self.config.checkpoint, 0)
        synthesizer.fold_weight_norms()
        if hubert.feature_dim != synthesizer.config.content_channels:
            raise ConfigError(f"rvc: HuBERT gives {hubert.feature_dim}-d features but {o.model} expects "
                              f"{synthesizer.config.content_channels}-d")
        if o.speaker_id >= synthesizer.config.spk_embed_dim:
            raise ConfigError(f"rvc.options.speaker_id: {o.speaker_id} is out of range; the voice model has "
                              f"{synthesizer.config.spk_embed_dim} speakers")
        if self.config.backend == "compile":
            self._compile(hubert, synthesizer)
        index = None
        if o.index_path is not None and o.index_rate > 0:
            index = FeatureIndex(o.index_path, option_name="rvc.options.index_path")
            if index.dim != hubert.feature_dim:
                raise ConfigError(f"rvc.options.index_path: the index holds {index.dim}-d vectors, "
                                  f"the content features are {hubert.feature_dim}-d")
        self.converter = VoiceConverter(hubert, rmvpe, synthesizer, self.chunk_constants(), index=index,
                                        index_rate=o.index_rate, protect=o.protect, speaker=o.speaker_id,
                                        f0_threshold=o.f0_threshold,
                                        interpolate_unvoiced=o.interpolate_unvoiced_f0,
                                        rms_mix_rate=o.rms_mix_rate)
        self.voice_hash = self._voice_hash()
        if o.cache:
            self.cache = DiskCache(o.cache_dir or default_cache_dir("rvc"), max_entries=o.cache_max_entries)

    def _compile(self, hubert: torch.nn.Module, synthesizer: torch.nn.Module) -> None:
        """torch.compile the heavy, shape-polymorphic parts in place (parameters and names unchanged)."""
        b = self.backend_options
        dynamic = True if b.compile_dynamic is None else b.compile_dynamic  # segment lengths always vary
        for part in (hubert.encoder, synthesizer.enc_p, synthesizer.flow, synthesizer.dec):
            part.forward = compile_callable(part.forward, mode=b.compile_mode, dynamic=dynamic,
                                            fullgraph=b.compile_fullgraph)

    def _voice_hash(self) -> str:
        """Hash of everything but the reference and the pitch shift that changes the output."""
        o = self.options

        def weights(path: Path | None, name: str) -> Any:
            return Path(path) if path is not None else f"random:{name}:{self.size}:{self.seed}"

        return content_hash(
            o.model, self.size, str(self.compute_dtype), self.seed,
            weights(self.config.checkpoint, o.model), weights(o.hubert_checkpoint, "hubert_base"),
            weights(o.rmvpe_checkpoint, "rmvpe"),
            Path(o.index_path) if o.index_path is not None and o.index_rate > 0 else "no index",
            o.index_rate, o.protect, o.speaker_id, o.f0_threshold, o.interpolate_unvoiced_f0,
            repr(self.chunk_constants()), o.rms_mix_rate,
        )

    def cache_key(self, reference: Waveform) -> str:
        return content_hash(tensor_hash(reference.samples), int(reference.sample_rate), self.voice_hash,
                            float(self.options.pitch_shift))

    # --- conversion ---------------------------------------------------------------------------

    def convert(self, request: VoiceRequest) -> VoiceResult:
        """The reference in the avatar's voice, from the disk cache when this voice converted it before."""
        self.require_prepared("convert")
        reference = request.reference
        check_reference(reference)
        key = self.cache_key(reference) if self.cache is not None else None
        if key is not None:
            hit = self.cache.get(key, PROMPT_CACHE_SCHEMA)
            if hit is not None:
                return VoiceResult(Waveform(hit["samples"].to(self.device), CODEC_RATE))
        prompt = self.convert_uncached(reference)
        if key is not None:
            self.cache.put(key, {"samples": prompt.samples.detach().float().cpu(),
                                "sample_rate": CODEC_RATE})
        return VoiceResult(prompt)

    def convert_uncached(self, reference: Waveform) -> Waveform:
        """The conversion itself (no cache): reference at any rate -> prompt at 24 kHz on the device."""
        self.require_prepared("convert_uncached")
        assert self.converter is not None
        audio16k = resample(reference.samples.detach().cpu().double(), int(reference.sample_rate), CONVERTER_INPUT_RATE)
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        converted = self.converter.convert(audio16k.numpy(), self.options.pitch_shift, generator)
        prompt = resample(converted.float(), self.converter.sample_rate, CODEC_RATE)
        return Waveform(prompt.float().to(self.device), CODEC_RATE)
