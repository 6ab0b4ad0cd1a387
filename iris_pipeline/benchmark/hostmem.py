"""Host memory of the benchmark process: the peak resident set size (RSS, psutil) over a window.

RSS is sampled by a background thread every `period_s` (the NVML sampler's period) and once more
when the peak is read, so CPU runs and soak tests have a memory figure too. A peak between two
samples can be missed by at most what the process grows in one period; GPU memory gates never use
this figure (they use NVML).
"""

from __future__ import annotations

import math
import threading

from iris_pipeline.metrics import BYTES_PER_GB


class HostMemorySampler:
    """`with HostMemorySampler(0.05) as host: ...; host.reset(); ...; host.peak_gb()`."""

    def __init__(self, period_s: float = 0.05):
        import psutil

        self.period_s = period_s
        self._process = psutil.Process()
        self._lock = threading.Lock()
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        # Read RSS under the lock: a reading taken before `reset()` and stored after it
        # would carry the old window's peak into the new one.
        with self._lock:
            self._peak = max(self._peak, self._process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def start(self) -> HostMemorySampler:
        self._sample()
        self._thread = threading.Thread(target=self._run, name="iris-host-memory", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def reset(self) -> None:
        """A new window: the peak starts again from the current RSS."""
        with self._lock:
            self._peak = 0
        self._sample()

    def peak_gb(self) -> float:
        """Peak RSS of the window so far, in GiB (NaN before the first sample)."""
        self._sample()
        with self._lock:
            return self._peak / BYTES_PER_GB if self._peak else math.nan

    def __enter__(self) -> HostMemorySampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
