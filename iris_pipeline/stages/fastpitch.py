"""FastPitchStage: align the script to the generated speech and render the lip-sync mel.

text -> FastPitch symbols (the checkpoint's own front end: english_cleaners_v2 + CMUdict ARPAbet);
speech -> FastPitch mel (22.05 kHz, hop 256); the model's aligner gives the soft alignment (with
the interpolated beta-binomial prior it was trained with), monotonic alignment search on its float32
log turns it into per-symbol durations summing to the mel's frame count, as training did; the decoder renders a mel with
those durations forced (pitch and energy predicted, pace 1.0); the MelBridge maps it to Wav2Lip's
mel format with exactly the frame count `audio.wav2lip_mel` gives for the same speech.

`lipsync_features` is a pipeline setting (`PipelineConfig.lipsync_features`), so it is a
constructor argument, not a stage option: with "speech" the decoder is skipped and the lip-sync
mel is `audio.wav2lip_mel(speech)` (classic Wav2Lip); alignment still runs for durations and
subtitles. Stage options (`config.options`): `use_prior` (bool, default true) and `backend`.

The render runs as two backend graphs (`backends.prepare_graph`: eager, compile or tensorrt at the
stage's precision; settings under `options.backend`): the encoder (symbols -> encodings with pitch
and energy added), then length regulation in PyTorch (its output length depends on the durations'
values), then the decoder (regulated, lengths -> mel). Eager computes exactly what `FastPitch.infer`
computes. The aligner (speech -> durations) runs eagerly whatever the backend: it is a small part of
the stage's time and takes the speech mel, whose length has no useful bound for an engine profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from iris_pipeline import models
from iris_pipeline.alignment import beta_binomial_prior, monotonic_alignment_search
from iris_pipeline.alignment import warm_up as warm_up_alignment
from iris_pipeline.audio import Waveform, check_waveform, wav2lip_mel
from iris_pipeline.backends import GraphSpec, PreparedGraph, prepare_graph
from iris_pipeline.backends.stage_graphs import fastpitch_graphs
from iris_pipeline.config import FastPitchConfig
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.melbridge import MelBridge
from iris_pipeline.models.fastpitch import regulate_length
from iris_pipeline.models.fastpitch.mel import FASTPITCH_MEL, fastpitch_mel
from iris_pipeline.stages.base import Stage
from iris_pipeline.subtitles import spans_to_word_timings, symbol_timings
from iris_pipeline.text.fastpitch_en import EncodedText, encode, warm_up

LipsyncFeatures = Literal["fastpitch", "speech"]
# Both STFTs reflect-pad by half a window (512 samples at 22.05 kHz): shorter audio has no mel.
MIN_SPEECH_SECONDS = 0.05



@dataclass(frozen=True)
class Alignment:
    text: EncodedText
    speech_mel: torch.Tensor  # [80, T] FastPitch log-mel of the speech
    durations: torch.Tensor  # [N] int64, sum == T


class FastPitchStage(Stage):
    name: ClassVar[str] = "fastpitch"
    inputs: ClassVar[tuple[str, ...]] = ("text", "speech")
    outputs: ClassVar[tuple[str, ...]] = ("lipsync_mel", "durations", "timings", "words")

    def __init__(self, config: FastPitchConfig, size: str = "full", device: str | torch.device = "cpu",
                 lipsync_features: LipsyncFeatures = "fastpitch", seed: int = 0):
        super().__init__(config, size=size, device=device)
        if lipsync_features not in ("fastpitch", "speech"):
            raise ConfigError(f"lipsync_features: {lipsync_features!r} not allowed; allowed: 'fastpitch', 'speech'")
        self.lipsync_features = lipsync_features
        self.seed = seed
        self.options = config.options
        self.backend_options = config.options.backend
        self.bridge = MelBridge()
        self.model: torch.nn.Module | None = None
        self.encoder_spec: GraphSpec | None = None
        self.decoder_spec: GraphSpec | None = None
        self.encoder: PreparedGraph | None = None
        self.decoder: PreparedGraph | None = None

    def _prepare(self) -> None:
        model = models.get("fastpitch", self.config.checkpoint, size=self.size, seed=self.seed)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        if self.lipsync_features == "fastpitch":  # the speech mode never renders
            self.encoder_spec, self.decoder_spec = fastpitch_graphs(self.model, self.size)
            self.encoder, self.decoder = (prepare_graph(spec, self.config, stage=self.name, device=self.device)
                                          for spec in (self.encoder_spec, self.decoder_spec))
        # keep the import and load costs of the text front end and the prior out of the first chunk
        warm_up()
        warm_up_alignment()

    @staticmethod
    def min_speech_seconds(text: str) -> float:
        """The shortest speech `align` accepts for `text`: one mel frame per symbol (text only, no model)."""
        return max(MIN_SPEECH_SECONDS, len(encode(text, "text").ids) / FASTPITCH_MEL.frames_per_second)

    # --- steps -----------------------------------------------------------------------------------

    @torch.no_grad()  # not inference_mode: outputs go to other stages, which may modify them in place
    def align(self, text: str, speech: Waveform) -> Alignment:
        """Symbols of `text`, FastPitch mel of `speech`, and durations from the aligner + MAS."""
        check_waveform(speech, "speech", min_seconds=MIN_SPEECH_SECONDS)
        encoded = encode(text, "text")
        mel = fastpitch_mel(speech.samples.detach().float().to(self.device), speech.sample_rate)
        n_frames, n_symbols = mel.shape[-1], len(encoded.ids)
        if n_frames < n_symbols:
            raise InputError(f"speech: {speech.seconds:.2f} s gives {n_frames} mel frames, fewer than the "
                             f"{n_symbols} symbols of the text; cannot align")
        ids = torch.tensor(encoded.ids, dtype=torch.long, device=self.device)[None]
        prior = beta_binomial_prior(n_symbols, n_frames).to(self.device)[None] if self.options.use_prior else None
        weights = next(self.model.parameters()).dtype  # fp32 when the backend autocasts
        soft = self.model.align(ids, mel[None].to(weights), prior)
        # As the official binarize_attention: log of the soft attention in float32 (zeros -> -inf).
        durations = torch.from_numpy(monotonic_alignment_search(torch.log(soft[0].float()))).to(self.device)
        return Alignment(encoded, mel, durations)

    @torch.no_grad()
    def render(self, symbol_ids: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
        """FastPitch log-mel [80, sum(durations)] for symbol ids [N] with forced durations [N]."""
        if self.encoder is None or self.decoder is None:
            raise RuntimeError("fastpitch.render() needs prepare() in the fastpitch lip-sync mode")
        encodings = self.encoder(symbol_ids.to(self.device)[None])
        regulated, lengths = regulate_length(durations.to(self.device)[None], encodings, pace=1.0)
        mel = self.decoder(regulated, lengths)
        return mel[0, :, : int(lengths[0])].float()

    def run(self, **inputs: Any) -> dict[str, Any]:
        self.check_inputs(inputs)
        text, speech = inputs["text"], inputs["speech"]
        alignment = self.align(text, speech)
        if self.lipsync_features == "fastpitch":
            ids = torch.tensor(alignment.text.ids, dtype=torch.long, device=self.device)
            mel = self.render(ids, alignment.durations)
            lipsync = self.bridge(mel, speech.samples.shape[-1], speech.sample_rate)
        else:
            lipsync = wav2lip_mel(speech.samples.float(), speech.sample_rate).to(self.device)
        timings = symbol_timings(alignment.text.symbols, alignment.durations.cpu().numpy(), end_s=speech.seconds)
        return {
            "lipsync_mel": lipsync,
            "durations": alignment.durations,
            "timings": timings,
            "words": spans_to_word_timings(timings, [(w.text, w.start, w.end) for w in alignment.text.words]),
        }
