"""NVML sampler: the NVML-absent path, and its logic on a fake pynvml (per-process vs baseline, GPM)."""

from __future__ import annotations

import math
import os
import sys
import time
from types import SimpleNamespace

import pynvml
import pytest

from iris_pipeline.metrics import DEVICE_MINUS_BASELINE, PER_PROCESS, NvmlSampler, device_used_bytes
from iris_pipeline.metrics.nvml import GPM_MIN_INTERVAL_S

GiB = 2**30


class FakeNVMLError(Exception):
    pass


class FakeNvml:
    """The few pynvml calls the sampler makes, over one device whose state the test sets."""

    NVMLError = FakeNVMLError
    NVML_SUCCESS = pynvml.NVML_SUCCESS
    NVML_GPM_METRICS_GET_VERSION = pynvml.NVML_GPM_METRICS_GET_VERSION
    NVML_GPM_METRIC_SM_UTIL = pynvml.NVML_GPM_METRIC_SM_UTIL
    NVML_GPM_METRIC_SM_OCCUPANCY = pynvml.NVML_GPM_METRIC_SM_OCCUPANCY
    c_nvmlGpmMetricsGet_t = pynvml.c_nvmlGpmMetricsGet_t

    def __init__(self, used: int = 5 * GiB, processes=None, busy: float | None = 40.0,
                 gpm: bool = False, processes_supported: bool = True, init_error: str | None = None):
        self.used = used
        self.processes = processes if processes is not None else []
        self.busy = busy
        self.gpm = gpm
        self.processes_supported = processes_supported
        self.init_error = init_error
        self.inits = self.shutdowns = 0
        self.gpm_values = {pynvml.NVML_GPM_METRIC_SM_UTIL: 55.0}  # occupancy: the driver refuses it
        self.gpm_samples: list[object] = []

    def nvmlInit(self) -> None:
        if self.init_error:
            raise FakeNVMLError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        if index != 0:
            raise FakeNVMLError("Invalid Argument")
        return "gpu0"

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        raise FakeNVMLError("Not Found")

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> SimpleNamespace:
        return SimpleNamespace(used=self.used, total=80 * GiB, free=80 * GiB - self.used)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[SimpleNamespace]:
        if not self.processes_supported:
            raise FakeNVMLError("Not Supported")
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in self.processes]

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> SimpleNamespace:
        if self.busy is None:
            raise FakeNVMLError("Not Supported")
        return SimpleNamespace(gpu=self.busy, memory=0)

    NVML_GPU_UTILIZATION_SAMPLES = pynvml.NVML_GPU_UTILIZATION_SAMPLES

    def nvmlDeviceGetSamples(self, handle: str, kind: int, since: int):
        if kind != pynvml.NVML_GPU_UTILIZATION_SAMPLES or self.busy is None:
            raise FakeNVMLError("Not Supported")
        stamps = [1_000_000 + i * 166_667 for i in range(10)]  # the driver samples every 1/6 s
        return pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, [SimpleNamespace(timeStamp=t, sampleValue=None) for t in stamps]

    def nvmlGpmQueryDeviceSupport(self, handle: str) -> SimpleNamespace:
        return SimpleNamespace(isSupportedDevice=int(self.gpm))

    def nvmlGpmSampleAlloc(self) -> object:
        sample = pynvml.c_nvmlGpmSample_t()
        self.gpm_samples.append(sample)
        return sample

    def nvmlGpmSampleFree(self, sample: object) -> None:
        self.gpm_samples.remove(sample)

    def nvmlGpmSampleGet(self, handle: str, sample: object) -> object:
        return sample

    def nvmlGpmMetricsGet(self, request):
        for i in range(request.numMetrics):
            metric = request.metrics[i]
            if metric.metricId in self.gpm_values:
                metric.value, metric.nvmlReturn = self.gpm_values[metric.metricId], pynvml.NVML_SUCCESS
            else:
                metric.value, metric.nvmlReturn = 0.0, pynvml.NVML_ERROR_NOT_SUPPORTED
        return request


def _assert_all_nan(summary, *names: str) -> None:
    for name in names:
        value = getattr(summary, name)
        assert math.isnan(value), f"{name} should be unavailable (NaN), got {value!r}"


def test_without_nvml_on_this_machine_everything_is_unavailable_not_zero() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("NVML works on this machine; the fake-library tests below cover the absent path")
    with NvmlSampler(period_s=0.01) as sampler:
        time.sleep(0.03)
    summary = sampler.summary()
    assert summary.available is False
    assert not sampler.available
    assert "NVML" in summary.reason
    _assert_all_nan(summary, "peak_mem_gb", "gpu_busy_pct", "driver_busy_period_s", "sm_active_pct",
                    "sm_occupancy_pct")
    assert summary.mem_method == "n/a"
    assert summary.n_samples == 0
    assert math.isnan(sampler.current_mem_gb())
    assert device_used_bytes() == {}


def test_nvml_library_missing_or_failing_gives_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    failing = FakeNvml(init_error="NVML Shared Library Not Found")
    with NvmlSampler([0], 0.01, nvml=failing) as sampler:
        pass
    summary = sampler.summary()
    assert not summary.available
    assert "NVML Shared Library Not Found" in summary.reason
    _assert_all_nan(summary, "peak_mem_gb", "gpu_busy_pct", "sm_active_pct", "sm_occupancy_pct")

    monkeypatch.setitem(sys.modules, "pynvml", None)  # the package itself cannot be imported
    with NvmlSampler([0], 0.01) as sampler:
        pass
    assert not sampler.available
    assert "nvidia-ml-py" in sampler.summary().reason


