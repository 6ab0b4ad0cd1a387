"""The tts schedulers over a scripted stand-in of the VALL-E X slots: first come first served,
a job's chunks in order, the bounds and back-pressure, failures, static batches."""

from __future__ import annotations

from collections.abc import Hashable
from types import SimpleNamespace

import pytest
import torch

from iris_pipeline.audio import Waveform
from iris_pipeline.errors import InputError
from iris_pipeline.scheduling import ContinuousScheduler, StaticScheduler, make_scheduler
from iris_pipeline.stages.contracts import SpeechRequest, SpeechResult


def request(steps: int, text: str = "chunk") -> SpeechRequest:
    """A chunk that decodes for `steps` steps (carried in num_frames); text 'bad' is refused."""
    return SpeechRequest(text=text, language="en", prompt=None, num_frames=steps)  # type: ignore[arg-type]


class ScriptedSlots:
    """`slots` slots; a request decodes for `num_frames` steps. Records what it saw."""

    def __init__(self, slots: int):
        self.slots = slots
        self.running: dict[Hashable, int] = {}  # tag -> steps left
        self.admitted: list[Hashable] = []  # in admission order
        self.steps = 0
        self.most_running = 0
        self.fail_next_step = False
        self.failing: dict[Hashable, BaseException] = {}  # requests that end with their own error
        self.synthesized: list[int] = []  # sizes of synthesize() calls

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.running)

    def admit(self, request: SpeechRequest, tag: Hashable) -> None:
        if request.text == "bad":
            raise InputError("text: nothing to speak")
        assert self.free_slots > 0, "admitted without a free slot"
        self.running[tag] = request.num_frames
        self.admitted.append(tag)
        self.most_running = max(self.most_running, len(self.running))

    def step(self, slot_wanted: bool = False) -> list[tuple[Hashable, SpeechResult]]:
        self.steps += 1
        if self.fail_next_step:
            self.fail_next_step = False
            raise RuntimeError("CUDA error: an illegal memory access")
        done = []
        for tag in list(self.running):
            self.running[tag] -= 1
            if self.running[tag] == 0:
                del self.running[tag]
                done.append((tag, self.failing.pop(tag, None)
                             or SpeechResult(Waveform(torch.zeros(320), 24000), torch.zeros(1, 8))))
        return done

    def cancel(self, tags: set[Hashable]) -> None:
        for tag in tags:
            self.running.pop(tag, None)

    def synthesize(self, requests: list[SpeechRequest]) -> list[SpeechResult]:
        self.synthesized.append(len(requests))
        return [SpeechResult(Waveform(torch.zeros(320), 24000), torch.zeros(r.num_frames, 8)) for r in requests]


def drain(scheduler, limit: int = 500) -> list:
    out = []
    for _ in range(limit):
        if not scheduler.busy:
            return out
        out += scheduler.step()
    raise AssertionError("the scheduler never ran dry")


def test_a_job_s_chunks_come_out_in_order_even_when_a_later_one_ends_first():
    slots = ScriptedSlots(3)
    scheduler = ContinuousScheduler(slots, max_waiting=8)
    assert scheduler.offer("A", [request(9), request(2), request(4)])
    done = drain(scheduler)
    assert [(d.job, d.index) for d in done] == [("A", 0), ("A", 1), ("A", 2)]
    assert all(d.error is None and d.decode_ms >= 0 for d in done)
    # the three decoded together: the job took 9 steps, not 15
    assert slots.steps == 9 and slots.most_running == 3


def test_first_come_first_served_across_jobs():
    slots = ScriptedSlots(2)
    scheduler = ContinuousScheduler(slots, max_waiting=16)
    assert scheduler.offer("A", [request(3)] * 3)
    assert scheduler.offer("B", [request(1)] * 2)
    assert scheduler.offer("C", [request(1)])
    drain(scheduler)
    # no chunk of B took a slot while A had one waiting, none of C's before B's
    assert slots.admitted == [("A", 0), ("A", 1), ("A", 2), ("B", 0), ("B", 1), ("C", 0)]


def test_a_chunk_joins_as_soon_as_a_slot_frees_and_slots_stay_full():
    slots = ScriptedSlots(2)
    scheduler = ContinuousScheduler(slots, max_waiting=16)
    scheduler.offer("long", [request(10)])
    scheduler.offer("short", [request(2), request(2), request(2), request(2)])
    ended = {}
    while scheduler.busy:
        for d in scheduler.step():
            ended[(d.job, d.index)] = slots.steps
    # the short job's chunks go through the second slot one after another while the long one runs
    assert [ended[("short", k)] for k in range(4)] == [2, 4, 6, 8] and ended[("long", 0)] == 10


