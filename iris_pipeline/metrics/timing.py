"""Timers for named regions (stages) that repeat per chunk, and a wall clock that waits for the device.

On a CUDA device a region is a pair of CUDA events recorded on the current stream: recording is
asynchronous, so timing never stalls the pipeline; the events are waited on only when the results
are read. On the CPU a region is two `time.perf_counter_ns` readings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

DeviceLike = torch.device | str | int | None


def as_device(device: DeviceLike) -> torch.device:
    """`None` -> CPU; an int -> that CUDA device; "cuda" -> the current CUDA device."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, int):
        return torch.device("cuda", device)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def synchronize(devices: DeviceLike | Iterable[DeviceLike] = None) -> None:
    """Wait until queued work is done on the given CUDA devices (all initialised ones when None).

    CPU devices need no waiting; a process that never touched CUDA is left untouched (no context).
    """
    if devices is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for index in range(torch.cuda.device_count()):
                torch.cuda.synchronize(index)
        return
    if isinstance(devices, (torch.device, str, int)):
        devices = [devices]
    for device in devices:
        device = as_device(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)


def wall_clock(devices: DeviceLike | Iterable[DeviceLike] = None) -> float:
    """`time.perf_counter()` in seconds, read after the devices have finished their queued work."""
    synchronize(devices)
    return time.perf_counter()


def synced_timer(devices: DeviceLike | Iterable[DeviceLike] = None) -> Callable[[], float]:
    """A zero-argument clock (seconds) that synchronises first, e.g. for pytest-benchmark's `timer`."""
    return lambda: wall_clock(devices)


@dataclass
class _Pending:
    """One region on a CUDA device whose end event may not have completed yet."""

    name: str
    start: Any
    end: Any


@dataclass
class _Samples:
    values_ms: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, ms: float) -> None:
        self.values_ms.setdefault(name, []).append(ms)


class RegionTimer:
    """Accumulates the time of named regions; a name may be entered many times (once per chunk).

    `with timer.region("vallex"): ...` times the block: with CUDA events on the current stream
    of the timer's device (or of `device=` given to the region), else with perf_counter_ns.
    Regions may be entered from several threads. Reading (`totals_ms`, `samples_ms`) waits for the
    recorded events, nothing else; the hot path never synchronises.
    """

    def __init__(self, device: DeviceLike = None):
        self.device = as_device(device)
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._done = _Samples()
        self._order: list[str] = []  # names in first-entered order, for stable reports

    @contextmanager
    def region(self, name: str, device: DeviceLike = None) -> Iterator[None]:
        target = self.device if device is None else as_device(device)
        self._remember(name)
        if target.type == "cuda":
            stream = torch.cuda.current_stream(target)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            try:
                yield
            finally:
                # the stream current at exit: a `with torch.cuda.stream(s)` inside the region has ended
                end.record(torch.cuda.current_stream(target))
                with self._lock:
                    self._pending.append(_Pending(name, start, end))
        else:
            begin = time.perf_counter_ns()
            try:
                yield
            finally:
                elapsed_ms = (time.perf_counter_ns() - begin) / 1e6
                with self._lock:
                    self._done.add(name, elapsed_ms)

    def add_ms(self, name: str, ms: float) -> None:
        """Record a time measured elsewhere (e.g. a region timed by another clock) under `name`."""
        self._remember(name)
        with self._lock:
            self._done.add(name, float(ms))

    def _remember(self, name: str) -> None:
        if not name:
            raise ValueError("a timed region needs a non-empty name")
        with self._lock:
            if name not in self._order:
                self._order.append(name)

    def _resolve(self) -> None:
        """Wait for each pending end event and move its elapsed time into the samples."""
        with self._lock:
            pending, self._pending = self._pending, []
        resolved = []
        for item in pending:
            item.end.synchronize()
            resolved.append((item.name, float(item.start.elapsed_time(item.end))))
        with self._lock:
            for name, ms in resolved:
                self._done.add(name, ms)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._order)

    def samples_ms(self, name: str) -> list[float]:
        """Every recorded duration of region `name`, in ms, in the order the regions ended."""
        self._resolve()
        with self._lock:
            return list(self._done.values_ms.get(name, []))

    def counts(self) -> dict[str, int]:
        self._resolve()
        with self._lock:
            return {name: len(self._done.values_ms.get(name, [])) for name in self._order}

    def totals_ms(self) -> dict[str, float]:
        """Summed ms per region name (a stage's time over all chunks of a clip)."""
        self._resolve()
        with self._lock:
            return {name: float(sum(self._done.values_ms.get(name, []))) for name in self._order}

    def reset(self) -> None:
        """Forget every region (pending events included), e.g. between measured runs."""
        with self._lock:
            self._pending.clear()
            self._done = _Samples()
            self._order.clear()
