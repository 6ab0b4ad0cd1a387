"""Cross-stream hand-offs are ordered: the consumer's stream waits on the producer's event.

No GPU here: torch.cuda's Event and the stages' streams are replaced by recording stand-ins. A
stream remembers the events it waited on; an event remembers the stream it was recorded on. The
first tests drive `Placement.ready` / `accept` directly; the pipeline test runs the real workers
with stand-in stages that refuse to read a queue item whose producer event their stream has not
waited on, so removing any wait fails it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from iris_pipeline import pipeline as pipeline_module
from iris_pipeline.audio import Waveform
from iris_pipeline.config import PipelineConfig
from iris_pipeline.pipeline import Job, Pipeline
from iris_pipeline.placement import Placement, Ready
from iris_pipeline.stages.contracts import (
    AlignRequest,
    AlignResult,
    FramesRequest,
    FramesResult,
)
from iris_pipeline.timebase import CODEC_RATE, Timeline
from tests.support.speech_slots import InstantSpeech

CUDA0 = torch.device("cuda", 0)


class FakeStream:
    def __init__(self, name: str):
        self.name = name
        self.waited: list[FakeEvent] = []
        self.host_syncs = 0

    def wait_event(self, event: FakeEvent) -> None:
        self.waited.append(event)

    def synchronize(self) -> None:
        self.host_syncs += 1


class FakeEvent:
    def __init__(self, **options: Any):
        self.stream: FakeStream | None = None
        self.host_waits = 0

    def record(self, stream: FakeStream) -> None:
        self.stream = stream

    def synchronize(self) -> None:
        self.host_waits += 1


class FakeCudaTensor:
    """What `accept` needs of a CUDA tensor: `is_cuda` and `record_stream`."""

    is_cuda = True

    def __init__(self):
        self.recorded: list[FakeStream] = []

    def record_stream(self, stream: FakeStream) -> None:
        self.recorded.append(stream)


@pytest.fixture
def fake_events(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)


def two_stream_placement() -> Placement:
    streams = {"vallex": FakeStream("vallex"), "wav2lip": FakeStream("wav2lip")}
    return Placement(devices={"vallex": CUDA0, "wav2lip": CUDA0}, streams=streams)


def test_consumer_stream_waits_on_the_event_the_producer_recorded(fake_events):
    placement = two_stream_placement()
    mark = placement.ready("vallex")
    assert mark.event.stream is placement.streams["vallex"]
    on_device, on_host = FakeCudaTensor(), torch.zeros(3)
    placement.accept("wav2lip", mark, [on_device, on_host])
    assert placement.streams["wav2lip"].waited == [mark.event]
    assert mark.event.host_waits == 0  # a device-side wait: the host goes on
    # the allocator keeps the memory until the consumer's stream is done with it
    assert on_device.recorded == [placement.streams["wav2lip"]]


def test_a_consumer_without_a_stream_waits_on_the_host(fake_events):
    placement = two_stream_placement()
    placement.devices["cpu_stage"] = torch.device("cpu")
    mark = placement.ready("vallex")
    placement.accept("cpu_stage", mark, [FakeCudaTensor()])
    assert mark.event.host_waits == 1


def test_without_a_gpu_hand_offs_cost_nothing():
    placement = Placement(devices={"vallex": torch.device("cpu"), "wav2lip": torch.device("cpu")})
    mark = placement.ready("vallex")
    assert mark == Ready() and mark.event is None
    placement.accept("wav2lip", mark, [torch.zeros(2)])  # no stream, no event: nothing to do


# --- the pipeline's hand-offs ---------------------------------------------------------------------

_worker = threading.local()  # per worker thread: the stream entered, the queue item being worked on


class StreamPlacement(Placement):
    """CPU devices, stand-in streams: `on()` makes a stage's stream the thread's current one."""

    @contextlib.contextmanager
    def on(self, stage: str) -> Iterator[None]:
        before = getattr(_worker, "stream", None)
        _worker.stream = self.streams[stage]
        try:
            yield
        finally:
            _worker.stream = before


class TrackingQueue(pipeline_module.queue.Queue):
    """Remembers, per consumer thread, the item it took last."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        item = super().get(*args, **kwargs)
        _worker.item = item
        return item


def require_ordered(producer: str) -> None:
    """What a consumer stage checks before reading its inputs: its stream waited on the event that
    the producer recorded for the queue item it is working on."""
    item, stream = _worker.item, _worker.stream
    event = item.ready.event
    if event is None or event.stream is None or event.stream.name != producer:
        raise AssertionError(f"{stream.name}: the item carries no event recorded on {producer}'s stream")
    if event not in stream.waited:
        raise AssertionError(f"{stream.name} reads what {producer} wrote without waiting on its event")


class Vallex(InstantSpeech):
    options = SimpleNamespace(max_batch=2, scheduler="continuous", max_waiting=8)