def test_waiting_chunks_are_bounded_and_a_refused_job_is_taken_once_there_is_room():
    slots = ScriptedSlots(1)
    scheduler = ContinuousScheduler(slots, max_waiting=4)
    assert scheduler.offer("A", [request(2)] * 3)
    assert not scheduler.offer("B", [request(1)] * 2)  # 3 + 2 > 4: back-pressure
    assert scheduler.offer("C", [request(1)])  # 3 + 1 fits
    assert scheduler.waiting == 4
    done = scheduler.step()  # A0 takes the slot: 3 waiting
    assert not scheduler.offer("B", [request(1)] * 2)
    done += scheduler.step() + scheduler.step()  # A0 ended, A1 admitted: 2 waiting
    assert scheduler.waiting == 2 and scheduler.offer("B", [request(1)] * 2)
    with pytest.raises(ValueError, match="offered twice"):
        scheduler.offer("B", [request(1)])
    done += drain(scheduler)
    assert [d.job for d in done if d.index == 0] == ["A", "C", "B"]


def test_a_job_larger_than_the_bound_is_taken_when_nothing_waits():
    scheduler = ContinuousScheduler(ScriptedSlots(1), max_waiting=2)
    assert scheduler.offer("big", [request(1)] * 5)
    assert len(drain(scheduler)) == 5


def test_slots_are_released_after_many_jobs():
    slots = ScriptedSlots(4)
    scheduler = ContinuousScheduler(slots, max_waiting=64)
    for n in range(200):  # jobs arrive faster than they decode: back-pressure holds them
        while not scheduler.offer(n, [request(1 + n % 5), request(1 + n % 3)]):
            scheduler.step()
            assert scheduler.waiting <= 64
        scheduler.step()
    drain(scheduler)
    assert slots.running == {} and not scheduler.busy and scheduler.waiting == 0
    assert len(slots.admitted) == 400 and slots.most_running == 4


def test_bad_input_ends_its_job_alone():
    slots = ScriptedSlots(2)
    scheduler = ContinuousScheduler(slots, max_waiting=8)
    scheduler.offer("A", [request(3), request(3)])
    scheduler.offer("B", [request(2), request(2, text="bad"), request(2)])
    done = drain(scheduler)
    failures = [d for d in done if d.error is not None]
    assert [(d.job, d.index) for d in failures] == [("B", 1)] and isinstance(failures[0].error, InputError)
    # B0, in a slot when B1 was refused, is cancelled with its job; A is untouched
    assert [(d.job, d.index) for d in done if d.error is None] == [("A", 0), ("A", 1)]
    assert slots.running == {} and not scheduler.busy


def test_a_failed_step_fails_the_jobs_in_the_slots_and_frees_them():
    slots = ScriptedSlots(1)
    scheduler = ContinuousScheduler(slots, max_waiting=8)
    scheduler.offer("A", [request(3)])
    scheduler.offer("B", [request(1)])
    slots.fail_next_step = True
    done = scheduler.step()
    assert [(d.job, d.index, type(d.error)) for d in done] == [("A", 0, RuntimeError)]
    assert [(d.job, d.index) for d in drain(scheduler)] == [("B", 0)]  # B, still waiting, goes on


def test_a_request_s_own_error_fails_its_job_alone():
    slots = ScriptedSlots(2)
    scheduler = ContinuousScheduler(slots, max_waiting=8)
    scheduler.offer("A", [request(2), request(5)])
    scheduler.offer("B", [request(3)])
    slots.failing[("A", 0)] = InputError("speak: the deployment refused the chunk")
    done = drain(scheduler)
    assert [(d.job, d.index, d.error is None) for d in done] == [("A", 0, False), ("B", 0, True)]
    assert slots.running == {}  # A's second chunk left its slot with its job


def test_drop_abandons_every_job_and_frees_the_slots():
    slots = ScriptedSlots(2)
    scheduler = ContinuousScheduler(slots, max_waiting=8)
    scheduler.offer("A", [request(5)] * 3)
    scheduler.step()
    assert scheduler.drop() == ["A"] and slots.running == {} and not scheduler.busy


def test_static_batches_decode_chunk_by_chunk_and_refuse_jobs_while_running():
    slots = ScriptedSlots(4)
    scheduler = StaticScheduler(slots, max_batch=2)
    assert scheduler.offer("A", [request(3), request(3), request(3)])
    assert scheduler.offer("B", [request(1)])
    assert not scheduler.offer("C", [request(1)])  # the batch is full
    done = scheduler.step()
    assert [(d.job, d.index) for d in done] == [("A", 0), ("B", 0)] and slots.synthesized == [2]
    assert not scheduler.offer("C", [request(1)])  # a batch runs: C waits for all of it
    done = drain(scheduler)
    assert [(d.job, d.index) for d in done] == [("A", 1), ("A", 2)] and slots.synthesized == [2, 1, 1]
    assert scheduler.offer("C", [request(1)])


def test_the_option_picks_the_scheduler():
    options = SimpleNamespace(scheduler="static", max_batch=3, max_waiting=5)
    stage = SimpleNamespace(options=options)
    static = make_scheduler(stage)
    assert isinstance(static, StaticScheduler) and static.max_batch == 3
    options.scheduler = "continuous"
    continuous = make_scheduler(stage)
    assert isinstance(continuous, ContinuousScheduler) and continuous.max_waiting == 5
