"""The chain: RVC -> VALL-E X -> FastPitch -> Wav2Lip, chunked, streamed, pipelined.

Three workers joined by bounded queues carry every job's chunks through the stages:

    tts      RVC prompt (cached) + VALL-E X, chunk by chunk; chunks of several jobs are batched
    lipsync  audio stitching (equal-power cross-fades) + the lip-sync mel (FastPitch or the speech's)
    render   Wav2Lip for every frame whose mel window is complete, frames to the host; the chunks of
             several jobs that are ready share one batch

so chunk k is in Wav2Lip while chunk k+1 is in VALL-E X, and several jobs can be in flight. Each
stage runs on the device of the placement map and, on a GPU, on its own CUDA stream (the lipsync
worker on FastPitch's); every queue item that carries device tensors carries the producer's `Ready`
mark, which the consumer accepts before touching them (the rule is in `placement`). A job's
chunks come back through its `JobHandle` as soon as each is ready (`first_chunk_ms` is real).

The pipeline knows the stages' `run()` contracts and the arithmetic of `chunking`; it knows
nothing of benchmarks or tests.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from iris_pipeline import chunking, timebase
from iris_pipeline.audio import Waveform, check_waveform
from iris_pipeline.config import PipelineConfig
from iris_pipeline.errors import InputError
from iris_pipeline.metrics import RegionTimer
from iris_pipeline.placement import Placement, Ready
from iris_pipeline.stages.contracts import FramesRequest
from iris_pipeline.timebase import CODEC_FRAME_RATE, CODEC_HOP, CODEC_RATE

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

    def __init__(self, job: Job, fps: float):
        self.job = job
        self.fps = fps
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
class _SpeechChunk:
    handle: JobHandle
    index: int
    count: int
    text: str
    speech: torch.Tensor  # generated samples, incl. the overlap tail for all but the last
    total_samples: int | None  # the clip's length when imposed
    ready: Ready  # when `speech` is written (VALL-E X's stream)


@dataclass
class _FramesRequest:
    handle: JobHandle
    index: int
    last: bool
    speech: torch.Tensor
    speech_start: int
    mel: torch.Tensor
    mel_offset: int
    total_mel_frames: int
    frame_start: int
    frame_count: int
    timings: list
    words: list
    ready: Ready  # when `speech` and `mel` are written (the lipsync stream)


@dataclass
class _LipsyncState:
    """Per-job state of the lipsync worker, bounded whatever the clip's length: the stitcher's overlap
    tail, the audio that mel columns still to come depend on (speech mode), the lip-sync mel columns
    that frames still to come read, and counters."""

    stitcher: chunking.AudioStitcher
    samples: int = 0  # stitched samples so far
    audio: torch.Tensor | None = None  # stitched samples [audio_start, samples) (speech mode)
    audio_start: int = 0
    mel: torch.Tensor | None = None  # lip-sync mel columns [mel_start, mel_start + mel.shape[1])
    mel_start: int = 0
    frames_done: int = 0

    def append_mel(self, columns: torch.Tensor) -> torch.Tensor:
        """The kept columns followed by `columns` (the next ones in clip order)."""
        self.mel = columns if self.mel is None else torch.cat([self.mel, columns], dim=1)
        return self.mel

    @property
    def mel_columns(self) -> int:
        return self.mel_start + (0 if self.mel is None else self.mel.shape[1])

    def drop_mel_before(self, column: int) -> None:
        """Forget the columns before `column` (no frame still to come reads them); copies the rest so
        the dropped columns' memory is freed, not pinned by a view."""
        cut = column - self.mel_start
        if self.mel is not None and cut > 0:
            self.mel = self.mel[:, cut:].clone()
            self.mel_start = column

    def append_audio(self, body: torch.Tensor) -> torch.Tensor:
        self.audio = body if self.audio is None else torch.cat([self.audio, body])
        return self.audio

    def drop_audio_before(self, sample: int) -> None:
        cut = sample - self.audio_start
        if self.audio is not None and cut > 0:
            self.audio = self.audio[cut:].clone()
            self.audio_start = sample


