"""Schedulers of the VALL-E X decode: which chunk of which job decodes when.

Both are driven by one thread (the pipeline's tts worker) in a loop of `offer()` then `step()`,
and hand back `ChunkDone`s, each job's in chunk order:

* `ContinuousScheduler` (iteration-level scheduling, as Orca and vLLM do it): a chunk takes a free
  slot of the decode as soon as one is free and joins the running batch at the next step; a chunk
  that ends leaves at once. First come, first served across jobs (a later job's chunk never takes a
  slot while an earlier job has a chunk waiting); a job's chunks are admitted and delivered in
  order. Bounded: `max_batch` slots, and at most `max_waiting` chunks waiting for one (a job that
  would go past it is refused by `offer()` and stays with the caller: back-pressure).
* `StaticScheduler`: the jobs offered while no batch runs decode together, chunk 0 of all of them,
  then chunk 1, ..., until the longest job ends; a job offered meanwhile waits for the whole batch.

Both drive the same VALL-E X slots (`SpeechSlots`), so the speech of a chunk is the same under
either: only when it is decoded differs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from iris_pipeline.stages.contracts import SpeechRequest, SpeechResult


class SpeechSlots(Protocol):
    """What the schedulers need of the VALL-E X stage (`stages.vallex.VallexStage`)."""

    @property
    def slots(self) -> int: ...

    @property
    def free_slots(self) -> int: ...

    def admit(self, request: SpeechRequest, tag: Hashable) -> None: ...

    def step(self, slot_wanted: bool = False) -> list[tuple[Hashable, SpeechResult | BaseException]]:
        """The requests that finished, by tag: their result, or the error that ended that request alone."""
        ...

    def cancel(self, tags: set[Hashable]) -> None: ...

    def synthesize(self, requests: list[SpeechRequest]) -> list[SpeechResult]: ...


@dataclass
class ChunkDone:
    """A chunk's speech, or the error that ended its job (then no later chunk of the job comes)."""

    job: Hashable
    index: int
    result: SpeechResult | None
    error: BaseException | None = None
    decode_ms: float = 0.0  # wall time from the chunk's admission to its end


@dataclass
class _Job:
    requests: list[SpeechRequest]
    admitted: int = 0  # chunks given a slot so far
    delivered: int = 0  # chunks handed back so far
    started: dict[int, float] = field(default_factory=dict)  # perf_counter at admission, per chunk
    finished: dict[int, ChunkDone] = field(default_factory=dict)  # ended before an earlier chunk

    @property
    def waiting(self) -> int:
        return len(self.requests) - self.admitted


