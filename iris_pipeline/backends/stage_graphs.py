"""The exportable compute graphs of the FastPitch and Wav2Lip stages, with their shape ranges.

- Wav2Lip: the whole generator, `(mel [B, 1, 80, 16], faces [B, 6, 96, 96]) -> crops [B, 3, 96, 96]`,
  dynamic in the batch of frames.
- FastPitch: two graphs around length regulation, whose output length depends on the durations'
  values (a data-dependent shape that ONNX tracing would freeze and TensorRT cannot size up front):
  `fastpitch.encoder` `(symbols [B, N]) -> encodings [B, N, D]` (encoder + pitch and energy
  conditioning, as `FastPitch.infer` computes them) and `fastpitch.decoder`
  `(regulated [B, T, D], lengths [B]) -> mel [B, 80, T]`. The stage regulates lengths in PyTorch
  between them; `encoder -> regulate_length -> decoder` equals `FastPitch.infer(...).mel`.

Sample inputs go through the stages' real front ends: Wav2Lip mel windows are `audio.wav2lip_mel` of
a seeded voiced signal (pulse train with moving pitch and syllable-rate envelope) and face crops
are smooth images masked as the stage masks them; FastPitch symbols are the text front end's ids of
English sentences, and decoder inputs are the encoder's real outputs regulated by seeded durations.
A stage that records the inputs it really sees can pass them as calibration data instead.

`fastpitch.aligner` (symbols, speech mel, prior -> soft alignment) is exported and checked like
the others; the stage still runs the aligner eagerly (see `stages/fastpitch.py`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from iris_pipeline.backends.graph import Dims, GraphSpec, ShapeProfile, TensorSpec

WAV2LIP_PROFILES = {"full": {"batch": (1, 32, 128)}, "tiny": {"batch": (1, 4, 8)}}
FASTPITCH_PROFILES = {
    # symbols per chunk (~15/s of speech) and mel frames at 22050/256 = 86.1 frames/s, up to 30 s
    "full": {"batch": (1, 1, 4), "symbols": (4, 160, 480), "frames": (16, 862, 2600)},
    "tiny": {"batch": (1, 1, 2), "symbols": (4, 24, 48), "frames": (16, 64, 160)},
}
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "In 1984, forty two people met at 7:30 to discuss the $3.50 budget of Dr. Smith's lab.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A talking avatar moves its lips in time with the words it speaks.",
)


def _profile(profiles: dict, size: str, override: dict | None) -> ShapeProfile:
    ranges = dict(profiles[size])
    ranges.update(override or {})
    return ShapeProfile(ranges)


# -- Wav2Lip ------------------------------------------------------------------------------------------


def speech_like(seconds: float, sample_rate: int, generator: torch.Generator) -> torch.Tensor:
    """A seeded voiced signal: glottal-like pulses with a gliding pitch, a syllable-rate envelope,
    formant-ish resonances and breath noise. Not speech, but it fills the mel bands as speech does."""
    n = int(seconds * sample_rate)
    t = torch.arange(n) / sample_rate
    f0_start, f0_end = (torch.rand(2, generator=generator) * 160 + 90).tolist()
    f0 = f0_start + (f0_end - f0_start) * t / max(seconds, 1e-3)
    phase = 2 * math.pi * torch.cumsum(f0 / sample_rate, 0)
    source = sum(torch.sin(k * phase) / k for k in range(1, 30))
    formants = torch.rand(3, generator=generator) * torch.tensor([600.0, 1500.0, 1500.0]) + torch.tensor(
        [300.0, 900.0, 2200.0]
    )
    voiced = sum(torch.sin(2 * math.pi * f * t) * 0.3 for f in formants.tolist()) * source
    rate = float(torch.rand(1, generator=generator)) * 3 + 3
    envelope = 0.5 * (1 - torch.cos(2 * math.pi * rate * t)).clamp_min(0)
    noise = torch.randn(n, generator=generator) * 0.02
    wave = voiced * envelope + noise
    return 0.5 * wave / wave.abs().max().clamp_min(1e-6)


def _smooth_images(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    coarse = torch.rand(count, 3, 6, 6, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def wav2lip_inputs(
    dims: Dims, generator: torch.Generator, face_size: int = 96, mel_bins: int = 80, mel_step: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    from iris_pipeline.audio import wav2lip_mel
    from iris_pipeline.timebase import MEL_RATE

    batch = int(dims["batch"])
    mel = wav2lip_mel(speech_like(1.0 + batch * 0.04, MEL_RATE, generator), MEL_RATE)  # [80, M]
    starts = torch.randint(0, mel.shape[1] - mel_step + 1, (batch,), generator=generator)
    windows = torch.stack([mel[:mel_bins, s : s + mel_step] for s in starts.tolist()]).unsqueeze(1)
    reference = _smooth_images(batch, face_size, generator)
    target = _smooth_images(batch, face_size, generator)
    target[:, :, face_size // 2 :] = 0.0  # the stage masks the lower half of the target crop
    return windows.float(), torch.cat([target, reference], dim=1)


def wav2lip_graph(model: nn.Module, size: str = "full", profile: dict | None = None) -> GraphSpec:
    """The Wav2Lip generator as a graph dynamic in the batch of frames."""
    from iris_pipeline.models.wav2lip import FACE_SIZE, MEL_BINS, MEL_STEP

    return GraphSpec(
        name=f"wav2lip.{size}",
        module=model,
        inputs=(
            TensorSpec("mel", ("batch", 1, MEL_BINS, MEL_STEP)),
            TensorSpec("faces", ("batch", 6, FACE_SIZE, FACE_SIZE)),
        ),
        outputs=("crops",),
        profile=_profile(WAV2LIP_PROFILES, size, profile),
        config={"model": "wav2lip", "size": size, "widths": getattr(model, "widths", None)},
        make_inputs=lambda dims, gen: wav2lip_inputs(dims, gen, FACE_SIZE, MEL_BINS, MEL_STEP),
        # crops are in [0, 1]: 0.1 is 25 of 255 grey levels at the worst pixel
        accuracy={"min_cosine": 0.99, "max_abs_error": 0.1},
    )


# -- FastPitch ----------------------------------------------------------------------------------------


class FastPitchEncoderGraph(nn.Module):
    """symbols [B, N] -> encodings [B, N, D] with pitch (and energy) embeddings added, as `infer` does."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, symbols: torch.Tensor) -> torch.Tensor:
        m = self.model
        enc_out, enc_mask = m.encoder(
            symbols, conditioning=m._speaker_conditioning(symbols.size(0), 0, symbols.device)
        )
        pitch = m.pitch_predictor(enc_out, enc_mask).permute(0, 2, 1)
        enc_out = enc_out + m.pitch_emb(pitch).transpose(1, 2)
        if m.energy_predictor is not None:
            energy = m.energy_predictor(enc_out, enc_mask).squeeze(-1)
            enc_out = enc_out + m.energy_emb(energy.unsqueeze(1)).transpose(1, 2)
        return enc_out


