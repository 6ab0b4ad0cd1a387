"""The chain: RVC -> VALL-E X -> FastPitch -> Wav2Lip, chunked, streamed, pipelined.

`check_job` validates a job and plans it once (`JobPlan`: the chunk texts, the VALL-E X frames
each chunk must or may take, the clip's imposed length); `submit` queues it and returns a
`JobHandle` that keeps the plan. Three workers joined by bounded queues then carry every job's
chunks through the stages' typed methods (`stages.contracts`):

    tts      RVCStage.convert (cached) + VallexStage.encode_prompt once per voice, then the
             scheduler (`scheduling`, `vallex.options.scheduler`) decides which chunks of which
             jobs decode together in VALL-E X's slots
    lipsync  the job's `LipsyncStream` stitches the chunk, FastPitchStage.align_chunk aligns it
             (subtitles; in the fastpitch mode also the lip-sync mel), the stream places the mel
             and says which frames became ready (a `FramesRequest`)
    render   Wav2LipStage.render_frames for those frames, frames to the host; the ready chunks of
             several jobs share one call

so chunk k is in Wav2Lip while chunk k+1 is in VALL-E X, and several jobs can be in flight. The
workers only move items between queues, one item type per queue (`_SpeechWork`, `_FramesWork`;
a failure travels in its job's `_FramesWork` so it arrives after the chunks before it). Each stage
runs on the device of the placement map and, on a GPU, on its own CUDA stream (the lipsync worker
on FastPitch's); every queue item that carries device tensors carries the producer's `Ready`
mark, which the consumer accepts before touching them (the rule is in `placement`). A job's
chunks come back through its `JobHandle` as soon as each is ready (`first_chunk_ms` is real).

The pipeline knows the stages' typed contracts, the chunk plan of `chunking` and the streaming
state of `lipsync`; it knows nothing of benchmarks or tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from iris_pipeline import chunking, timebase
from iris_pipeline.audio import Waveform, check_waveform
from iris_pipeline.config import PipelineConfig
from iris_pipeline.errors import InputError
from iris_pipeline.lipsync import LipsyncChunk, LipsyncFeatures, LipsyncStream
from iris_pipeline.metrics import RegionTimer
from iris_pipeline.placement import Placement, Ready
from iris_pipeline.scheduling import Scheduler, make_scheduler
from iris_pipeline.stages.contracts import (
    AlignRequest,
    AlignResult,
    SpeechRequest,
    VallexPrompt,
    VoiceRequest,
)
from iris_pipeline.timebase import CODEC_FRAME_RATE, CODEC_HOP, CODEC_RATE

if TYPE_CHECKING:  # the stage modules load their models' code: imported where a stage is built
    from iris_pipeline.stages.fastpitch import FastPitchStage
    from iris_pipeline.stages.rvc import RVCStage
    from iris_pipeline.stages.vallex import VallexStage
    from iris_pipeline.stages.wav2lip import Wav2LipStage

MIN_REFERENCE_SECONDS = 1.0
_QUEUE_DEPTH = 4  # chunks buffered between two workers: bounds memory, keeps the stages busy
_PROMPTS_KEPT = 16  # voices whose VALL-E X prompt stays in memory (least recently used dropped)


@dataclass
class Job:
    """One clip to render. `reference` and `avatar` are already decoded / prepared."""

    text: str
    language: str
    reference: Waveform
    transcript: str
    avatar: Any  # iris_pipeline.avatar.Avatar
    seconds: float | None = None  # speech length to impose (benchmarks): VALL-E X emits seconds * 75 frames
    seed: int = 0
    job_id: int = field(default_factory=itertools.count().__next__)


@dataclass(frozen=True)
class JobPlan:
    """A job's chunks as VALL-E X speaks them, planned once by `Pipeline.check_job`.

    Frame counts are VALL-E X codec frames (75 per second) and include the cross-fade overlap of
    every chunk but the last.
    """

    texts: tuple[str, ...]
    num_frames: tuple[int | None, ...]  # frames imposed per chunk (`Job.seconds` given), else None
    min_frames: tuple[int, ...]  # the least frames per chunk: what aligning it and one window need
    total_samples: int | None  # the clip's imposed length (samples at CODEC_RATE), else None

    @property
    def chunks(self) -> int:
        return len(self.texts)

    def speech_request(self, job: Job, chunk: int, prompt: VallexPrompt) -> SpeechRequest:
        """Chunk `chunk` of `job` for VALL-E X; it may stop at EOS only once long enough to align."""
        imposed = self.num_frames[chunk]
        return SpeechRequest(text=self.texts[chunk], language=job.language, prompt=prompt, seed=job.seed,
                             chunk=chunk, num_frames=imposed,
                             min_frames=self.min_frames[chunk] if imposed is None else None)


@dataclass
class ChunkOutput:
    """One chunk of a job, on the host: its final speech samples and the frames that became ready."""

    job_id: int
    index: int
    last: bool
    speech: torch.Tensor  # 1-D float32, CODEC_RATE; the chunk's nominal span after cross-fading
    speech_start: int  # global sample index of speech[0]
    frames: torch.Tensor  # uint8 [n, H, W, 3]
    frame_start: int  # global index of frames[0]
    timings: list = field(default_factory=list)  # FastPitch symbol timings (chunk-local seconds)
    words: list = field(default_factory=list)
    ready_at: float = 0.0  # perf_counter seconds when the chunk was handed out


@dataclass
class RenderResult:
    """A whole job: speech, frames, timings, and what the run measured."""

    speech: Waveform
    frames: torch.Tensor  # uint8 [F, H, W, 3]
    fps: float
    words: list
    timings: list
    stage_ms: dict[str, float]
    latency_ms: float
    first_chunk_ms: float
    chunks: int


@dataclass(frozen=True)
class ProgressEvent:
    """A stage finished its work on one chunk of a job (for progress bars; called from workers)."""

    stage: str  # "plan", "rvc", "vallex", "fastpitch", "wav2lip"
    job_id: int
    chunk: int
    chunks: int
    frames: int = 0  # wav2lip: frames rendered by this chunk


class _Failure:
    """A worker's exception, travelling down the queues to the job it belongs to."""

    def __init__(self, exc: BaseException):
        self.exc = exc


