"""Cost figures of the AR decode step: HBM floor, kernels per step, measured ms per step.

The floor is the time one step needs just to stream what it must read from device memory once:
every AR weight used per step (12 layers, final norm, output layer; one embedding row per sequence)
plus the valid part of the KV cache, divided by the peak memory bandwidth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from iris_pipeline.models.vallex.decode import DecodeRequest, Sampling, StaticARCache, VallexDecoder, ar_step
from iris_pipeline.models.vallex.model import Vallex

# Peak HBM bandwidth (bytes/s) by device-name fragment, for when NVML cannot tell.
KNOWN_BANDWIDTH = {
    "H200": 4.8e12, "H100 SXM": 3.35e12, "H100 PCIe": 2.0e12, "H100 NVL": 3.9e12, "H100": 3.35e12,
    "A100-SXM4-80GB": 2.039e12, "A100": 1.555e12, "L40S": 0.864e12, "L4": 0.3e12, "A10G": 0.6e12,
    "T4": 0.32e12,
}


def peak_bandwidth(device: torch.device | int | None = None) -> float | None:
    """Peak device-memory bandwidth in bytes/s: NVML (max memory clock x bus width x 2), else the table."""
    if not torch.cuda.is_available():
        return None
    if device is None:
        index = torch.cuda.current_device()
    elif isinstance(device, int):
        index = device
    else:
        index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        clock_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
        if clock_mhz and bus_bits:
            return clock_mhz * 1e6 * bus_bits * 2 / 8
    except Exception:  # NVML missing or the query unsupported: fall back to the table
        pass
    name = torch.cuda.get_device_name(index)
    for fragment, value in KNOWN_BANDWIDTH.items():
        if fragment in name:
            return value
    return None


def ar_step_weight_bytes(model: Vallex, batch: int) -> int:
    """Bytes of AR weights one step reads (decoder + output layer + one embedding row per sequence)."""
    dec = sum(p.numel() * p.element_size() for p in model.ar_decoder.parameters())
    head = model.ar_predict_layer.weight.numel() * model.ar_predict_layer.weight.element_size()
    row = model.config.d_model * model.ar_audio_embedding.weight.element_size()
    return dec + head + batch * row


@dataclass(frozen=True)
class StepFloor:
    weight_bytes: int
    kv_bytes: int
    bandwidth: float  # bytes/s
    floor_ms: float


def hbm_floor(model: Vallex, batch: int, context: int, bandwidth: float,
              kv_columns_read: int | None = None) -> StepFloor:
    """Floor of one AR step for `batch` sequences with `context` cached positions.

    kv_columns_read: columns the attention actually reads (the static-cache step reads its whole
    capacity; pass it to get that kernel's floor rather than the ideal one).
    """
    cfg = model.config
    element = next(model.parameters()).element_size()
    columns = context if kv_columns_read is None else kv_columns_read
    kv = 2 * cfg.num_layers * batch * columns * cfg.d_model * element
    weights = ar_step_weight_bytes(model, batch)
    return StepFloor(weights, kv, bandwidth, (weights + kv) / bandwidth * 1e3)


def synthetic_requests(batch: int, text_tokens: int, prompt_frames: int, frames: int,
                       seed: int = 0) -> list[DecodeRequest]:
    """Requests with random phonemes / prompt codes emitting exactly `frames` frames each."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        text = torch.randint(5, 70, (text_tokens,), generator=gen)
        out.append(DecodeRequest(text=text, languages=torch.zeros_like(text),
                                 prompt_codes=torch.randint(0, 1024, (prompt_frames, 8), generator=gen),
                                 min_frames=frames, max_frames=frames))
    return out


def count_step_kernels(model: Vallex, cache: StaticARCache) -> int | None:
    """CUDA kernels one eager `ar_step` launches (torch.profiler); None on the CPU. Restores the cache."""
    if cache.keys.device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    saved = (cache.valid.clone(), cache.audio_pos.clone(), cache.column.clone())
    with torch.no_grad():
        ar_step(model, cache)  # warm-up outside the profile
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            ar_step(model, cache)
            torch.cuda.synchronize()
    for buffer, value in zip((cache.valid, cache.audio_pos, cache.column), saved, strict=True):
        buffer.copy_(value)
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def time_ar_steps(decoder: VallexDecoder, requests: list[DecodeRequest], sampling: Sampling | None = None,
                  warmup: int = 1, repeats: int = 3) -> dict[str, float]:
    """Wall ms per AR step (sampling included) over whole `decode_ar` runs, prefill subtracted, best of `repeats`."""
    frames = max(r.frame_limits()[1] for r in requests)
    sampling = sampling or Sampling()
    cuda = decoder.device.type == "cuda"

    def once() -> tuple[float, float]:
        gen = torch.Generator(device=decoder.device).manual_seed(0)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        decoder.prefill(requests, frames)
        if cuda:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        decoder.decode_ar(requests, sampling, gen)  # prefills again, then samples and steps
        if cuda:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    for _ in range(warmup):
        once()
    runs = [once() for _ in range(repeats)]
    best_prefill, best_total = min(r[0] for r in runs), min(r[1] for r in runs)
    # decode_ar = one prefill + one sample and one model step per generated frame
    step_ms = max(best_total - best_prefill, 0.0) / frames * 1e3
    return {"prefill_ms": best_prefill * 1e3, "decode_ms": best_total * 1e3, "ms_per_step": step_ms,
            "frames": float(frames)}
