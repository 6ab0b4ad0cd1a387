"""The typed contracts between the stages and whoever drives them (the pipeline, the server).

Each stage exposes typed methods that take and return these dataclasses; nothing travels as a
string-keyed dict. Shapes and units are part of the contract and are written beside each field:

    RVCStage.convert(VoiceRequest) -> VoiceResult
    VallexStage.encode_prompt(reference, transcript, language) -> VallexPrompt
    VallexStage.synthesize([SpeechRequest, ...]) -> [SpeechResult, ...]    (one per request, in order)
    FastPitchStage.align_chunk(AlignRequest) -> AlignResult
    Wav2LipStage.render_frames([FramesRequest, ...]) -> [FramesResult, ...] (one per request, in order)

A list-taking method may batch its requests however it likes (several jobs share one forward),
but each result depends on its own request alone (see `SpeechRequest.seed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from iris_pipeline.audio import Waveform

# --- RVC ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VoiceRequest:
    """A reference recording to convert into the avatar's voice."""

    reference: Waveform  # mono, any sample rate, 1 s .. `max_reference_seconds`


@dataclass(frozen=True)
class VoiceResult:
    """The converted recording: VALL-E X's voice prompt."""

    prompt: Waveform  # mono, 24 kHz, on the stage's device


# --- VALL-E X -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class VallexPrompt:
    """An enrolled voice: EnCodec codes of the prompt audio and the phoneme ids of its transcript."""

    codes: torch.Tensor  # LongTensor [F, 8], 75 frames per second
    text_ids: torch.Tensor  # LongTensor [S_p]
    language: str  # en, zh or ja
    phonemes: str = ""

    @property
    def frames(self) -> int:
        return int(self.codes.shape[0])


@dataclass(frozen=True)
class SpeechRequest:
    """One chunk of one job's script to speak in a prompt's voice.

    `num_frames` imposes the length (codec frames, 75 per second); otherwise the decode stops at
    EOS, but not before `min_frames` nor after `max_frames`. Random choices are drawn from a stream
    keyed by (`seed`, `chunk`) alone, so the codes do not depend on what else shares a batch.
    """

    text: str
    language: str
    prompt: VallexPrompt
    seed: int = 0
    chunk: int = 0
    num_frames: int | None = None
    min_frames: int | None = None
    max_frames: int | None = None


@dataclass(frozen=True)
class SpeechResult:
    speech: Waveform  # mono, 24 kHz, codes.shape[0] * 320 samples
    codes: torch.Tensor  # LongTensor [F, 8]


# --- FastPitch ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlignRequest:
    """One chunk's text and the speech that says it."""

    text: str
    speech: Waveform  # mono, 24 kHz


@dataclass(frozen=True)
class AlignResult:
    """The alignment of a chunk (chunk-local times) and, in the fastpitch lip-sync mode, its mel."""

    durations: torch.Tensor  # LongTensor [N symbols], FastPitch mel frames per symbol
    timings: list[Any]  # alignment.SymbolTiming per symbol, seconds from the chunk's start
    words: list[Any]  # alignment.WordTiming per word, seconds from the chunk's start
    lipsync_mel: torch.Tensor | None = None  # [80, M] Wav2Lip mel columns (80 per second); None in speech mode


# --- Wav2Lip ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FramesRequest:
    """Frames [frame_start, frame_start + frame_count) of a job, with the mel columns they read.

    `mel` holds the clip's Wav2Lip mel columns [mel_offset, mel_offset + M); frame i reads the
    16-column window that starts at the column the time base gives for i (clamped to the clip's
    `total_mel_frames`).
    """

    mel: torch.Tensor  # [80, M] float
    mel_offset: int
    total_mel_frames: int
    avatar: Any  # iris_pipeline.avatar.Avatar
    frame_start: int
    frame_count: int
    fps: float


@dataclass(frozen=True)
class FramesResult:
    frames: torch.Tensor = field(repr=False)  # uint8 [frame_count, H, W, 3], RGB, on the host