def test_no_cuda_device_to_sample() -> None:
    fake = FakeNvml()
    with NvmlSampler(["cpu"], 0.01, nvml=fake) as sampler:
        pass
    assert not sampler.available
    assert "no CUDA device" in sampler.reason
    assert fake.inits == fake.shutdowns == 1


def test_per_process_figure_is_used_where_the_driver_lists_this_pid() -> None:
    fake = FakeNvml(used=10 * GiB, processes=[(os.getpid(), 3 * GiB), (os.getpid() + 1, 6 * GiB)])
    sampler = NvmlSampler(["cuda:0"], 0.01, nvml=fake).start()
    fake.processes = [(os.getpid(), 4 * GiB), (os.getpid() + 1, 1 * GiB)]
    fake.used = 11 * GiB
    sampler.stop()
    summary = sampler.summary()
    assert summary.available
    assert summary.reason is None
    assert summary.mem_method == PER_PROCESS
    assert summary.peak_mem_gb == pytest.approx(4.0)  # our process only, not the device's 11 GiB
    assert summary.gpu_busy_pct == pytest.approx(40.0)
    assert summary.driver_busy_period_s == pytest.approx(1 / 6, rel=1e-3)
    assert summary.n_samples >= 2
    assert summary.sample_period_s == 0.01
    assert fake.inits == fake.shutdowns == 1


@pytest.mark.parametrize(
    "processes, supported",
    [([(1, 9 * GiB)], True), ([(os.getpid(), None)], True), ([], False)],
    ids=["pid-not-listed", "no-per-process-value", "query-not-supported"],
)
def test_device_used_minus_baseline_otherwise(processes, supported: bool) -> None:
    fake = FakeNvml(used=5 * GiB, processes=processes, processes_supported=supported)
    sampler = NvmlSampler(0, 0.01, nvml=fake).start()  # baseline: 5 GiB already used at start
    fake.used = int(6.5 * GiB)
    sampler.stop()
    summary = sampler.summary()
    assert summary.mem_method == DEVICE_MINUS_BASELINE
    assert summary.peak_mem_gb == pytest.approx(1.5)
    assert summary.baseline_gb_per_device == {0: pytest.approx(5.0)}


def test_a_baseline_taken_before_the_pipeline_existed_is_used() -> None:
    fake = FakeNvml(used=2 * GiB)
    before = device_used_bytes([0], nvml=fake)
    assert before == {0: 2 * GiB}
    fake.used = 7 * GiB  # the pipeline was built between the baseline and the sampler's start
    with NvmlSampler([0], 0.01, baseline_bytes=before, nvml=fake) as sampler:
        pass
    assert sampler.summary().peak_mem_gb == pytest.approx(5.0)
    assert sampler.current_mem_gb() == pytest.approx(5.0)


def test_unsupported_utilisation_and_gpm_are_nan_not_zero() -> None:
    fake = FakeNvml(busy=None, gpm=False)
    with NvmlSampler([0], 0.01, nvml=fake) as sampler:
        time.sleep(0.03)
    summary = sampler.summary()
    assert summary.available
    _assert_all_nan(summary, "gpu_busy_pct", "driver_busy_period_s", "sm_active_pct", "sm_occupancy_pct")
    assert "GPM not supported" in summary.gpm_reason
    assert not math.isnan(summary.peak_mem_gb)


def test_gpm_metrics_where_supported_and_nan_where_the_driver_refuses_one() -> None:
    fake = FakeNvml(gpm=True)
    with NvmlSampler([0], 0.02, nvml=fake) as sampler:
        time.sleep(2.5 * GPM_MIN_INTERVAL_S)
    summary = sampler.summary()
    assert summary.sm_active_pct == pytest.approx(55.0)
    assert math.isnan(summary.sm_occupancy_pct)  # NVML_ERROR_NOT_SUPPORTED for that metric
    assert summary.gpm_reason is None
    assert fake.gpm_samples == []  # both GPM buffers were freed


def test_a_window_too_short_for_gpm_says_so() -> None:
    fake = FakeNvml(gpm=True)
    with NvmlSampler([0], 0.01, nvml=fake) as sampler:
        pass
    summary = sampler.summary()
    assert math.isnan(summary.sm_active_pct)
    assert "shorter" in summary.gpm_reason


def test_reset_starts_a_new_window() -> None:
    fake = FakeNvml(used=1 * GiB, processes=[(os.getpid(), 8 * GiB)], busy=10.0)
    # a long period: no sample is taken between `reset` and the change of state below
    sampler = NvmlSampler([0], 10.0, nvml=fake).start()
    sampler.reset()  # forget warm-up (8 GiB, 10 %)
    fake.processes = [(os.getpid(), 2 * GiB)]
    fake.busy = 90.0
    sampler.stop()
    summary = sampler.summary()
    assert summary.peak_mem_gb == pytest.approx(2.0)
    assert summary.gpu_busy_pct == pytest.approx(90.0)


def test_bad_period_is_refused() -> None:
    with pytest.raises(ValueError, match="period_s"):
        NvmlSampler([0], 0.0)
