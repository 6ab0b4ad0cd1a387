"""The slot API of the VALL-E X stage (`scheduling.SpeechSlots`) for stand-in stages that only
implement `synthesize`: every admitted request ends at the next step, all in one `synthesize` call."""

from __future__ import annotations

from collections.abc import Hashable
from types import SimpleNamespace
from typing import Any

import torch

from iris_pipeline.audio import Waveform
from iris_pipeline.stages.contracts import SpeechRequest, SpeechResult
from iris_pipeline.timebase import CODEC_HOP, CODEC_RATE


class OneStepSlots:
    """Mix-in: needs `options.max_batch` and `synthesize(requests)` on the class it joins."""

    options: object

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)
        self._admitted: dict[Hashable, SpeechRequest] = {}

    @property
    def slots(self) -> int:
        return int(self.options.max_batch)  # type: ignore[attr-defined]

    @property
    def free_slots(self) -> int:
        return self.slots - len(self._admitted)

    def admit(self, request: SpeechRequest, tag: Hashable) -> None:
        self._admitted[tag] = request

    def step(self, slot_wanted: bool = False) -> list[tuple[Hashable, SpeechResult]]:
        if not self._admitted:
            return []
        tags, requests = list(self._admitted), list(self._admitted.values())
        self._admitted.clear()
        return list(zip(tags, self.synthesize(requests), strict=True))  # type: ignore[attr-defined]

    def cancel(self, tags: set[Hashable]) -> None:
        for tag in tags:
            self._admitted.pop(tag, None)


class InstantSpeech(OneStepSlots):
    """A VALL-E X stand-in that speaks at once: a constant 0.1 of exactly `num_frames` codec frames
    per request (subclasses override `options` for other slot counts)."""

    options = SimpleNamespace(max_batch=2, scheduler="continuous", max_waiting=8)

    def prepare(self) -> None:
        pass

    def encode_prompt(self, prompt: Waveform, transcript: str, language: str) -> Any:
        return "prompt"

    def synthesize(self, requests: list[SpeechRequest]) -> list[SpeechResult]:
        return [SpeechResult(Waveform(0.1 * torch.ones(r.num_frames * CODEC_HOP), CODEC_RATE),
                             torch.zeros(r.num_frames, 8, dtype=torch.long)) for r in requests]