class ContinuousScheduler:
    """Chunks take slots as they free up; FCFS across jobs, in order within a job; bounded."""

    def __init__(self, slots: SpeechSlots, max_waiting: int):
        if max_waiting < 1:
            raise ValueError(f"max_waiting must be >= 1, got {max_waiting}")
        self.slots = slots
        self.max_waiting = max_waiting
        self._jobs: OrderedDict[Hashable, _Job] = OrderedDict()  # in arrival order

    @property
    def waiting(self) -> int:
        """Chunks offered and not yet given a slot."""
        return sum(job.waiting for job in self._jobs.values())

    @property
    def busy(self) -> bool:
        return bool(self._jobs)

    def offer(self, job: Hashable, requests: list[SpeechRequest]) -> bool:
        """Take a job's chunks (in order), unless they would push the waiting chunks past
        `max_waiting`; a job is always taken when nothing waits (however many chunks it has)."""
        if job in self._jobs:
            raise ValueError(f"job {job!r} was offered twice")
        if not requests:
            raise ValueError("a job needs at least one chunk")
        waiting = self.waiting
        if waiting and waiting + len(requests) > self.max_waiting:
            return False
        self._jobs[job] = _Job(list(requests))
        return True

    def step(self) -> list[ChunkDone]:
        """Fill the free slots (first come, first served), run one decode step, hand back what ended."""
        done: list[ChunkDone] = []
        self._admit(done)
        if not any(job.admitted > job.delivered + len(job.finished) for job in self._jobs.values()):
            return done
        try:
            finished = self.slots.step(slot_wanted=self.waiting > 0)
        except BaseException as exc:  # noqa: BLE001 - the step of every job in a slot failed
            for job_key, job in list(self._jobs.items()):
                if job.admitted:
                    done.append(self._fail(job_key, job.delivered, exc))
            return done
        now = time.perf_counter()
        for (job_key, index), result in finished:
            job = self._jobs.get(job_key)
            if job is None:  # its job failed meanwhile
                continue
            if isinstance(result, BaseException):
                done.append(self._fail(job_key, index, result))
                continue
            job.finished[index] = ChunkDone(job_key, index, result, decode_ms=(now - job.started.pop(index)) * 1e3)
            while job.delivered in job.finished:  # in chunk order
                done.append(job.finished.pop(job.delivered))
                job.delivered += 1
            if job.delivered == len(job.requests):
                del self._jobs[job_key]
        return done

    def _admit(self, done: list[ChunkDone]) -> None:
        for job_key, job in list(self._jobs.items()):
            while job.waiting and self.slots.free_slots > 0:
                index = job.admitted
                try:
                    self.slots.admit(job.requests[index], (job_key, index))
                except BaseException as exc:  # noqa: BLE001 - bad input ends this job alone
                    done.append(self._fail(job_key, index, exc))
                    break
                job.started[index] = time.perf_counter()
                job.admitted += 1
            if job_key in self._jobs and job.waiting:
                return  # first come, first served: no later job passes a job still waiting

    def _fail(self, job_key: Hashable, index: int, exc: BaseException) -> ChunkDone:
        job = self._jobs.pop(job_key)
        self.slots.cancel({(job_key, i) for i in range(len(job.requests))})
        return ChunkDone(job_key, index, None, exc)

    def drop(self) -> list[Hashable]:
        """Abandon every job (their slots freed); the jobs dropped."""
        jobs = list(self._jobs)
        self.slots.cancel({(key, i) for key, job in self._jobs.items() for i in range(job.admitted)})
        self._jobs.clear()
        return jobs


class StaticScheduler:
    """The jobs offered while no batch runs decode together, chunk by chunk, until the longest ends."""

    def __init__(self, slots: SpeechSlots, max_batch: int):
        self.slots = slots
        self.max_batch = max_batch
        self._gathered: OrderedDict[Hashable, list[SpeechRequest]] = OrderedDict()
        self._chunk = 0  # the chunk index the running batch decodes next
        self._running = False

    @property
    def busy(self) -> bool:
        return bool(self._gathered)

    def offer(self, job: Hashable, requests: list[SpeechRequest]) -> bool:
        """Take a job into the next batch: only while no batch runs, up to `max_batch` jobs."""
        if job in self._gathered:
            raise ValueError(f"job {job!r} was offered twice")
        if not requests:
            raise ValueError("a job needs at least one chunk")
        if self._running or len(self._gathered) >= self.max_batch:
            return False
        self._gathered[job] = list(requests)
        return True

    def step(self) -> list[ChunkDone]:
        """Decode the next chunk of every job of the batch (one `synthesize` call)."""
        if not self._gathered:
            return []
        self._running = True
        k = self._chunk
        group = [job for job, requests in self._gathered.items() if k < len(requests)]
        start = time.perf_counter()
        try:
            results = self.slots.synthesize([self._gathered[job][k] for job in group])
        except BaseException as exc:  # noqa: BLE001 - the batch's jobs fail together
            for job in group:
                del self._gathered[job]
            done = [ChunkDone(job, k, None, exc) for job in group]
        else:
            elapsed_ms = (time.perf_counter() - start) * 1e3  # every member waited for all of it
            done = [ChunkDone(job, k, result, decode_ms=elapsed_ms) for job, result in zip(group, results, strict=True)]
        self._chunk += 1
        for job in [job for job, requests in self._gathered.items() if self._chunk >= len(requests)]:
            del self._gathered[job]
        if not self._gathered:
            self._running, self._chunk = False, 0
        return done

    def drop(self) -> list[Hashable]:
        jobs = list(self._gathered)
        self._gathered.clear()
        self._running, self._chunk = False, 0
        return jobs


Scheduler = ContinuousScheduler | StaticScheduler


def make_scheduler(stage: Any) -> Scheduler:
    """The scheduler `vallex.options.scheduler` names, over the stage's slots."""
    options = stage.options
    if options.scheduler == "static":
        return StaticScheduler(stage, options.max_batch)
    return ContinuousScheduler(stage, options.max_waiting)
