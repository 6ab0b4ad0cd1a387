"""CUDA-event timing shared by the GPU-marked stage tests (METHOD: warm up, synchronise, events, median)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def cuda_times_ms(fn: Callable[[], object], warmup: int = 3, runs: int = 30) -> list[float]:
    """Milliseconds of each of `runs` calls of `fn` after `warmup` calls, timed with CUDA events.

    The device is synchronised before each start event, so one run never overlaps the previous one.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times