class FastPitch:
    def prepare(self) -> None:
        pass

    def align_chunk(self, request: AlignRequest) -> AlignResult:
        require_ordered("vallex")
        columns = 1 + round(request.speech.seconds * 80)
        return AlignResult(durations=torch.ones(1, dtype=torch.long), timings=[], words=[],
                           lipsync_mel=torch.zeros(80, columns))


class Wav2Lip:
    options = SimpleNamespace(batch_size=128)

    def prepare(self) -> None:
        pass

    def render_frames(self, requests: list[FramesRequest]) -> list[FramesResult]:
        require_ordered("fastpitch")
        return [FramesResult(torch.zeros(r.frame_count, 4, 4, 3, dtype=torch.uint8)) for r in requests]


def test_every_queue_hand_off_is_waited_on_by_the_consumer_stream(fake_events):
    config = PipelineConfig(device="cpu", stages=["vallex", "fastpitch", "wav2lip"])
    config.chunking.chunk_seconds = 1.0
    config.chunking.first_chunk_seconds = None
    stages = {"vallex": Vallex, "fastpitch": FastPitch, "wav2lip": Wav2Lip}
    placement = StreamPlacement(devices={name: torch.device("cpu") for name in stages},
                                streams={name: FakeStream(name) for name in stages})
    pipe = Pipeline(config, placement=placement, stage_factory=lambda name, cfg, device: stages[name]())
    pipe._lipsync_in, pipe._render_in = TrackingQueue(maxsize=4), TrackingQueue(maxsize=4)
    pipe.prepare()
    try:
        reference = Waveform(0.1 * torch.ones(2 * 16000), 16000)
        text = "One two three. Four five six. Seven eight nine. Ten eleven twelve."
        result = pipe.render(Job(text=text, language="en", reference=reference, transcript="hello",
                                 avatar=None, seconds=4.0), timeout=60)
    finally:
        pipe.close()
    assert result.chunks >= 3
    assert result.frames.shape[0] == Timeline(4 * CODEC_RATE, CODEC_RATE, config.video.fps).num_frames
    # each chunk crossed twice, every crossing was waited on: none needed the host
    assert len(placement.streams["fastpitch"].waited) == result.chunks
    assert len(placement.streams["wav2lip"].waited) == result.chunks


def test_release_caches_frees_what_the_stages_hold_beyond_prepare():
    class Cached:
        def __init__(self, held: int):
            self.held = held

        def prepare(self) -> None:
            pass

        def release_caches(self) -> int:
            freed, self.held = self.held, 0
            return freed

    class CachedVallex(Vallex, Cached):
        pass

    config = PipelineConfig(device="cpu", stages=["vallex", "fastpitch", "wav2lip"])
    built = {"vallex": CachedVallex(3000), "fastpitch": Cached(0), "wav2lip": Wav2Lip()}  # Wav2Lip: no caches
    pipe = Pipeline(config, stage_factory=lambda name, cfg, device: built[name])
    pipe.prepare()
    try:
        assert pipe.release_caches() == 3000 and pipe.release_caches() == 0
    finally:
        pipe.close()


@pytest.mark.gpu
def test_on_real_streams_the_consumer_reads_what_the_producer_wrote():
    """Two real non-blocking streams: the producer writes late (after a spin kernel); the accepted
    mark makes the consumer's read wait for it, and the freed tensor is not reused under it."""
    placement = Placement(devices={"vallex": CUDA0, "wav2lip": CUDA0})
    placement.create_streams()
    with placement.on("vallex"):
        written = torch.zeros(1 << 20, device=CUDA0)
        torch.cuda._sleep(50_000_000)  # the producer's stream is busy for a while before it writes
        written.fill_(1.0)
        mark = placement.ready("vallex")
    with placement.on("wav2lip"):
        placement.accept("wav2lip", mark, [written])
        total = written.sum()
        del written  # dropped while wav2lip's stream may still read it
        with placement.on("vallex"):
            torch.full((1 << 20,), 7.0, device=CUDA0)  # the producer's next allocation
    assert float(total) == 1 << 20


def test_stages_prepare_before_any_worker_starts():
    """VALL-E X captures its graphs in prepare(): no worker thread may run beside it."""
    seen: list[list[str]] = []

    def prepared(base: type) -> Any:
        class Prepared(base):
            def prepare(self) -> None:
                seen.append([t.name for t in threading.enumerate() if t.name.startswith("iris-")])

        return Prepared()

    config = PipelineConfig(device="cpu", stages=["vallex", "fastpitch", "wav2lip"])
    fakes = {"vallex": Vallex, "fastpitch": FastPitch, "wav2lip": Wav2Lip}
    pipe = Pipeline(config, stage_factory=lambda name, cfg, device: prepared(fakes[name]))
    pipe.prepare()
    try:
        assert seen == [[], [], []]
        assert {t.name for t in threading.enumerate()} >= {"iris-tts", "iris-lipsync", "iris-render"}
    finally:
        pipe.close()
