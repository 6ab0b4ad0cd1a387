"""Placement: which device (and CUDA stream) each stage runs on.

With two or more GPUs the research note's split is used: RVC + VALL-E X on the first, FastPitch +
Wav2Lip on the second. With one GPU every stage shares it, each on its own CUDA stream so that a
chunk in Wav2Lip overlaps the next chunk in VALL-E X. Without a GPU everything runs on the CPU.
A stage's explicit `device` in the config always wins.

The ordering rule: every tensor that crosses from one CUDA stream to another (each stage runs on
its own non-blocking stream, and the workers are threads) travels with a `Ready` mark.

* Producer: after its last write, `ready(stage)` records an event on its stream; the event goes
  into the queue item beside the tensors. The producer never synchronises the host for this.
* Consumer: before its first use, `accept(stage, mark, tensors)` makes its own stream wait on that
  event (a device-side wait; the host waits only where the consumer has no stream), then calls
  `record_stream` on each CUDA tensor with the consumer's stream, so the caching allocator does not
  give the tensor's memory to the producer's next allocation while the consumer's stream may still
  read it. Everything the consumer then issues (cross-device copies included) runs on its stream.

Without a GPU both sides are no-ops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from iris_pipeline.config import PipelineConfig
from iris_pipeline.errors import ConfigError

# Stage -> index into the list of GPUs when two or more are present.
TWO_GPU_SPLIT: dict[str, int] = {"rvc": 0, "vallex": 0, "fastpitch": 1, "wav2lip": 1}


def resolve_device(name: str) -> torch.device:
    """'auto' -> the first GPU or the CPU; 'cuda[:N]' must exist."""
    if name == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {name!r} asked for, but this machine has no CUDA device")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device: {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return torch.device("cuda", index)
    return device


@dataclass(frozen=True)
class Ready:
    """When a producer's writes are complete: an event recorded on its stream (None: nothing to wait for)."""

    event: torch.cuda.Event | None = None


@dataclass
class Placement:
    """Device per stage, and a CUDA stream per stage on CUDA devices."""

    devices: dict[str, torch.device]
    streams: dict[str, torch.cuda.Stream | None] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: PipelineConfig, gpu_count: int | None = None) -> Placement:
        gpus = torch.cuda.device_count() if gpu_count is None else gpu_count
        devices: dict[str, torch.device] = {}
        for stage in config.stages:
            explicit = config.stage(stage).device
            if explicit is not None:
                devices[stage] = resolve_device(explicit)
            elif config.device == "auto" and gpus >= 2:
                devices[stage] = torch.device("cuda", TWO_GPU_SPLIT[stage])
            else:
                devices[stage] = resolve_device(config.device)
        return cls(devices=devices)

    def create_streams(self) -> None:
        """One non-default stream per stage on CUDA devices (must run where CUDA exists)."""
        for stage, device in self.devices.items():
            self.streams[stage] = torch.cuda.Stream(device=device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def on(self, stage: str) -> Iterator[None]:
        """Run the body on the stage's device and stream."""
        device = self.devices[stage]
        stream = self.streams.get(stage)
        if device.type != "cuda" or stream is None:
            yield
            return
        with torch.cuda.device(device), torch.cuda.stream(stream):
            yield

    def ready(self, stage: str) -> Ready:
        """Producer side: mark everything issued so far on `stage`'s stream (see the module doc)."""
        stream = self.streams.get(stage)
        if stream is None:
            return Ready()
        event = torch.cuda.Event()
        event.record(stream)
        return Ready(event)

    def accept(self, stage: str, mark: Ready, tensors: Iterable[torch.Tensor]) -> None:
        """Consumer side: order `stage`'s stream after the producer's mark, and keep the tensors'
        memory from being reused before that stream is done with them (see the module doc)."""
        if mark.event is None:
            return
        stream = self.streams.get(stage)
        if stream is None:  # a consumer without a stream (a CPU stage) reads on the host: wait there
            mark.event.synchronize()
            return
        stream.wait_event(mark.event)
        for tensor in tensors:
            if tensor.is_cuda:
                tensor.record_stream(stream)

    def synchronize(self, stage: str) -> None:
        stream = self.streams.get(stage)
        if stream is not None:
            stream.synchronize()

    @property
    def gpu_devices(self) -> list[torch.device]:
        return sorted({d for d in self.devices.values() if d.type == "cuda"}, key=lambda d: d.index or 0)

    def describe(self) -> dict[str, str]:
        return {stage: str(device) for stage, device in self.devices.items()}