class Pipeline:
    """Build once, `prepare()` once, then `render(job)` or `submit(job)` many times."""

    def __init__(self, config: PipelineConfig, placement: Placement | None = None,
                 stage_factory: Callable[[str, PipelineConfig, torch.device], Any] | None = None,
                 on_progress: Callable[[ProgressEvent], None] | None = None):
        self.config = config
        self._on_progress = on_progress
        self.placement = placement or Placement.from_config(config)
        self._stage_factory = stage_factory or _default_stage
        self.stages: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self._tts_in: queue.Queue = queue.Queue()
        self._lipsync_in: queue.Queue = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._render_in: queue.Queue = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._lipsync_state: dict[int, _LipsyncState] = {}
        self._prompts: OrderedDict[tuple, Any] = OrderedDict()
        self._prompts_lock = threading.Lock()
        self._closed = False

    # --- set-up ---------------------------------------------------------------------------------

    def prepare(self, progress: Callable[[str], None] | None = None) -> None:
        """Build / load every stage on its device and start the workers. Idempotent."""
        if self._threads:
            return
        if any(d.type == "cuda" for d in self.placement.devices.values()):
            self.placement.create_streams()
        for name in self.config.stages:
            if progress is not None:
                progress(name)
            if name not in self.stages:
                self.stages[name] = self._stage_factory(name, self.config, self.placement.devices[name])
            with self.placement.on(name):
                self.stages[name].prepare()  # idempotent; a stage built by prepare_avatar() loads here
        for target, name in ((self._tts_worker, "iris-tts"), (self._lipsync_worker, "iris-lipsync"),
                             (self._render_worker, "iris-render")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def prepare_avatar(self, path: str | Path, progress: Any = None) -> Any:
        """Frames and face boxes of an avatar at the output fps (cached by content hash).

        Works before `prepare()`: face detection does not need the lip-sync model, so a bad avatar
        is refused before any model is loaded.
        """
        if "wav2lip" not in self.stages:
            self.stages["wav2lip"] = self._stage_factory("wav2lip", self.config, self.placement.devices["wav2lip"])
        return self.stages["wav2lip"].prepare_avatar(path, fps=self.config.video.fps, progress=progress)

    def release_caches(self) -> int:
        """Free the stages' caches that `prepare()` did not set up (VALL-E X decode caches outside
        its captured graphs) and return the freed device memory to the driver, so the next jobs
        start from the prepared state. Call between jobs (a benchmark: between measurement
        windows). Returns the bytes the stages freed."""
        freed = 0
        for stage in self.stages.values():
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

    def check_job(self, job: Job) -> None:
        """Refuse bad input before any work starts (one clear line): empty or unspeakable text, a
        script past `config.limits`, a bad reference, `seconds` out of range or too short for the text."""
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
        plan = self._chunk_plan(job)  # unsupported language -> one clear line
        if plan.expected_seconds > limits.max_seconds:
            raise InputError(f"text: about {plan.expected_seconds:.0f} s of speech; the limit is "
                             f"{limits.max_seconds:g} s (limits.max_seconds in the config)")
        check_waveform(job.reference, name="reference", min_seconds=MIN_REFERENCE_SECONDS,
                       max_seconds=self.config.max_reference_seconds)
        if job.seconds is not None:
            if not (0 < job.seconds <= limits.max_seconds):
                raise InputError(f"seconds: must be in (0, {limits.max_seconds:g}], got {job.seconds:g}")
            needed = sum(self._min_chunk_frames([c.text for c in plan.chunks]))
            if round(job.seconds * CODEC_FRAME_RATE) < needed:
                raise InputError(f"seconds: {job.seconds:g} s is too short for the text: aligning it needs "
                                 f"at least {needed / CODEC_FRAME_RATE:.2f} s of speech")

    def submit(self, job: Job) -> JobHandle:
        """Queue a job; its chunks arrive through the returned handle."""
        if not self._threads:
            raise RuntimeError("Pipeline.submit() called before prepare()")
        if self._closed:
            raise RuntimeError("Pipeline.submit() called after close()")
        self.check_job(job)
        handle = JobHandle(job, self.config.video.fps)
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

    # --- the tts worker: RVC + VALL-E X ----------------------------------------------------------

    def _voice(self, handle: JobHandle) -> Any:
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
        if "rvc" in self.stages:
            with self.placement.on("rvc"), handle.timer.region("rvc", self.placement.devices["rvc"]):
                reference = self.stages["rvc"].run(reference=reference.to(self.placement.devices["rvc"]))["prompt"]
                converted = self.placement.ready("rvc")  # the prompt is read on VALL-E X's stream next
            self._notify("rvc", job.job_id, 0, 1)
        else:
            converted = Ready()
        vallex_device = self.placement.devices["vallex"]
        with self.placement.on("vallex"), handle.timer.region("vallex_prompt", vallex_device):
            self.placement.accept("vallex", converted, [reference.samples])
            prompt = self.stages["vallex"].encode_prompt(reference.to(vallex_device), job.transcript, job.language)
        with self._prompts_lock:  # bounded: a server sees any number of voices
            self._prompts[key] = prompt
            while len(self._prompts) > _PROMPTS_KEPT:
                self._prompts.popitem(last=False)
        return prompt

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

    def _plan(self, handle: JobHandle) -> tuple[list[str], list[int | None], list[int], int | None]:
        """Chunk texts, VALL-E X frames per chunk (imposed, or None), the least frames per chunk (both
        with the overlap included), and the clip's imposed length."""
        job = handle.job
        plan = self._chunk_plan(job)
        texts = [c.text for c in plan.chunks]
        overlap_frames = self._overlap_samples() // CODEC_HOP
        extra = [overlap_frames if k < len(texts) - 1 else 0 for k in range(len(texts))]
        least = self._min_chunk_frames(texts)
        minimums = [m + e for m, e in zip(least, extra, strict=True)]
        if job.seconds is None:
            return texts, [None] * len(texts), minimums, None
        total_frames = max(sum(least), round(job.seconds * CODEC_RATE / CODEC_HOP))
        targets = plan.unit_targets(total_frames, least)
        frames = [t + e for t, e in zip(targets, extra, strict=True)]
        return texts, frames, minimums, total_frames * CODEC_HOP

    def _overlap_samples(self) -> int:
        return chunking.crossfade_samples(self.config.chunking.crossfade_ms, CODEC_RATE, granularity=CODEC_HOP)

    def _tts_worker(self) -> None:
        while True:
            first = self._tts_in.get()
            if first is _STOP:
                self._lipsync_in.put(_STOP)
                return
            if self._closed:
                self._abandon(first)
                continue
            batch = [first]
            max_batch = int(getattr(getattr(self.stages["vallex"], "options", None), "max_batch", 1))
            while len(batch) < max_batch:  # jobs already waiting are decoded together
                try:
                    item = self._tts_in.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._tts_in.put(_STOP)
                    break
                batch.append(item)
            self._run_tts_batch(batch)

    def _run_tts_batch(self, handles: list[JobHandle]) -> None:
        live: list[tuple[JobHandle, Any, list[str], list[int | None], list[int], int | None]] = []
        for handle in handles:
            try:
                texts, frames, minimums, total = self._plan(handle)
                self._notify("plan", handle.job.job_id, 0, len(texts))
                live.append((handle, self._voice(handle), texts, frames, minimums, total))
            except BaseException as exc:  # noqa: BLE001 - delivered to the job's consumer
                handle._deliver(_Failure(exc))
        device = self.placement.devices["vallex"]
        for k in range(max((len(entry[2]) for entry in live), default=0)):
            if self._closed:
                for entry in live:
                    self._abandon(entry[0])
                return
            group = [entry for entry in live if k < len(entry[2])]
            # VALL-E X may stop at EOS only once the chunk is long enough to align (min_frames)
            requests = [dict(text=texts[k], language=h.job.language, prompt=prompt, num_frames=frames[k],
                             seed=h.job.seed + k, **({"min_frames": minimums[k]} if frames[k] is None else {}))
                        for h, prompt, texts, frames, minimums, _ in group]
            try:
                start = time.perf_counter()
                with self.placement.on("vallex"):
                    outputs = self.stages["vallex"].run_batch(requests)
                    speech = [out["speech"].samples.to(device) for out in outputs]
                    written = self.placement.ready("vallex")
                    self.placement.synchronize("vallex")  # the batch's wall time is its members' stage time
                elapsed_ms = (time.perf_counter() - start) * 1e3
            except BaseException as exc:  # noqa: BLE001
                for entry in group:
                    entry[0]._deliver(_Failure(exc))
                    live.remove(entry)
                continue
            for (handle, _, texts, _, _, total), samples in zip(group, speech, strict=True):
                # a batch's wall time is every member's stage time: each waited for all of it
                handle.timer.add_ms("vallex", elapsed_ms)
                self._notify("vallex", handle.job.job_id, k, len(texts))
                self._lipsync_in.put(_SpeechChunk(handle, k, len(texts), texts[k], samples, total, written))

    # --- the lipsync worker: stitching + lip-sync mel --------------------------------------------

    def _lipsync_worker(self) -> None:
        while True:
            item = self._lipsync_in.get()
            if item is _STOP:
                self._render_in.put(_STOP)
                return
            if self._closed:
                self._lipsync_state.pop(item.handle.job.job_id, None)
                self._abandon(item.handle)
                continue
            try:
                with self.placement.on(self._lipsync_stage):
                    request = self._lipsync(item)
            except BaseException as exc:  # noqa: BLE001
                self._lipsync_state.pop(item.handle.job.job_id, None)
                self._render_in.put((item.handle, _Failure(exc)))
                continue
            if request is not None:
                self._render_in.put(request)

    @property
    def _lipsync_stage(self) -> str:
        """The stage whose device and stream the lipsync worker uses: FastPitch's, else Wav2Lip's."""
        return "fastpitch" if "fastpitch" in self.placement.devices else "wav2lip"

    def _lipsync(self, item: _SpeechChunk) -> _FramesRequest | None:
        """One chunk's stitching and lip-sync mel, on the lipsync stream (entered by the caller)."""
        handle, job_id = item.handle, item.handle.job.job_id
        self.placement.accept(self._lipsync_stage, item.ready, [item.speech])
        last = item.index == item.count - 1
        state = self._lipsync_state.get(job_id)
        if state is None:
            state = self._lipsync_state[job_id] = _LipsyncState(chunking.AudioStitcher(self._overlap_samples()))
        fp_device = self.placement.devices.get("fastpitch", self.placement.devices["wav2lip"])
        body = state.stitcher.push(item.speech.float().to(fp_device), last=last)
        speech_start = state.samples
        state.samples += body.shape[0]
        total = state.samples if last else item.total_samples

        timings, words = [], []
        if "fastpitch" in self.stages:  # alignment (subtitles) always; its mel drives the lips in fastpitch mode
            with self.placement.on("fastpitch"), handle.timer.region("fastpitch", fp_device):
                out = self.stages["fastpitch"].run(text=item.text, speech=Waveform(body, CODEC_RATE))
            timings, words = out["timings"], out["words"]
            self._notify("fastpitch", job_id, item.index, item.count)
        if self.config.lipsync_features == "fastpitch" and "fastpitch" in self.stages:
            state.append_mel(timebase.place_chunk_mel(out["lipsync_mel"], speech_start, body.shape[0], CODEC_RATE))
            ready = state.mel_columns if not last else timebase.mel_column_count(state.samples, CODEC_RATE)
            state.mel = timebase.pad_columns(state.mel, ready - state.mel_start)
        else:
            with handle.timer.region("speech_mel", fp_device):
                # only the columns that became final: each column is computed once per clip
                have = state.mel_columns
                audio = state.append_audio(body)
                state.append_mel(chunking.wav2lip_mel_columns(audio, CODEC_RATE, have, total_samples=total,
                                                              prefix_start=state.audio_start))
                state.drop_audio_before(timebase.mel_audio_start(state.mel_columns, CODEC_RATE))
            ready = state.mel_columns

        # before the last chunk the clip's end is not needed: frames_ready() never reaches the clamp
        final_samples = state.samples if last else (total or state.samples + CODEC_RATE * 3600)
        timeline = timebase.Timeline(final_samples, CODEC_RATE, self.config.video.fps)
        frames_end = timeline.num_frames if last else timeline.frames_ready(ready)
        frame_start = state.frames_done
        frame_count = max(0, frames_end - frame_start)
        if last and timeline.mel_frames < timebase.MEL_WINDOW:
            raise InputError(f"speech: {state.samples / CODEC_RATE:.3f} s is shorter than one Wav2Lip "
                             f"window ({timebase.MEL_WINDOW_SECONDS:g} s); no frame can be rendered")
        total_mel = timeline.mel_frames if last else ready
        fps = self.config.video.fps
        if frame_count:
            mel_start = timebase.clamped_window_start(frame_start, fps, total_mel)
            mel_end = timebase.clamped_window_start(frames_end - 1, fps, total_mel) + timebase.MEL_WINDOW
        else:
            mel_start = mel_end = 0
        mel = state.mel[:, mel_start - state.mel_start:mel_end - state.mel_start].clone() if frame_count \
            else state.mel[:, :0].clone()
        state.frames_done = frames_end
        if last:
            self._lipsync_state.pop(job_id, None)
        else:  # later frames read from their own window start on, or from the clamped last window
            state.drop_mel_before(min(timebase.window_start(frames_end, fps), ready - timebase.MEL_WINDOW))
        # body and mel are read on Wav2Lip's stream, by the render worker
        return _FramesRequest(handle, item.index, last, body, speech_start, mel,
                              mel_start, total_mel, frame_start, frame_count, timings, words,
                              self.placement.ready(self._lipsync_stage))

    # --- the render worker: Wav2Lip --------------------------------------------------------------

    def _render_worker(self) -> None:
        held = None  # an item taken while gathering that did not fit the batch: the next batch's first
        while True:
            items, held = self._take_render_items(held)
            self._render_items([item for item in items if item is not _STOP])
            if items[-1] is _STOP:
                return

    def _take_render_items(self, held: Any) -> tuple[list[Any], Any]:
        """The render queue's items that are ready, in queue order: the first (waited for, unless one
        was held back), then those already waiting while their frames fit in one Wav2Lip batch
        (`wav2lip.options.batch_size`; the first is taken whatever its size). Returns them and the
        item taken that did not fit, if any."""
        limit = int(getattr(getattr(self.stages["wav2lip"], "options", None), "batch_size", 1))
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

    def _render_items(self, items: list[Any]) -> None:
        """Render the requests among `items` together and deliver every item to its job, in queue
        order (so each job's chunks stay in order); failures from the lipsync worker pass through."""
        if self._closed:
            for item in items:
                self._abandon(item[0] if isinstance(item, tuple) else item.handle)
            return
        requests = [item for item in items if not isinstance(item, tuple)]
        outputs = dict(zip(map(id, requests), self._render(requests), strict=True))
        for item in items:
            if isinstance(item, tuple):  # (handle, failure) from the lipsync worker
                item[0]._deliver(item[1])
            else:
                item.handle._deliver(outputs[id(item)])

    def _render(self, reqs: list[_FramesRequest]) -> list[ChunkOutput | _Failure]:
        """Chunk outputs of several jobs' frames requests, their frames rendered in one stage call."""
        device = self.placement.devices["wav2lip"]
        with self.placement.on("wav2lip"):
            for req in reqs:
                self.placement.accept("wav2lip", req.ready, [req.speech, req.mel])
            drawn = [req for req in reqs if req.frame_count]
            rendered = dict(zip(map(id, drawn), self._render_frames(drawn, device), strict=True))
            speech = [req.speech.detach().float().cpu() for req in reqs]  # on this stream: after the accepted marks
        outputs: list[ChunkOutput | _Failure] = []
        for req, samples in zip(reqs, speech, strict=True):
            frames = rendered.get(id(req), torch.empty((0, 0, 0, 3), dtype=torch.uint8))
            if isinstance(frames, BaseException):
                outputs.append(_Failure(frames))
                continue
            self._notify("wav2lip", req.handle.job.job_id, req.index, -1, req.frame_count)
            outputs.append(ChunkOutput(job_id=req.handle.job.job_id, index=req.index, last=req.last, speech=samples,
                                       speech_start=req.speech_start, frames=frames, frame_start=req.frame_start,
                                       timings=req.timings, words=req.words, ready_at=time.perf_counter()))
        return outputs

    def _render_frames(self, reqs: list[_FramesRequest], device: torch.device) -> list[torch.Tensor | BaseException]:
        """Each request's frames from one `render_frames` call; where that call fails, each request
        alone, so a bad request fails only its own job. The call's wall time is the Wav2Lip time of
        every job in it, once: each waited for all of it (the frames are on the host when it returns)."""
        if not reqs:
            return []
        requests = [FramesRequest(mel=req.mel.to(device), mel_offset=req.mel_offset,
                                  total_mel_frames=req.total_mel_frames, avatar=req.handle.job.avatar,
                                  frame_start=req.frame_start, frame_count=req.frame_count, fps=self.config.video.fps)
                    for req in reqs]
        try:
            start = time.perf_counter()
            results = self.stages["wav2lip"].render_frames(requests)
            elapsed_ms = (time.perf_counter() - start) * 1e3
        except BaseException as exc:  # noqa: BLE001 - delivered to the job(s) it belongs to
            if len(reqs) == 1:
                return [exc]
            return [self._render_frames([req], device)[0] for req in reqs]
        for handle in {id(req.handle): req.handle for req in reqs}.values():  # once per job, whatever its chunks
            handle.timer.add_ms("wav2lip", elapsed_ms)
        return [result.frames for result in results]


def _frame_count(item: Any) -> int:
    """Frames a render queue item asks for (0 for a failure or the stop mark)."""
    return item.frame_count if isinstance(item, _FramesRequest) else 0


def _default_stage(name: str, config: PipelineConfig, device: torch.device) -> Any:
    """The production stage classes (imported lazily: a stage's models load only when it is used)."""
    from iris_pipeline.stages import build_stage

    return build_stage(name, config, device)


def stage_class(name: str) -> Any:
    """A stage's class, for what it can tell without being built (imported lazily, as above)."""
    from iris_pipeline.stages import stage_class as lookup

    return lookup(name)
