"""The slot API of the VALL-E X stage (`scheduling.SpeechSlots`) for stand-in stages that only
implement `synthesize`: every admitted request ends at the next step, all in one `synthesize` call."""

from __future__ import annotations

from collections.abc import Hashable

from iris_pipeline.stages.contracts import SpeechRequest, SpeechResult


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