class FastPitchDecoderGraph(nn.Module):
    """regulated [B, T, D], lengths [B] -> log-mel [B, 80, T] (zero past each length)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, regulated: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        m = self.model
        dec_out, mask = m.decoder(regulated, lengths)
        return (m.proj(dec_out) * mask.to(dec_out.dtype)).transpose(1, 2)


def fastpitch_symbols(dims: Dims, generator: torch.Generator) -> torch.Tensor:
    """[B, N] symbol ids of English sentences (the stage's text front end), cut or padded to N."""
    from iris_pipeline.text.fastpitch_en import PAD_ID, SYMBOL_TO_ID, encode

    batch, n = int(dims["batch"]), int(dims["symbols"])
    rows = []
    for _ in range(batch):
        ids: list[int] = []
        while len(ids) < n:
            pick = int(torch.randint(0, len(SENTENCES), (1,), generator=generator))
            ids += list(encode(SENTENCES[pick]).ids) + [SYMBOL_TO_ID[" "]]
        length = n if not rows else int(torch.randint(max(1, n // 2), n + 1, (1,), generator=generator))
        rows.append(ids[:length] + [PAD_ID] * (n - length))
    return torch.tensor(rows, dtype=torch.long)


def fastpitch_decoder_inputs(
    encoder: nn.Module, dims: Dims, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real encoder outputs for real symbols, regulated by seeded durations to exactly T frames."""
    from iris_pipeline.models.fastpitch import regulate_length

    batch, frames = int(dims["batch"]), int(dims["frames"])
    symbols_n = max(2, frames // 6)
    symbols = fastpitch_symbols({"batch": batch, "symbols": symbols_n}, generator)
    with torch.no_grad():
        param = next(encoder.parameters())
        enc = encoder(symbols.to(param.device)).float().cpu()
    durations = torch.randint(1, 12, symbols.shape, generator=generator) * (symbols != 0)
    regulated, lengths = regulate_length(durations, enc)
    if regulated.shape[1] < frames:
        regulated = F.pad(regulated, (0, 0, 0, frames - regulated.shape[1]))
    regulated, lengths = regulated[:, :frames].contiguous(), lengths.clamp(1, frames)
    lengths[0] = frames  # one full-length row, so the whole profile point is exercised
    return regulated, lengths.long()


class FastPitchAlignerGraph(nn.Module):
    """symbols [B, N], speech mel [B, 80, T], prior [B, T, N] -> soft alignment [B, T, N] (probabilities)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, symbols: torch.Tensor, mel: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return self.model.align(symbols, mel, prior)


def fastpitch_aligner_inputs(
    dims: Dims, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unpadded symbol rows of English sentences, the FastPitch mel of a speech-like signal exactly T
    frames long, and the beta-binomial prior the aligner was trained with (as the stage builds them)."""
    from iris_pipeline.alignment import beta_binomial_prior
    from iris_pipeline.models.fastpitch.mel import FASTPITCH_MEL, fastpitch_mel

    batch, n, frames = int(dims["batch"]), int(dims["symbols"]), int(dims["frames"])
    symbols = torch.cat([fastpitch_symbols({"batch": 1, "symbols": n}, generator) for _ in range(batch)])
    seconds = frames * FASTPITCH_MEL.hop_length / FASTPITCH_MEL.sample_rate
    mels = [
        fastpitch_mel(speech_like(seconds, FASTPITCH_MEL.sample_rate, generator), FASTPITCH_MEL.sample_rate)
        for _ in range(batch)
    ]
    mel = torch.stack([F.pad(m, (0, max(0, frames - m.shape[-1])))[:, :frames] for m in mels])
    prior = beta_binomial_prior(n, frames).float().expand(batch, frames, n).contiguous()
    return symbols, mel, prior


def fastpitch_aligner_graph(model: nn.Module, size: str = "full", profile: dict | None = None) -> GraphSpec:
    """The aligner as a graph: symbols and frames within the FastPitch profile, rows unpadded (the
    stage aligns one utterance at a time; a padded symbol would score -inf)."""
    ranges = _profile(FASTPITCH_PROFILES, size, profile)
    return GraphSpec(
        name=f"fastpitch.aligner.{size}",
        module=FastPitchAlignerGraph(model).eval(),
        inputs=(
            TensorSpec("symbols", ("batch", "symbols"), torch.long, high=model.config.n_symbols),
            TensorSpec("mel", ("batch", model.config.n_mel_channels, "frames")),
            TensorSpec("prior", ("batch", "frames", "symbols")),
        ),
        outputs=("soft_alignment",),
        profile=ranges,
        config={"model": "fastpitch", "size": size, "config": getattr(model, "config", None), "graph": "aligner"},
        make_inputs=fastpitch_aligner_inputs,
        # probabilities over symbols, in [0, 1]: 0.1 at the worst cell
        accuracy={"min_cosine": 0.99, "max_abs_error": 0.1},
        # the module scores in fp32 (`.float()` after the projections): squared distances and the
        # log prior (log(p + 1e-8): 1e-8 is 0 in fp16) do not survive fp16, which measured a cosine of
        # 0.964 for the tiny model's INT8 graph converted to fp16 wholesale
        fp32_op_types=("Pow", "ReduceSum", "MatMul", "Mul", "Sub", "Add", "Clip", "LogSoftmax", "Log", "Where",
                       "Softmax"),
    )


def fastpitch_graphs(
    model: nn.Module, size: str = "full", profile: dict | None = None
) -> tuple[GraphSpec, GraphSpec]:
    """(encoder graph, decoder graph) of a FastPitch model."""
    ranges = _profile(FASTPITCH_PROFILES, size, profile)
    config = {"model": "fastpitch", "size": size, "config": getattr(model, "config", None)}
    dim = model.config.symbols_embedding_dim
    encoder = FastPitchEncoderGraph(model).eval()
    decoder = FastPitchDecoderGraph(model).eval()
    encoder_spec = GraphSpec(
        name=f"fastpitch.encoder.{size}",
        module=encoder,
        inputs=(TensorSpec("symbols", ("batch", "symbols"), torch.long, high=model.config.n_symbols),),
        outputs=("encodings",),
        profile=ShapeProfile({k: ranges.ranges[k] for k in ("batch", "symbols")}),
        config=config,
        make_inputs=lambda dims, gen: (fastpitch_symbols(dims, gen),),
        accuracy={"min_cosine": 0.99, "max_abs_error": 1.0},
    )
    decoder_spec = GraphSpec(
        name=f"fastpitch.decoder.{size}",
        module=decoder,
        inputs=(
            TensorSpec("regulated", ("batch", "frames", dim)),
            TensorSpec("lengths", ("batch",), torch.long, high=2),
        ),
        outputs=("mel",),
        profile=ShapeProfile({k: ranges.ranges[k] for k in ("batch", "frames")}),
        config=config,
        make_inputs=lambda dims, gen: fastpitch_decoder_inputs(encoder, dims, gen),
        # log-mel values span about [-12, 2]: 1.0 there is ~1/14 of the range at the worst bin
        accuracy={"min_cosine": 0.99, "max_abs_error": 1.0},
    )
    return encoder_spec, decoder_spec
