"""Serve deployments, one per stage group, each running the stages' own code on its replica.

    VoicePrompt   RVC + VALL-E X prompt encoding (a voice's prompt is cached on the replica)
    Speech        VALL-E X; concurrent chunk requests are batched by Serve (@serve.batch)
    LipsyncMel    FastPitch: alignment, subtitles' timings, the lip-sync mel
    Frames        Wav2Lip, with the prepared avatars cached by their content id
    Registry      registered voices and avatars (content-hashed), shared by every replica

A replica builds its stages exactly as the in-process pipeline does (`build_stage` on the device
the placement gives it) and runs one stage call at a time (a stage holds decode caches and CUDA
graphs that are not for concurrent use); its event loop stays free for health checks. Results go
back on the host, so the caller never needs the replica's device.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from ray import serve

from iris_pipeline.audio import Waveform
from iris_pipeline.cache import content_hash, tensor_hash
from iris_pipeline.config import PipelineConfig, parse_pipeline_config
from iris_pipeline.errors import InputError
from iris_pipeline.placement import Placement
from iris_pipeline.stages.contracts import (
    AlignRequest,
    AlignResult,
    FramesRequest,
    FramesResult,
    SpeechRequest,
    SpeechResult,
    VoiceRequest,
    VoiceResult,
)


def move_tensors(value: Any, device: torch.device | str) -> Any:
    """`value` with every tensor (in dicts, lists, tuples and dataclasses) on `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: move_tensors(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(move_tensors(v, device) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: move_tensors(getattr(value, f.name), device)
                                             for f in dataclasses.fields(value) if f.init})
    return value


class UnknownId(InputError):
    """A voice or avatar id that is not (or no longer) registered."""


class _Lru(OrderedDict):
    """A dict that keeps its `limit` most recently used entries."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def get_fresh(self, key: Any) -> Any:
        if key not in self:
            return None
        self.move_to_end(key)
        return self[key]

    def keep(self, key: Any, value: Any) -> Any:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)
        return value


class StageReplica:
    """The stages of one deployment, built and prepared on the replica's device."""

    def __init__(self, pipeline_config: dict[str, Any], stages: tuple[str, ...]):
        self.config: PipelineConfig = parse_pipeline_config(pipeline_config, source="serving pipeline config")
        from iris_pipeline.stages import build_stage

        self.placement = Placement.from_config(self.config)
        self.stages = {}
        for name in stages:
            stage = build_stage(name, self.config, self.placement.devices[name])
            stage.prepare()
            self.stages[name] = stage
        # one stage call at a time on this replica, off the event loop
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iris-stage")

    async def compute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        return move_tensors(result, "cpu")

    def device(self, stage: str) -> torch.device:
        return self.placement.devices[stage]


@serve.deployment(name="VoicePrompt")
class VoicePrompt(StageReplica):
    def __init__(self, pipeline_config: dict[str, Any]):
        stages = tuple(s for s in ("rvc", "vallex") if s in pipeline_config.get("stages", ("rvc", "vallex")))
        super().__init__(pipeline_config, stages)
        self._prompts = _Lru(self.config.serving.registry_entries)

    async def convert(self, request: VoiceRequest) -> VoiceResult:
        """RVC: the reference in the avatar's voice (RVC's own disk cache applies)."""
        on_device = VoiceRequest(request.reference.to(self.device("rvc")))
        return await self.compute(self.stages["rvc"].convert, on_device)

    async def encode_prompt(self, reference: Waveform, transcript: str, language: str) -> Any:
        key = (tensor_hash(reference.samples), reference.sample_rate, transcript, language)
        prompt = self._prompts.get_fresh(key)
        if prompt is None:
            prompt = self._prompts.keep(key, await self.compute(
                self.stages["vallex"].encode_prompt, reference.to(self.device("vallex")), transcript, language))
        return prompt


@serve.deployment(name="Speech")
class Speech(StageReplica):
    def __init__(self, pipeline_config: dict[str, Any]):
        super().__init__(pipeline_config, ("vallex",))
        settings = self.config.serving.speech
        stage = self.stages["vallex"]
        self.speak.set_max_batch_size(settings.max_batch_size or int(stage.options.max_batch))
        self.speak.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    @serve.batch
    async def speak(self, requests: list[SpeechRequest]) -> list[SpeechResult]:
        """Chunks of any jobs decoded together in the stage's slots (each result depends on its own
        request alone, whatever Serve batches it with)."""
        device = self.device("vallex")
        requests = [dataclasses.replace(r, prompt=move_tensors(r.prompt, device)) for r in requests]
        return await self.compute(self.stages["vallex"].synthesize, requests)


@serve.deployment(name="LipsyncMel")
class LipsyncMel(StageReplica):
    def __init__(self, pipeline_config: dict[str, Any]):
        super().__init__(pipeline_config, ("fastpitch",))

    async def align_chunk(self, request: AlignRequest) -> AlignResult:
        on_device = dataclasses.replace(request, speech=request.speech.to(self.device("fastpitch")))
        return await self.compute(self.stages["fastpitch"].align_chunk, on_device)


@serve.deployment(name="Frames")
class Frames(StageReplica):
    def __init__(self, pipeline_config: dict[str, Any], registry: Any):
        super().__init__(pipeline_config, ("wav2lip",))
        self._registry = registry
        self._avatars = _Lru(max(1, min(8, self.config.serving.registry_entries)))  # prepared frames are large

    def _prepare(self, avatar_id: str, data: bytes, suffix: str) -> Any:
        """The stage's own avatar preparation (face detection; its disk cache by content)."""
        with tempfile.TemporaryDirectory(prefix="iris-avatar-") as tmp:
            path = Path(tmp) / f"{avatar_id}{suffix}"
            path.write_bytes(data)
            return self.stages["wav2lip"].prepare_avatar(path, fps=self.config.video.fps)

    async def avatar(self, avatar_id: str) -> Any:
        prepared = self._avatars.get_fresh(avatar_id)
        if prepared is None:
            data, suffix = await self._registry.avatar_bytes.remote(avatar_id)
            prepared = self._avatars.keep(avatar_id, await self.compute(self._prepare, avatar_id, data, suffix))
        return prepared

    async def check_avatar(self, avatar_id: str) -> tuple[int, int, int]:
        """Prepare a newly registered avatar (the CLI's checks: decodable, a face in every frame):
        (frames, height, width)."""
        prepared = await self.avatar(avatar_id)
        return prepared.num_frames, prepared.height, prepared.width

    async def render_frames(self, requests: list[FramesRequest]) -> list[FramesResult]:
        """Frames of the requests, whose avatars are `AvatarRef`s resolved here to prepared avatars."""
        device = self.device("wav2lip")
        resolved = [dataclasses.replace(r, avatar=await self.avatar(r.avatar.avatar_id), mel=r.mel.to(device))
                    for r in requests]
        return await self.compute(self.stages["wav2lip"].render_frames, resolved)


@serve.deployment(name="Registry")
class Registry:
    """Voices and avatars by content id, shared by every ingress and Frames replica. Bounded: the
    least recently used are dropped (a render naming a dropped id gets a clear 404)."""

    def __init__(self, entries: int):
        self._voices = _Lru(entries)
        self._avatars = _Lru(entries)

    def ping(self) -> bool:
        return True

    def put_voice(self, reference: Waveform, transcript: str, language: str) -> str:
        voice_id = content_hash("voice", tensor_hash(reference.samples), int(reference.sample_rate),
                                transcript, language)[:32]
        self._voices.keep(voice_id, (reference, transcript, language))
        return voice_id

    def voice(self, voice_id: str) -> tuple[Waveform, str, str]:
        found = self._voices.get_fresh(voice_id)
        if found is None:
            raise UnknownId(f"voice_id {voice_id!r}: unknown (register the voice first)")
        return found

    def put_avatar(self, data: bytes, suffix: str) -> str:
        avatar_id = content_hash("avatar", data, suffix)[:32]
        self._avatars.keep(avatar_id, {"data": data, "suffix": suffix, "shape": None})
        return avatar_id

    def avatar_checked(self, avatar_id: str, shape: tuple[int, int, int]) -> None:
        """The Frames deployment prepared it: (frames, height, width); renders may use it now."""
        self._entry(avatar_id)["shape"] = tuple(shape)

    def drop_avatar(self, avatar_id: str) -> None:
        self._avatars.pop(avatar_id, None)

    def _entry(self, avatar_id: str) -> dict[str, Any]:
        found = self._avatars.get_fresh(avatar_id)
        if found is None:
            raise UnknownId(f"avatar_id {avatar_id!r}: unknown (register the avatar first)")
        return found

    def avatar_bytes(self, avatar_id: str) -> tuple[bytes, str]:
        entry = self._entry(avatar_id)
        return entry["data"], entry["suffix"]

    def avatar_shape(self, avatar_id: str) -> tuple[int, int, int]:
        shape = self._entry(avatar_id)["shape"]
        if shape is None:
            raise UnknownId(f"avatar_id {avatar_id!r}: still being checked; register it again")
        return shape
