"""Remote stages: what the in-process `Pipeline` calls when its stages live in Serve deployments.

The ingress runs an ordinary `Pipeline` (its chunk planning, batching, stitching, lip-sync mel
placement and frame windows, i.e. the single-machine engine's own code) built with a stage factory
that returns these stand-ins. Each forwards the typed stage method the pipeline calls (`convert`,
`encode_prompt`, `synthesize` and the slots the tts scheduler drives, `align_chunk`,
`render_frames`) to its deployment through a Serve
handle; the requests and results of `stages.contracts` travel through Ray's object store. So a render over HTTP and an in-process render run the same code
on the same inputs.

A call lost with its replica (killed, node gone) is retried on another replica: stage calls are
pure functions of their inputs (seeded), so a retry returns what the lost call would have. When
the retries are spent the job fails with `StageUnavailable`, one line naming the stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ray import exceptions as ray_errors

from iris_pipeline.errors import IrisError
from iris_pipeline.stages.contracts import (
    AlignRequest,
    AlignResult,
    FramesRequest,
    FramesResult,
    SpeechRequest,
    SpeechResult,
    VallexPrompt,
    VoiceRequest,
    VoiceResult,
)

# what a lost replica looks like to a caller; anything else (a stage's own error) is not retried
_REPLICA_LOST = (ray_errors.RayActorError, ray_errors.ActorUnavailableError, ray_errors.ActorDiedError)
_RETRY_BACKOFF_S = 0.5  # doubled per attempt: Serve's controller needs a moment to replace a replica


class StageUnavailable(IrisError):
    """A stage's deployment could not answer (its replicas lost) after the allowed retries."""


@dataclass(frozen=True)
class AvatarRef:
    """A registered avatar as the pipeline's `Job.avatar` in the ingress: the Frames deployment
    resolves it to its prepared `Avatar` (frames, boxes, crops) from its own cache."""

    avatar_id: str
    height: int
    width: int


def unwrap(exc: BaseException) -> BaseException:
    """The stage's own exception inside Ray's task-error wrapper (whose text is a traceback)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class StageCalls:
    """Calls into one deployment, with retries on lost replicas and per-stage observers."""

    def __init__(self, stage: str, handle: Any, retries: int,
                 observe: Callable[[str, float], None] | None = None,
                 inflight: Callable[[str, int], None] | None = None):
        self.stage = stage
        self.handle = handle
        self._retries = retries
        self._observe = observe
        self._inflight = inflight

    def send(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Start a call; its `DeploymentResponse` is read with `result()`."""
        return getattr(self.handle, method).remote(*args, **kwargs)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.result(method, self.send(method, *args, **kwargs), args, kwargs)

    def result(self, method: str, response: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        """The call's answer; after a lost replica the call is sent again, up to the retries."""
        if self._inflight is not None:
            self._inflight(self.stage, +1)
        start = time.perf_counter()
        try:
            for attempt in range(self._retries + 1):
                try:
                    answer = response.result()
                    break
                except _REPLICA_LOST as exc:
                    if attempt == self._retries:
                        raise StageUnavailable(
                            f"stage {self.stage}: its replica was lost during {method}() and "
                            f"{self._retries} retr{'y' if self._retries == 1 else 'ies'} failed "
                            f"({type(exc).__name__}); the request was not completed") from None
                    time.sleep(_RETRY_BACKOFF_S * 2 ** attempt)
                    response = self.send(method, *args, **(kwargs or {}))
                except Exception as exc:
                    raise unwrap(exc) from None
        finally:
            if self._inflight is not None:
                self._inflight(self.stage, -1)
        if self._observe is not None:
            self._observe(self.stage, (time.perf_counter() - start) * 1e3)
        return answer


class RemoteStage:
    """Base of the stand-ins: nothing to load here (the replicas load their models)."""

    def __init__(self, calls: StageCalls, options: Any = None):
        self.calls = calls
        self.options = options

    def prepare(self) -> None:
        return None


class RemoteRVC(RemoteStage):
    def convert(self, request: VoiceRequest) -> VoiceResult:
        return self.calls.call("convert", request)


class RemoteVallex(RemoteStage):
    """Prompt encoding goes to the voice deployment, speech to the speech deployment, whose Serve
    batching groups concurrent chunks (of this and other ingress replicas) into one decode."""

    def __init__(self, calls: StageCalls, prompt_calls: StageCalls, options: Any):
        super().__init__(calls, options)
        self.prompt_calls = prompt_calls
        self._in_flight: dict[Hashable, tuple[SpeechRequest, Any]] = {}  # by tag, oldest first

    def encode_prompt(self, prompt: Any, transcript: str, language: str) -> VallexPrompt:
        return self.prompt_calls.call("encode_prompt", prompt, transcript, language)

    def synthesize(self, requests: list[SpeechRequest]) -> list[SpeechResult]:
        # one Serve request per chunk, all in flight at once: @serve.batch regroups them
        pending = [self.calls.send("speak", request) for request in requests]
        return [self.calls.result("speak", response, (request,)) for request, response in zip(requests, pending, strict=True)]

    # the slots a scheduler drives (`scheduling.SpeechSlots`): a slot is a chunk in flight to the
    # deployment, whose Serve batching decides what decodes together
    @property
    def slots(self) -> int:
        return int(self.options.max_batch)

    @property
    def free_slots(self) -> int:
        return self.slots - len(self._in_flight)

    def admit(self, request: SpeechRequest, tag: Hashable) -> None:
        self._in_flight[tag] = (request, self.calls.send("speak", request))

    def step(self, slot_wanted: bool = False) -> list[tuple[Hashable, SpeechResult | BaseException]]:
        """The oldest chunk in flight, once its answer (or its own error) came: waits for it."""
        if not self._in_flight:
            return []
        tag = next(iter(self._in_flight))
        request, response = self._in_flight.pop(tag)
        try:
            return [(tag, self.calls.result("speak", response, (request,)))]
        except Exception as exc:  # noqa: BLE001 - this chunk's job fails, the others go on
            return [(tag, exc)]

    def cancel(self, tags: set[Hashable]) -> None:
        for tag in tags:  # the deployment finishes them; their answers are dropped
            self._in_flight.pop(tag, None)


class RemoteFastPitch(RemoteStage):
    def align_chunk(self, request: AlignRequest) -> AlignResult:
        return self.calls.call("align_chunk", request)


class RemoteWav2Lip(RemoteStage):
    def render_frames(self, requests: list[FramesRequest]) -> list[FramesResult]:
        return self.calls.call("render_frames", requests)


def remote_stage_factory(handles: dict[str, Any], retries: int,
                         observe: Callable[[str, float], None] | None = None,
                         inflight: Callable[[str, int], None] | None = None) -> Callable[..., RemoteStage]:
    """A `Pipeline` stage factory over the deployments' handles (keys: the deployment names)."""

    def calls(stage: str, deployment: str) -> StageCalls:
        return StageCalls(stage, handles[deployment], retries, observe, inflight)

    def factory(name: str, config: Any, device: Any) -> RemoteStage:
        if name == "rvc":
            return RemoteRVC(calls("rvc", "VoicePrompt"))
        if name == "vallex":
            return RemoteVallex(calls("vallex", "Speech"), calls("vallex_prompt", "VoicePrompt"),
                                config.vallex.options)
        if name == "fastpitch":
            return RemoteFastPitch(calls("fastpitch", "LipsyncMel"))
        if name == "wav2lip":
            return RemoteWav2Lip(calls("wav2lip", "Frames"), config.wav2lip.options)  # the render worker's batch size
        raise KeyError(name)

    return factory