_STOP = object()


class JobHandle:
    """What `Pipeline.submit` returns: iterate the chunks as they come, or wait for the whole result."""

    def __init__(self, job: Job, fps: float, plan: JobPlan):
        self.job = job
        self.fps = fps
        self.plan = plan
        self.submitted_at = time.perf_counter()
        self.timer: RegionTimer | None = None
        self._outputs: queue.Queue = queue.Queue()
        self._done = False

    def _deliver(self, item: ChunkOutput | _Failure) -> None:
        self._outputs.put(item)

    def chunks(self, timeout: float | None = None) -> Iterator[ChunkOutput]:
        """Yield the job's chunks in order as they become ready; re-raise a worker's error.

        Nothing is kept here, so a consumer that writes chunks out as they come holds one at a time.
        """
        while not self._done:
            item = self._outputs.get(timeout=timeout)
            if isinstance(item, _Failure):
                self._done = True
                raise item.exc
            if item.last:
                self._done = True
            yield item

    def result(self, timeout: float | None = None) -> RenderResult:
        """Wait for every chunk and assemble the clip."""
        return self.assemble(list(self.chunks(timeout=timeout)))

    def assemble(self, chunks: list[ChunkOutput]) -> RenderResult:
        """The clip made of all its chunks (as yielded by `chunks()`)."""
        end = chunks[-1].ready_at
        speech = torch.cat([c.speech for c in chunks])
        with_frames = [c.frames for c in chunks if c.frames.shape[0]]
        frames = torch.cat(with_frames) if with_frames else torch.empty((0, 0, 0, 3), dtype=torch.uint8)
        timings, words = [], []
        for c in chunks:
            offset = c.speech_start / CODEC_RATE
            timings += [_shift(t, offset) for t in c.timings]
            words += [_shift(w, offset) for w in c.words]
        return RenderResult(
            speech=Waveform(speech, CODEC_RATE),
            frames=frames,
            fps=self.fps,
            words=words,
            timings=timings,
            stage_ms=self.timer.totals_ms() if self.timer is not None else {},
            latency_ms=(end - self.submitted_at) * 1e3,
            first_chunk_ms=(chunks[0].ready_at - self.submitted_at) * 1e3,
            chunks=len(chunks),
        )


