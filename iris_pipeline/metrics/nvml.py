"""NVML sampler: the GPU memory this process uses, how busy the GPU is, and (Hopper+) SM activity.

A background thread reads, every `period_s`, per device:
- memory used by THIS process: NVML's per-process figure (`nvmlDeviceGetComputeRunningProcesses`)
  where the driver lists this PID with a value, else the device's used memory minus a baseline
  read when the sampler started (or given by the caller, read before the pipeline existed). NVML
  sees what the torch allocator does not: CUDA contexts, library workspaces, TensorRT engines.
- `gpu_busy_pct`: NVML `utilization.gpu`, the share of the driver's sample window (1/6 s to 1 s,
  reported as `driver_busy_period_s` where NVML says) in which at least one kernel ran; averaged
  over our samples (`sample_period_s`). It is NOT SM occupancy: one tiny kernel keeps it at 100.
- `sm_active_pct` / `sm_occupancy_pct`: GPM metrics SM_UTIL / SM_OCCUPANCY between two GPM
  samples (Hopper and newer).
A figure that cannot be measured is NaN with a reason, never 0; without NVML (no driver, as on a
CPU machine) the sampler runs nothing and reports `available=False` and why.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

import torch

from iris_pipeline.metrics.memory import BYTES_PER_GB
from iris_pipeline.metrics.timing import DeviceLike

PER_PROCESS = "per_process"
DEVICE_MINUS_BASELINE = "device_minus_baseline"
# NVML advises >= 100 ms between the two GPM samples a metric is computed from.
GPM_MIN_INTERVAL_S = 0.1


@dataclass(frozen=True)
class NvmlSummary:
    """What the sampler saw over its window. NaN = not measurable here (see `reason`/`gpm_reason`)."""

    available: bool
    reason: str | None
    peak_mem_gb: float
    mem_method: str
    gpu_busy_pct: float
    sample_period_s: float
    driver_busy_period_s: float
    n_samples: int
    window_s: float
    sm_active_pct: float
    sm_occupancy_pct: float
    gpm_reason: str | None
    peak_mem_gb_per_device: dict[int, float] = field(default_factory=dict)
    gpu_busy_pct_per_device: dict[int, float] = field(default_factory=dict)
    baseline_gb_per_device: dict[int, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_nvml() -> tuple[ModuleType | None, str | None]:
    """The `pynvml` module of the nvidia-ml-py package, or None and why it cannot be imported."""
    try:
        import pynvml
    except ImportError as exc:
        return None, f"nvidia-ml-py is not installed ({exc})"
    return pynvml, None


def _cuda_indices(devices: DeviceLike | Iterable[DeviceLike]) -> list[int]:
    if devices is None:
        return list(range(torch.cuda.device_count()))
    if isinstance(devices, (torch.device, str, int)):
        devices = [devices]
    indices: list[int] = []
    for device in devices:
        if isinstance(device, int):
            index = device
        else:
            d = torch.device(device)
            if d.type != "cuda":
                continue
            if d.index is not None:
                index = d.index
            else:  # "cuda": the current device, without creating a context just to ask
                index = torch.cuda.current_device() if torch.cuda.is_initialized() else 0
        if index not in indices:
            indices.append(index)
    return indices


def nvml_handle(nvml: Any, cuda_index: int) -> Any:
    """The NVML handle of torch's CUDA device `cuda_index`: NVML counts every GPU of the machine,
    CUDA only the visible ones (CUDA_VISIBLE_DEVICES), possibly in another order."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        uuid = getattr(torch.cuda.get_device_properties(cuda_index), "uuid", None)
        if uuid is not None:
            text = str(uuid)
            try:
                return nvml.nvmlDeviceGetHandleByUUID(text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}")
            except nvml.NVMLError:
                pass
    visible = [e.strip() for e in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if e.strip()]
    if cuda_index < len(visible):
        entry = visible[cuda_index]
        if entry.startswith(("GPU-", "MIG-")):
            return nvml.nvmlDeviceGetHandleByUUID(entry)
        if entry.isdigit():
            return nvml.nvmlDeviceGetHandleByIndex(int(entry))
    return nvml.nvmlDeviceGetHandleByIndex(cuda_index)


