"""The measurement core on a real GPU: NVML memory and utilisation, CUDA-event timing, allocator peaks.

Skipped with the reason shown where there is no CUDA device (root conftest).
"""

from __future__ import annotations

import math
import statistics
import time

import pytest
import torch

from iris_pipeline.metrics import (
    NvmlSampler,
    RegionTimer,
    reset_torch_peaks,
    torch_peak_gb,
    wall_clock,
)

pytestmark = pytest.mark.gpu

GiB = 2**30
# An allocation of exactly 1 GiB must show as a rise of 1 GiB, give or take the allocator's rounding,
# the fill kernel's module and NVML's reporting granularity: we accept 0.95 to 1.15 GiB.
ONE_GIB_TOLERANCE = (0.95, 1.15)


@pytest.fixture
def cuda0() -> torch.device:
    device = torch.device("cuda", 0)
    torch.zeros(1, device=device)  # the CUDA context exists before any window opens
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    return device


def test_nvml_sampler_sees_one_gib_more_when_one_gib_is_allocated(cuda0: torch.device) -> None:
    with NvmlSampler([cuda0], period_s=0.02) as sampler:
        assert sampler.available, sampler.reason
        time.sleep(0.2)
        before = sampler.current_mem_gb()
        block = torch.empty(GiB, dtype=torch.uint8, device=cuda0)
        block.fill_(1)  # never measure on untouched memory
        torch.cuda.synchronize(cuda0)
        time.sleep(0.3)
        after = sampler.current_mem_gb()
    summary = sampler.summary()
    del block
    torch.cuda.empty_cache()
    rise = after - before
    low, high = ONE_GIB_TOLERANCE
    assert low <= rise <= high, f"NVML rise {rise:.3f} GiB ({summary.mem_method}), expected {low}..{high}"
    assert summary.peak_mem_gb >= after - 1e-6
    assert summary.mem_method in ("per_process", "device_minus_baseline", "mixed")


def test_gpu_busy_is_positive_during_a_matmul_loop(cuda0: torch.device) -> None:
    a = torch.randn(4096, 4096, device=cuda0)
    with NvmlSampler([cuda0], period_s=0.05) as sampler:
        end = time.perf_counter() + 1.5
        while time.perf_counter() < end:
            for _ in range(8):
                b = a @ a
            torch.cuda.synchronize(cuda0)
    del b
    summary = sampler.summary()
    print(f"gpu_busy_pct={summary.gpu_busy_pct:.1f} sm_active_pct={summary.sm_active_pct} "
          f"sm_occupancy_pct={summary.sm_occupancy_pct} gpm_reason={summary.gpm_reason} n={summary.n_samples}")
    assert summary.available, summary.reason
    assert not math.isnan(summary.gpu_busy_pct) and summary.gpu_busy_pct > 0
    # GPM (Hopper+): a number above 0 where measured, otherwise NaN with the reason; never a bare 0
    if math.isnan(summary.sm_active_pct):
        assert summary.gpm_reason
    else:
        assert summary.sm_active_pct > 0


def test_cuda_event_timer_agrees_with_a_synchronised_wall_clock(cuda0: torch.device) -> None:
    a = torch.randn(2048, 2048, device=cuda0)
    timer = RegionTimer(cuda0)
    for _ in range(5):  # warm-up: cuBLAS handle, kernel selection
        a @ a
    with timer.region("calibrate"):
        for _ in range(20):
            a @ a
    per_matmul_ms = timer.totals_ms()["calibrate"] / 20
    count = max(1, round(50.0 / per_matmul_ms))  # a ~50 ms sequence
    ratios, walls = [], []
    for _ in range(7):
        timer.reset()
        start = wall_clock(cuda0)
        with timer.region("sequence"):
            for _ in range(count):
                a @ a
        wall_ms = (wall_clock(cuda0) - start) * 1e3
        walls.append(wall_ms)
        ratios.append(timer.totals_ms()["sequence"] / wall_ms)
    ratio = statistics.median(ratios)
    assert 25.0 <= statistics.median(walls) <= 100.0, f"sequence took {walls} ms, meant ~50"
    assert abs(ratio - 1.0) <= 0.05, f"event/wall ratios {ratios}"


def test_timer_does_not_synchronise_inside_the_region(cuda0: torch.device) -> None:
    a = torch.randn(4096, 4096, device=cuda0)
    a @ a
    torch.cuda.synchronize(cuda0)
    timer = RegionTimer(cuda0)
    host_start = time.perf_counter()
    with timer.region("queued"):
        for _ in range(100):
            a @ a
    host_ms = (time.perf_counter() - host_start) * 1e3
    (device_ms,) = timer.samples_ms("queued")  # waits for the events here, not before
    assert host_ms < 0.5 * device_ms, f"host {host_ms:.1f} ms vs device {device_ms:.1f} ms"


def test_torch_allocator_peaks(cuda0: torch.device) -> None:
    reset_torch_peaks(cuda0)
    block = torch.empty(256 * 2**20, dtype=torch.uint8, device=cuda0)
    assert torch_peak_gb("allocated", cuda0) >= 0.25
    assert torch_peak_gb("reserved", cuda0) >= torch_peak_gb("allocated", cuda0)
    del block