def _shift(timing: Any, offset_s: float) -> Any:
    """A symbol / word timing moved from chunk-local to clip time."""
    return type(timing)(**{**timing.__dict__, "start_s": timing.start_s + offset_s,
                           "end_s": timing.end_s + offset_s})


class ClipTally:
    """What a consumer that writes each chunk out as it comes needs at the end, without keeping chunks:
    sample and frame counts, the words in clip time (the subtitles), and the timings of the run.

    `add(chunk)` reads what it needs from the chunk; the caller then drops the chunk, so memory
    does not grow with the clip (only the words do, a few bytes per word).
    """

    def __init__(self, handle: JobHandle):
        self.handle = handle
        self.samples = 0
        self.frames = 0
        self.chunks = 0
        self.words: list = []
        self._first_ready: float | None = None
        self._last_ready = 0.0

    def add(self, chunk: ChunkOutput) -> None:
        offset = chunk.speech_start / CODEC_RATE
        self.words += [_shift(w, offset) for w in chunk.words]
        self.samples += int(chunk.speech.shape[0])
        self.frames += int(chunk.frames.shape[0])
        self.chunks += 1
        if self._first_ready is None:
            self._first_ready = chunk.ready_at
        self._last_ready = chunk.ready_at

    @property
    def seconds(self) -> float:
        return self.samples / CODEC_RATE

    @property
    def latency_ms(self) -> float:
        return (self._last_ready - self.handle.submitted_at) * 1e3

    @property
    def first_chunk_ms(self) -> float:
        return ((self._first_ready or self._last_ready) - self.handle.submitted_at) * 1e3

    @property
    def stage_ms(self) -> dict[str, float]:
        return self.handle.timer.totals_ms() if self.handle.timer is not None else {}


@dataclass
class _SpeechWork:
    """tts -> lipsync: one chunk's generated speech (with its overlap tail unless it is the last)."""

    handle: JobHandle
    index: int
    speech: torch.Tensor  # generated samples at CODEC_RATE
    ready: Ready  # when `speech` is written (VALL-E X's stream)

    @property
    def last(self) -> bool:
        return self.index == self.handle.plan.chunks - 1


@dataclass
class _FramesWork:
    """lipsync -> render: one chunk's final speech, alignment and ready frames, or the failure that
    ended its job (delivered in order, after the chunks before it)."""

    handle: JobHandle
    index: int
    chunk: LipsyncChunk | None = None
    alignment: AlignResult | None = None
    ready: Ready = field(default_factory=Ready)  # when the speech and mel are written (the lipsync stream)
    failure: BaseException | None = None


class Pipeline:
    """Build once, `prepare()` once, then `render(job)` or `submit(job)` many times."""

    def __init__(self, config: PipelineConfig, placement: Placement | None = None,
                 stage_factory: Callable[[str, PipelineConfig, torch.device], Any] | None = None,
                 on_progress: Callable[[ProgressEvent], None] | None = None):
        self.config = config
        self._on_progress = on_progress
        self.placement = placement or Placement.from_config(config)
        self._stage_factory = stage_factory or _default_stage
        # built by prepare() (wav2lip maybe earlier, by prepare_avatar()); None: not in the chain
        self.rvc: RVCStage | None = None
        self.vallex: VallexStage | None = None
        self.fastpitch: FastPitchStage | None = None
        self.wav2lip: Wav2LipStage | None = None
        self._threads: list[threading.Thread] = []
        self._tts_in: queue.Queue = queue.Queue()  # JobHandle
        self._lipsync_in: queue.Queue = queue.Queue(maxsize=_QUEUE_DEPTH)  # _SpeechWork
        self._render_in: queue.Queue = queue.Queue(maxsize=_QUEUE_DEPTH)  # _FramesWork
        self._lipsync_streams: dict[int, LipsyncStream] = {}  # by job id, the lipsync worker's
        self._scheduler: Scheduler | None = None
        self._prompts: OrderedDict[tuple, Any] = OrderedDict()
        self._prompts_lock = threading.Lock()
        self._closed = False

    # --- set-up ---------------------------------------------------------------------------------

    def built_stages(self) -> dict[str, Any]:
        """The stages built so far, by name, in chain order."""
        stages = {"rvc": self.rvc, "vallex": self.vallex, "fastpitch": self.fastpitch, "wav2lip": self.wav2lip}
        return {name: stage for name, stage in stages.items() if stage is not None}

    def _build(self, name: str) -> Any:
        """Build stage `name` on its device (not prepared) unless it is built already."""
        stage = self.built_stages().get(name)
        if stage is None:
            stage = self._stage_factory(name, self.config, self.placement.devices[name])
            setattr(self, name, stage)
        return stage

    def prepare(self, progress: Callable[[str], None] | None = None) -> None:
        """Build / load every stage on its device and start the workers. Idempotent."""
        if self._threads:
            return
        if any(d.type == "cuda" for d in self.placement.devices.values()):
            self.placement.create_streams()
        for name in self.config.stages:
            if progress is not None:
                progress(name)
            stage = self._build(name)
            with self.placement.on(name):
                stage.prepare()  # idempotent; a stage built by prepare_avatar() loads here
        self._scheduler = make_scheduler(self.vallex)  # the tts worker's alone from here on
        for target, name in ((self._tts_worker, "iris-tts"), (self._lipsync_worker, "iris-lipsync"),
                             (self._render_worker, "iris-render")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def scheduler(self) -> Scheduler | None:
        """The tts worker's scheduler (`vallex.options.scheduler`), once prepared."""
        return self._scheduler

    def prepare_avatar(self, path: str | Path, progress: Any = None) -> Any:
        """Frames and face boxes of an avatar at the output fps (cached by content hash).

        Works before `prepare()`: face detection does not need the lip-sync model, so a bad avatar
        is refused before any model is loaded.
        """
        return self._build("wav2lip").prepare_avatar(path, fps=self.config.video.fps, progress=progress)

    def release_caches(self) -> int:
        """Free the stages' caches that `prepare()` did not set up and return the freed device
        memory to the driver (the allocator's free blocks), so the next jobs
        start from the prepared state. Call between jobs (a benchmark: between measurement
        windows). Returns the bytes the stages freed."""
        freed = 0
        for stage in self.built_stages().values():
            release = getattr(stage, "release_caches", None)  # stand-in stages may keep none
            if release is not None:
                freed += release()
        for device in self.placement.gpu_devices:
            with torch.cuda.device(device):
                torch.cuda.empty_cache()
        return freed

    def close(self) -> None:
        """Stop the workers: the step running now finishes, pending jobs are abandoned (their handles
        get an error), so closing after Ctrl-C does not wait for the rest of a long clip."""
        if self._closed:
            return
        self._closed = True
        self._tts_in.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=30)

    def __enter__(self) -> Pipeline:
        self.prepare()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- jobs -----------------------------------------------------------------------------------

    def check_job(self, job: Job) -> JobPlan:
        """Refuse bad input before any work starts (one clear line): empty or unspeakable text, a
        script past `config.limits`, a bad reference, `seconds` out of range or too short for the text.
        Returns the job's plan (pass it to `submit` so that the job is not planned again)."""
        if not job.text or not job.text.strip():
            raise InputError("text: the script is empty")
        if not any(ch.isalnum() for ch in job.text):
            raise InputError("text: nothing to speak (the script has no letter or digit)")
        limits = self.config.limits
        words = len(job.text.split())
        if len(job.text) > limits.max_characters or words > limits.max_words:
            raise InputError(f"text: {len(job.text)} characters, {words} words; the limit is "
                             f"{limits.max_characters} characters and {limits.max_words} words "
                             f"(limits.max_characters / limits.max_words in the config)")
        chunks = self._chunk_plan(job)  # unsupported language -> one clear line
        if chunks.expected_seconds > limits.max_seconds:
            raise InputError(f"text: about {chunks.expected_seconds:.0f} s of speech; the limit is "
                             f"{limits.max_seconds:g} s (limits.max_seconds in the config)")
        check_waveform(job.reference, name="reference", min_seconds=MIN_REFERENCE_SECONDS,
                       max_seconds=self.config.max_reference_seconds)
        texts = [c.text for c in chunks.chunks]
        least = self._min_chunk_frames(texts)
        if job.seconds is not None:
            if not (0 < job.seconds <= limits.max_seconds):
                raise InputError(f"seconds: must be in (0, {limits.max_seconds:g}], got {job.seconds:g}")
            if round(job.seconds * CODEC_FRAME_RATE) < sum(least):
                raise InputError(f"seconds: {job.seconds:g} s is too short for the text: aligning it needs "
                                 f"at least {sum(least) / CODEC_FRAME_RATE:.2f} s of speech")
        return self._plan(job, chunks, least)

    def submit(self, job: Job, plan: JobPlan | None = None) -> JobHandle:
        """Queue a job; its chunks arrive through the returned handle. `plan`: what `check_job(job)`
        returned, if the caller checked the job already (it is checked and planned here otherwise)."""
        if not self._threads:
            raise RuntimeError("Pipeline.submit() called before prepare()")
        if self._closed:
            raise RuntimeError("Pipeline.submit() called after close()")
        handle = JobHandle(job, self.config.video.fps, plan if plan is not None else self.check_job(job))
        device = next(iter(self.placement.gpu_devices), torch.device("cpu"))
        handle.timer = RegionTimer(device)
        self._tts_in.put(handle)
        return handle

    def render(self, job: Job, timeout: float | None = None) -> RenderResult:
        return self.submit(job).result(timeout=timeout)

    def stream(self, job: Job, timeout: float | None = None) -> Iterator[ChunkOutput]:
        return self.submit(job).chunks(timeout=timeout)

    @staticmethod
    def _abandon(handle: JobHandle) -> None:
        handle._deliver(_Failure(RuntimeError("the pipeline was closed before this job finished")))

    def _notify(self, stage: str, job_id: int, chunk: int, chunks: int, frames: int = 0) -> None:
        if self._on_progress is not None:
            self._on_progress(ProgressEvent(stage, job_id, chunk, chunks, frames))

    # --- planning -------------------------------------------------------------------------------

    def _chunk_plan(self, job: Job) -> chunking.ChunkPlan:
        chunk_cfg = self.config.chunking
        if chunk_cfg.enabled:
            return chunking.plan_chunks(job.text, job.language, chunk_seconds=chunk_cfg.chunk_seconds,
                                        first_chunk_seconds=chunk_cfg.first_chunk_seconds)
        return chunking.plan_chunks(job.text, job.language, chunk_seconds=math.inf)

    def _min_chunk_frames(self, texts: list[str]) -> list[int]:
        """Nominal VALL-E X frames each chunk needs at least: what FastPitch's aligner needs for its
        text (one mel frame per symbol), and one Wav2Lip window; one frame of margin."""
        aligner = stage_class("fastpitch").min_speech_seconds if "fastpitch" in self.config.stages else None
        return [math.ceil(max(timebase.MEL_WINDOW_SECONDS, aligner(text) if aligner else 0.0) * CODEC_FRAME_RATE) + 1
                for text in texts]

    def _plan(self, job: Job, chunks: chunking.ChunkPlan, least: list[int]) -> JobPlan:
        """VALL-E X frames per chunk (imposed, or None) and the least frames per chunk (both with the
        overlap included), and the clip's imposed length, from the chunk plan and the nominal least."""
        texts = tuple(c.text for c in chunks.chunks)
        overlap_frames = self._overlap_samples() // CODEC_HOP
        extra = [overlap_frames if k < len(texts) - 1 else 0 for k in range(len(texts))]
        minimums = tuple(m + e for m, e in zip(least, extra, strict=True))
        if job.seconds is None:
            return JobPlan(texts, (None,) * len(texts), minimums, None)
        total_frames = max(sum(least), round(job.seconds * CODEC_RATE / CODEC_HOP))
        targets = chunks.unit_targets(total_frames, least)
        frames = tuple(t + e for t, e in zip(targets, extra, strict=True))
        return JobPlan(texts, frames, minimums, total_frames * CODEC_HOP)

    def _overlap_samples(self) -> int:
        return chunking.crossfade_samples(self.config.chunking.crossfade_ms, CODEC_RATE, granularity=CODEC_HOP)

    # --- the tts worker: RVC + VALL-E X ----------------------------------------------------------

    def _voice(self, handle: JobHandle) -> VallexPrompt:
        """The job's VALL-E X prompt: RVC (its own disk cache) then EnCodec; memoised per voice."""
        job = handle.job
        from iris_pipeline.cache import tensor_hash

        key = (tensor_hash(job.reference.samples), job.reference.sample_rate, job.transcript, job.language)
        with self._prompts_lock:
            prompt = self._prompts.get(key)
            if prompt is not None:
                self._prompts.move_to_end(key)
        if prompt is not None:
            return prompt
        reference = job.reference
        if self.rvc is not None:
            with self.placement.on("rvc"), handle.timer.region("rvc", self.placement.devices["rvc"]):
                request = VoiceRequest(reference.to(self.placement.devices["rvc"]))
                reference = self.rvc.convert(request).prompt
                converted = self.placement.ready("rvc")  # the prompt is read on VALL-E X's stream next
            self._notify("rvc", job.job_id, 0, 1)
        else:
            converted = Ready()
        vallex_device = self.placement.devices["vallex"]
        with self.placement.on("vallex"), handle.timer.region("vallex_prompt", vallex_device):
            self.placement.accept("vallex", converted, [reference.samples])
            prompt = self.vallex.encode_prompt(reference.to(vallex_device), job.transcript, job.language)
        with self._prompts_lock:  # bounded: a server sees any number of voices
            self._prompts[key] = prompt
            while len(self._prompts) > _PROMPTS_KEPT:
                self._prompts.popitem(last=False)
        return prompt

    def _tts_worker(self) -> None:
        """Feed planned jobs to the scheduler (`vallex.options.scheduler`) while it takes them, step it,
        and move each finished chunk to the lipsync queue; block only when nothing is in flight."""
        scheduler = self._scheduler
        plans: dict[JobHandle, list[SpeechRequest]] = {}  # the requests of each job in flight
        refused: JobHandle | None = None  # planned, not taken by the scheduler yet (back-pressure)
        while True:
            if self._closed:  # pending jobs are abandoned; the _STOP that close() sends ends the loop
                for dropped in [*scheduler.drop(), *([refused] if refused is not None else [])]:
                    self._abandon(dropped)
                refused = None
                plans.clear()
            if refused is not None and scheduler.offer(refused, plans[refused]):
                refused = None
            while refused is None:
                try:
                    handle = self._tts_in.get(block=not scheduler.busy)
                except queue.Empty:
                    break
                if handle is _STOP or self._closed:
                    for dropped in [*scheduler.drop(), *([] if handle is _STOP else [handle])]:
                        self._abandon(dropped)
                    if handle is _STOP:
                        self._lipsync_in.put(_STOP)
                        return
                    continue
                plan = self._speech_plan(handle)
                if plan is None:
                    continue
                plans[handle] = plan
                if not scheduler.offer(handle, plan):
                    refused = handle
            if scheduler.busy:
                self._tts_step(scheduler, plans)

    def _speech_plan(self, handle: JobHandle) -> list[SpeechRequest] | None:
        """The job's VALL-E X requests, one per chunk of its plan (None once a failure is delivered)."""
        try:
            self._notify("plan", handle.job.job_id, 0, handle.plan.chunks)
            prompt = self._voice(handle)
        except BaseException as exc:  # noqa: BLE001 - delivered to the job's consumer
            handle._deliver(_Failure(exc))
            return None
        return [handle.plan.speech_request(handle.job, k, prompt) for k in range(handle.plan.chunks)]

    def _tts_step(self, scheduler: Scheduler, plans: dict[JobHandle, list[SpeechRequest]]) -> None:
        device = self.placement.devices["vallex"]
        with self.placement.on("vallex"):
            done = scheduler.step()
            speech = [d.result.speech.samples.to(device) if d.error is None else None for d in done]
            written = self.placement.ready("vallex")
            if done:
                self.placement.synchronize("vallex")  # the chunks' decode time ends when they are written
        for chunk, samples in zip(done, speech, strict=True):
            handle = chunk.job
            count = handle.plan.chunks
            if chunk.error is not None or chunk.index == count - 1:
                del plans[handle]
            if chunk.error is not None:
                handle._deliver(_Failure(chunk.error))
                continue
            handle.timer.add_ms("vallex", chunk.decode_ms)
            self._notify("vallex", handle.job.job_id, chunk.index, count)
            self._lipsync_in.put(_SpeechWork(handle, chunk.index, samples, written))

    # --- the lipsync worker: stitching, alignment, lip-sync mel, frames ready ----------------------

    def _lipsync_worker(self) -> None:
        while True:
            item = self._lipsync_in.get()
            if item is _STOP:
                self._render_in.put(_STOP)
                return
            job_id = item.handle.job.job_id
            if self._closed:
                self._lipsync_streams.pop(job_id, None)
                self._abandon(item.handle)
                continue
            try:
                with self.placement.on(self._lipsync_stage):
                    work = self._lipsync(item, self._lipsync_stream(item.handle))
            except BaseException as exc:  # noqa: BLE001
                self._lipsync_streams.pop(job_id, None)
                self._render_in.put(_FramesWork(item.handle, item.index, failure=exc))
                continue
            if item.last:
                self._lipsync_streams.pop(job_id, None)
            self._render_in.put(work)

    @property
    def _lipsync_stage(self) -> str:
        """The stage whose device and stream the lipsync worker uses: FastPitch's, else Wav2Lip's."""
        return "fastpitch" if "fastpitch" in self.placement.devices else "wav2lip"

    @property
    def _lipsync_features(self) -> LipsyncFeatures:
        """What drives the lips: FastPitch's mel where configured and FastPitch is in the chain."""
        return "fastpitch" if self.config.lipsync_features == "fastpitch" and self.fastpitch is not None \
            else "speech"

    def _lipsync_stream(self, handle: JobHandle) -> LipsyncStream:
        stream = self._lipsync_streams.get(handle.job.job_id)
        if stream is None:
            stream = self._lipsync_streams[handle.job.job_id] = LipsyncStream(
                avatar=handle.job.avatar, fps=self.config.video.fps, features=self._lipsync_features,
                overlap_samples=self._overlap_samples(), sample_rate=CODEC_RATE,
                total_samples=handle.plan.total_samples)
        return stream

    def _lipsync(self, item: _SpeechWork, stream: LipsyncStream) -> _FramesWork:
        """One chunk through the job's lip-sync stream, on the lipsync stream (entered by the caller)."""
        handle = item.handle
        self.placement.accept(self._lipsync_stage, item.ready, [item.speech])
        device = self.placement.devices.get("fastpitch", self.placement.devices["wav2lip"])
        stitched = stream.stitch(item.speech.float().to(device), last=item.last)
        alignment = None
        if self.fastpitch is not None:  # alignment (subtitles) always; its mel drives the lips in fastpitch mode
            request = AlignRequest(handle.plan.texts[item.index], Waveform(stitched.samples, CODEC_RATE))
            with self.placement.on("fastpitch"), handle.timer.region("fastpitch", device):
                alignment = self.fastpitch.align_chunk(request)
            self._notify("fastpitch", handle.job.job_id, item.index, handle.plan.chunks)
        chunk_mel = alignment.lipsync_mel if stream.features == "fastpitch" else None
        timed = handle.timer.region("speech_mel", device) if stream.computes_speech_mel else contextlib.nullcontext()
        with timed:
            chunk = stream.push(stitched, chunk_mel)
        # the speech and the mel are read on Wav2Lip's stream, by the render worker
        return _FramesWork(handle, item.index, chunk, alignment, self.placement.ready(self._lipsync_stage))

    # --- the render worker: Wav2Lip --------------------------------------------------------------

    def _render_worker(self) -> None:
        held = None  # an item taken while gathering that did not fit the batch: the next batch's first
        while True:
            items, held = self._take_render_items(held)
            self._render_items([item for item in items if item is not _STOP])
            if items[-1] is _STOP:
                return

    def _take_render_items(self, held: _FramesWork | None) -> tuple[list[Any], _FramesWork | None]:
        """The render queue's items that are ready, in queue order: the first (waited for, unless one
        was held back), then those already waiting while their frames fit in one Wav2Lip batch
        (`wav2lip.options.batch_size`; the first is taken whatever its size). Returns them and the
        item taken that did not fit, if any."""
        limit = self.wav2lip.options.batch_size
        items = [held if held is not None else self._render_in.get()]
        frames = _frame_count(items[0])
        while items[-1] is not _STOP and frames < limit:
            try:
                item = self._render_in.get_nowait()
            except queue.Empty:
                break
            if frames + _frame_count(item) > limit:
                return items, item
            items.append(item)
            frames += _frame_count(item)
        return items, None

    def _render_items(self, items: list[_FramesWork]) -> None:
        """Render the chunks among `items` together and deliver every item to its job, in queue
        order (so each job's chunks stay in order); failures from the lipsync worker pass through."""
        if self._closed:
            for item in items:
                self._abandon(item.handle)
            return
        works = [item for item in items if item.failure is None]
        outputs = dict(zip(map(id, works), self._render(works), strict=True))
        for item in items:
            item.handle._deliver(_Failure(item.failure) if item.failure is not None else outputs[id(item)])

    def _render(self, works: list[_FramesWork]) -> list[ChunkOutput | _Failure]:
        """Chunk outputs of several jobs' chunks, their frames rendered in one stage call."""
        device = self.placement.devices["wav2lip"]
        with self.placement.on("wav2lip"):
            for work in works:
                self.placement.accept("wav2lip", work.ready, [work.chunk.speech.samples, work.chunk.frames.mel])
            drawn = [work for work in works if work.chunk.frames.frame_count]
            rendered = dict(zip(map(id, drawn), self._render_frames(drawn, device), strict=True))
            # on this stream: after the accepted marks
            samples = [work.chunk.speech.samples.detach().float().cpu() for work in works]
        outputs: list[ChunkOutput | _Failure] = []
        for work, speech_samples in zip(works, samples, strict=True):
            frames = rendered.get(id(work), torch.empty((0, 0, 0, 3), dtype=torch.uint8))
            if isinstance(frames, BaseException):
                outputs.append(_Failure(frames))
                continue
            handle, speech, request, alignment = work.handle, work.chunk.speech, work.chunk.frames, work.alignment
            self._notify("wav2lip", handle.job.job_id, work.index, -1, request.frame_count)
            outputs.append(ChunkOutput(
                job_id=handle.job.job_id, index=work.index, last=speech.last, speech=speech_samples,
                speech_start=speech.start, frames=frames, frame_start=request.frame_start,
                timings=alignment.timings if alignment is not None else [],
                words=alignment.words if alignment is not None else [], ready_at=time.perf_counter()))
        return outputs

    def _render_frames(self, works: list[_FramesWork], device: torch.device) -> list[torch.Tensor | BaseException]:
        """Each chunk's frames from one `render_frames` call; where that call fails, each chunk
        alone, so a bad request fails only its own job. The call's wall time is the Wav2Lip time of
        every job in it, once: each waited for all of it (the frames are on the host when it returns)."""
        if not works:
            return []
        requests = [dataclasses.replace(work.chunk.frames, mel=work.chunk.frames.mel.to(device)) for work in works]
        try:
            start = time.perf_counter()
            results = self.wav2lip.render_frames(requests)
            elapsed_ms = (time.perf_counter() - start) * 1e3
        except BaseException as exc:  # noqa: BLE001 - delivered to the job(s) it belongs to
            if len(works) == 1:
                return [exc]
            return [self._render_frames([work], device)[0] for work in works]
        for handle in {id(work.handle): work.handle for work in works}.values():  # once per job, whatever its chunks
            handle.timer.add_ms("wav2lip", elapsed_ms)
        return [result.frames for result in results]


def _frame_count(item: Any) -> int:
    """Frames a render queue item asks for (0 for a failure or the stop mark)."""
    return item.chunk.frames.frame_count if isinstance(item, _FramesWork) and item.chunk is not None else 0


def _default_stage(name: str, config: PipelineConfig, device: torch.device) -> Any:
    """The production stage classes (imported lazily: a stage's models load only when it is used)."""
    from iris_pipeline.stages import build_stage

    return build_stage(name, config, device)


def stage_class(name: str) -> Any:
    """A stage's class, for what it can tell without being built (imported lazily, as above)."""
    from iris_pipeline.stages import stage_class as lookup

    return lookup(name)