def _nan_mean(values: Iterable[float], weights: Iterable[float] | None = None) -> float:
    """(Weighted) mean of the non-NaN values; NaN when there are none."""
    values = list(values)
    weights = [1.0] * len(values) if weights is None else list(weights)
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if not math.isnan(v)]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if pairs and total > 0 else math.nan


def _driver_busy_period_s(nvml: Any, handle: Any) -> float:
    """The driver's own `utilization.gpu` sample period (median spacing of its buffered samples);
    NaN where NVML does not say. `gpu_busy_pct` is a share of windows of this length."""
    try:
        _, samples = nvml.nvmlDeviceGetSamples(handle, nvml.NVML_GPU_UTILIZATION_SAMPLES, 0)
    except (nvml.NVMLError, AttributeError):
        return math.nan
    stamps = sorted({int(sample.timeStamp) for sample in samples})  # microseconds
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:], strict=False))
    return gaps[len(gaps) // 2] / 1e6 if gaps else math.nan


class _Gpm:
    """Two GPM sample buffers of one device; each `step` yields the metrics since the previous one."""

    def __init__(self, nvml: Any, handle: Any):
        self.nvml = nvml
        self.handle = handle
        self.previous = nvml.nvmlGpmSampleAlloc()
        self.current = nvml.nvmlGpmSampleAlloc()
        nvml.nvmlGpmSampleGet(handle, self.previous)
        self.previous_t = time.perf_counter()

    def step(self) -> tuple[float, float, float] | None:
        """(seconds, sm_active_pct, sm_occupancy_pct) since the last step; None when too soon."""
        now = time.perf_counter()
        elapsed = now - self.previous_t
        if elapsed < GPM_MIN_INTERVAL_S:
            return None
        nvml = self.nvml
        nvml.nvmlGpmSampleGet(self.handle, self.current)
        request = nvml.c_nvmlGpmMetricsGet_t()
        request.version = nvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = 2
        request.sample1 = self.previous
        request.sample2 = self.current
        request.metrics[0].metricId = nvml.NVML_GPM_METRIC_SM_UTIL
        request.metrics[1].metricId = nvml.NVML_GPM_METRIC_SM_OCCUPANCY
        nvml.nvmlGpmMetricsGet(request)
        values = [
            float(m.value) if m.nvmlReturn == nvml.NVML_SUCCESS and math.isfinite(m.value) else math.nan
            for m in (request.metrics[0], request.metrics[1])
        ]
        self.previous, self.current = self.current, self.previous
        self.previous_t = now
        return elapsed, values[0], values[1]

    def free(self) -> None:
        for sample in (self.previous, self.current):
            try:
                self.nvml.nvmlGpmSampleFree(sample)
            except self.nvml.NVMLError:
                pass


@dataclass
class _DeviceSamples:
    handle: Any
    baseline_bytes: int
    mem_bytes: list[int] = field(default_factory=list)
    methods: set[str] = field(default_factory=set)
    busy_pct: list[float] = field(default_factory=list)
    gpm: _Gpm | None = None
    gpm_intervals: list[tuple[float, float, float]] = field(default_factory=list)
    processes_supported: bool = True
    driver_period_s: float = math.nan


class NvmlSampler:
    """`with NvmlSampler(devices, period_s) as s: ...; s.summary()`.

    `devices`: CUDA devices as torch numbers them (ints, "cuda:N", torch.device; CPU entries are
    ignored); None = every visible CUDA device. `baseline_bytes` {cuda index: bytes used on the
    device before this process's pipeline existed} (see `device_used_bytes`); default: read at
    start. `nvml`: the pynvml module to use (tests pass a fake one).
    """

    def __init__(
        self,
        devices: DeviceLike | Iterable[DeviceLike] = None,
        period_s: float = 0.05,
        *,
        baseline_bytes: Mapping[int, int] | None = None,
        gpm: bool = True,
        nvml: Any = None,
    ):
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0 seconds, got {period_s!r}")
        self.period_s = float(period_s)
        self._requested = devices
        self._given_baseline = dict(baseline_bytes or {})
        self._want_gpm = gpm
        self._nvml = nvml
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._devices: dict[int, _DeviceSamples] = {}
        self._reason: str | None = None
        self._gpm_reason: str | None = None
        self._initialised = False
        self._window_start = math.nan
        self._window_end = math.nan

    # -- life cycle ---------------------------------------------------------------------------
    def __enter__(self) -> NvmlSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def available(self) -> bool:
        return self._initialised and self._reason is None

    @property
    def reason(self) -> str | None:
        return self._reason

    def start(self) -> NvmlSampler:
        if self._thread is not None or self._initialised:
            raise RuntimeError("an NvmlSampler can be started once")
        self._init_devices()
        self._window_start = time.perf_counter()
        if self.available:
            self._sample_once()
            self._thread = threading.Thread(target=self._run, name="iris-nvml-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._read_driver_periods()
            for dev in self._devices.values():
                if dev.gpm is not None:
                    dev.gpm.free()
                    dev.gpm = None
            self._shutdown()
        if math.isnan(self._window_end):
            self._window_end = time.perf_counter()

    def reset(self) -> None:
        """Forget the samples so far (e.g. those of warm-up); baselines are kept."""
        with self._lock:
            for dev in self._devices.values():
                dev.mem_bytes.clear()
                dev.methods.clear()
                dev.busy_pct.clear()
                dev.gpm_intervals.clear()
            self._window_start = time.perf_counter()

    # -- setup --------------------------------------------------------------------------------
    def _init_devices(self) -> None:
        self._initialised = True
        nvml = self._nvml
        if nvml is None:
            nvml, why = load_nvml()
            if nvml is None:
                self._reason = why
                return
            self._nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            self._reason = f"NVML unavailable: {exc}"
            return
        try:
            indices = _cuda_indices(self._requested)
            if not indices:
                self._reason = "no CUDA device to sample"
                self._shutdown()
                return
            for index in indices:
                handle = nvml_handle(nvml, index)
                baseline = self._given_baseline.get(index)
                if baseline is None:
                    baseline = int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
                self._devices[index] = _DeviceSamples(handle=handle, baseline_bytes=int(baseline))
        except nvml.NVMLError as exc:
            self._reason = f"NVML cannot read CUDA device(s) {self._requested!r}: {exc}"
            self._devices.clear()
            self._shutdown()
            return
        if self._want_gpm:
            self._init_gpm()
        else:
            self._gpm_reason = "GPM sampling switched off"

    def _init_gpm(self) -> None:
        nvml = self._nvml
        reasons = []
        for index, dev in self._devices.items():
            try:
                supported = bool(nvml.nvmlGpmQueryDeviceSupport(dev.handle).isSupportedDevice)
            except (nvml.NVMLError, AttributeError) as exc:
                reasons.append(f"cuda:{index}: GPM query failed ({exc})")
                continue
            if not supported:
                reasons.append(f"cuda:{index}: GPM not supported (needs Hopper or newer)")
                continue
            try:
                dev.gpm = _Gpm(nvml, dev.handle)
            except nvml.NVMLError as exc:
                reasons.append(f"cuda:{index}: GPM sampling failed ({exc})")
        self._gpm_reason = "; ".join(reasons) or None

    def _shutdown(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # shutting down must never raise over a measurement
            pass

    def _read_driver_periods(self) -> None:
        for dev in self._devices.values():
            period = _driver_busy_period_s(self._nvml, dev.handle)
            if not math.isnan(period):
                dev.driver_period_s = period

    # -- sampling -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample_once()
        self._sample_once()
        with self._lock:
            self._window_end = time.perf_counter()

    def _own_process_bytes(self, dev: _DeviceSamples) -> int | None:
        """This PID's memory on the device per NVML, or None where the driver does not say
        (PID not listed, e.g. inside a container's PID namespace, or no per-process figure)."""
        if not dev.processes_supported:
            return None
        nvml = self._nvml
        try:
            processes = nvml.nvmlDeviceGetComputeRunningProcesses(dev.handle)
        except nvml.NVMLError:
            dev.processes_supported = False
            return None
        pid = os.getpid()
        mine = [p.usedGpuMemory for p in processes if p.pid == pid and p.usedGpuMemory is not None]
        return int(sum(mine)) if mine else None

    def _sample_once(self) -> None:
        nvml = self._nvml
        for dev in self._devices.values():
            try:
                own = self._own_process_bytes(dev)
                if own is not None:
                    mem, method = own, PER_PROCESS
                else:
                    used = int(nvml.nvmlDeviceGetMemoryInfo(dev.handle).used)
                    mem, method = max(0, used - dev.baseline_bytes), DEVICE_MINUS_BASELINE
            except nvml.NVMLError:
                mem, method = None, None
            try:
                busy = float(nvml.nvmlDeviceGetUtilizationRates(dev.handle).gpu)
            except nvml.NVMLError:
                busy = math.nan
            gpm_values = None
            if dev.gpm is not None:
                try:
                    gpm_values = dev.gpm.step()
                except nvml.NVMLError:
                    gpm_values = None
            with self._lock:
                if mem is not None:
                    dev.mem_bytes.append(mem)
                    dev.methods.add(method)
                dev.busy_pct.append(busy)
                if gpm_values is not None:
                    dev.gpm_intervals.append(gpm_values)

    # -- results ------------------------------------------------------------------------------
    def current_mem_gb(self) -> float:
        """The latest memory sample, max over devices (NaN before any sample or without NVML)."""
        with self._lock:
            latest = [d.mem_bytes[-1] for d in self._devices.values() if d.mem_bytes]
        return max(latest) / BYTES_PER_GB if latest else math.nan

    def summary(self) -> NvmlSummary:
        """Figures over the window so far (from start, or the last `reset`, to now or `stop`)."""
        if self._thread is not None:  # still running: NVML is initialised, ask the driver now
            self._read_driver_periods()
        with self._lock:
            end = self._window_end if not math.isnan(self._window_end) else time.perf_counter()
            window = end - self._window_start if not math.isnan(self._window_start) else math.nan
            if not self.available:
                return NvmlSummary(
                    available=False, reason=self._reason or "sampler not started",
                    peak_mem_gb=math.nan, mem_method="n/a", gpu_busy_pct=math.nan,
                    sample_period_s=self.period_s, driver_busy_period_s=math.nan, n_samples=0, window_s=window,
                    sm_active_pct=math.nan, sm_occupancy_pct=math.nan,
                    gpm_reason=self._gpm_reason or self._reason,
                )
            peak = {i: (max(d.mem_bytes) / BYTES_PER_GB if d.mem_bytes else math.nan)
                    for i, d in self._devices.items()}
            busy = {i: _nan_mean(d.busy_pct) for i, d in self._devices.items()}
            methods = set().union(*(d.methods for d in self._devices.values()))
            active, occupancy, gpm_devices = [], [], 0
            for d in self._devices.values():
                if d.gpm_intervals:
                    gpm_devices += 1
                    seconds = [g[0] for g in d.gpm_intervals]
                    active.append(_nan_mean([g[1] for g in d.gpm_intervals], seconds))
                    occupancy.append(_nan_mean([g[2] for g in d.gpm_intervals], seconds))
            gpm_reason = self._gpm_reason
            if gpm_reason is None and gpm_devices < len(self._devices):
                gpm_reason = f"window shorter than the {GPM_MIN_INTERVAL_S} s GPM needs"
            finite_peaks = [p for p in peak.values() if not math.isnan(p)]
            return NvmlSummary(
                available=True,
                reason=None,
                peak_mem_gb=max(finite_peaks) if finite_peaks else math.nan,
                mem_method=(methods.pop() if len(methods) == 1 else "mixed" if methods else "n/a"),
                gpu_busy_pct=_nan_mean(busy.values()),
                sample_period_s=self.period_s,
                driver_busy_period_s=_nan_mean(d.driver_period_s for d in self._devices.values()),
                n_samples=max((len(d.busy_pct) for d in self._devices.values()), default=0),
                window_s=window,
                sm_active_pct=_nan_mean(active),
                sm_occupancy_pct=_nan_mean(occupancy),
                gpm_reason=gpm_reason,
                peak_mem_gb_per_device=peak,
                gpu_busy_pct_per_device=busy,
                baseline_gb_per_device={i: d.baseline_bytes / BYTES_PER_GB for i, d in self._devices.items()},
            )


def device_used_bytes(devices: DeviceLike | Iterable[DeviceLike] = None, nvml: Any = None) -> dict[int, int]:
    """{cuda index: bytes used on the whole device now}; {} without NVML. Read it before building
    the pipeline and pass it as `NvmlSampler(baseline_bytes=...)`."""
    if nvml is None:
        nvml, _ = load_nvml()
        if nvml is None:
            return {}
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return {}
    try:
        return {i: int(nvml.nvmlDeviceGetMemoryInfo(nvml_handle(nvml, i)).used) for i in _cuda_indices(devices)}
    except nvml.NVMLError:
        return {}
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass

