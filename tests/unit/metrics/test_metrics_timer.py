"""CPU behaviour of the region timer and the synchronising wall clock."""

from __future__ import annotations

import threading
import time

import pytest

from iris_pipeline.metrics import RegionTimer, synced_timer, wall_clock


def _busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_regions_accumulate_per_chunk() -> None:
    timer = RegionTimer("cpu")
    for _ in range(3):  # three chunks, each through two stages
        with timer.region("vallex"):
            _busy_wait(0.02)
        with timer.region("wav2lip"):
            _busy_wait(0.01)
    assert timer.names() == ["vallex", "wav2lip"]
    assert timer.counts() == {"vallex": 3, "wav2lip": 3}
    vallex = timer.samples_ms("vallex")
    assert all(v >= 20.0 for v in vallex)
    assert all(v >= 10.0 for v in timer.samples_ms("wav2lip"))
    totals = timer.totals_ms()
    assert totals["vallex"] == pytest.approx(sum(vallex))
    assert totals["vallex"] > totals["wav2lip"]
    assert timer.samples_ms("never") == []


def test_region_agrees_with_an_outer_clock_and_records_on_error() -> None:
    timer = RegionTimer()
    t0 = wall_clock()
    with pytest.raises(RuntimeError), timer.region("fails"):
        _busy_wait(0.03)
        raise RuntimeError("boom")
    outer_ms = (wall_clock() - t0) * 1e3
    (inner_ms,) = timer.samples_ms("fails")
    assert 30.0 <= inner_ms <= outer_ms


def test_nested_threads_add_ms_and_reset() -> None:
    timer = RegionTimer(None)

    def worker() -> None:
        for _ in range(50):
            with timer.region("stage"):
                pass

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with timer.region("outer"), timer.region("inner"):
        pass
    timer.add_ms("encode", 12.5)
    assert timer.counts()["stage"] == 200
    assert timer.totals_ms()["encode"] == 12.5
    assert timer.totals_ms()["outer"] >= timer.totals_ms()["inner"]
    timer.reset()
    assert timer.totals_ms() == {}
    assert timer.names() == []
    with pytest.raises(ValueError):
        with timer.region(""):
            pass


def test_synced_timer_is_a_monotonic_clock_in_seconds() -> None:
    clock = synced_timer("cpu")
    a = clock()
    _busy_wait(0.005)
    b = clock()
    assert 0.005 <= b - a < 5.0
