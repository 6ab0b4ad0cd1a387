"""Memory and speed of the fine-tuning step, with and without activation checkpointing, fp32 vs mixed.

Each case builds a fresh model (seeded), runs `warmup` optimizer steps (the AdamW state is created
there), then `steps` measured steps on one fixed synthetic batch (random phoneme ids and codes; the
cost of a step does not depend on the values). Per case:

* `step_ms_median` (+ min, p90): CUDA events around each step on a GPU, `perf_counter` on the CPU;
* `torch_peak_allocated_gb` / `torch_peak_reserved_gb`: the caching allocator's peaks over the measured
  steps (weights, gradients, AdamW moments and activations; GiB);
* `nvml_peak_mem_gb`: this process's device memory sampled by NVML (CUDA context and allocator pool
  included), where the driver gives it;
* `saved_activations_gb`: the tensors the forward keeps alive for the backward (unique storages,
  parameters excluded; autocast's half-precision weight copies included), counted with
  `torch.autograd.graph.saved_tensors_hooks` in one extra step. This is the memory checkpointing
  trades for recomputation, and it is measurable on the CPU too (the CPU allocator keeps no peak);
* `model_state_gb`: weights + gradients + AdamW moments (fp32), the same in every case.

Rows end with the measurement context (`metrics.capture_context`). `summarize` adds, per precision,
how much checkpointing saves in peak memory and costs in step time.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iris_pipeline import models
from iris_pipeline.errors import ConfigError
from iris_pipeline.metrics import (
    NvmlSampler,
    as_device,
    capture_context,
    reset_torch_peaks,
    torch_peak_gb,
    write_csv,
)
from iris_pipeline.models.vallex.config import FRAME_RATE, NUM_QUANTIZERS
from iris_pipeline.training.dataset import TrainingBatch
from iris_pipeline.training.step import Trainer, TrainSettings

TEXT_TOKENS_PER_SECOND = 15  # phoneme ids per second of speech in the official front end (about)


@dataclass(frozen=True)
class BenchCase:
    checkpointing: bool
    precision: str  # fp32 | fp16 | bf16


def default_cases(device: torch.device) -> list[BenchCase]:
    mixed = "fp16" if device.type == "cuda" else "bf16"
    return [BenchCase(c, p) for p in ("fp32", mixed) for c in (False, True)]


def synthetic_batch(batch_size: int, seconds: float, seed: int = 0) -> TrainingBatch:
    """`batch_size` utterances of `seconds` s (75 frames/s) with 15 phoneme ids per second."""
    if batch_size < 1 or not seconds > 0:
        raise ConfigError(f"finetune bench: need batch >= 1 and seconds > 0, got {batch_size} and {seconds}")
    g = torch.Generator().manual_seed(seed)
    frames = max(4, round(seconds * FRAME_RATE))
    tokens = max(2, round(seconds * TEXT_TOKENS_PER_SECOND))
    return TrainingBatch(
        text=torch.randint(5, 70, (batch_size, tokens), generator=g),
        languages=torch.zeros(batch_size, tokens, dtype=torch.long),
        text_lens=torch.full((batch_size,), tokens, dtype=torch.long),
        codes=torch.randint(0, 1024, (batch_size, frames, NUM_QUANTIZERS), generator=g),
        code_lens=torch.full((batch_size,), frames, dtype=torch.long),
        names=tuple(f"synthetic{i}" for i in range(batch_size)),
    )


def saved_activation_bytes(trainer: Trainer, batch: TrainingBatch) -> int:
    """Bytes of the unique non-parameter storages saved for backward during one (real) optimizer step.

    With non-reentrant checkpointing, what a checkpointed layer saves goes to the checkpoint's own
    hooks (and is dropped); only the layer inputs it keeps reach this outer hook, as they should.
    """
    params = {p.untyped_storage().data_ptr() for p in trainer.model.parameters()}
    storages: dict[tuple[str, int], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        trainer.step([batch])
    return sum(storages.values())


def model_state_bytes(trainer: Trainer) -> int:
    """fp32 weights, their gradients and AdamW's two moments."""
    weights = sum(p.numel() * p.element_size() for p in trainer.model.parameters())
    trained = sum(p.numel() * p.element_size() for p in trainer.params)
    return weights + 3 * trained


def _timed_step(trainer: Trainer, batch: TrainingBatch) -> tuple[float, float]:
    """(milliseconds, loss) of one optimizer step."""
    if trainer.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = trainer.step([batch])
        end.record()
        end.synchronize()
        return start.elapsed_time(end), result.loss
    t0 = time.perf_counter()
    result = trainer.step([batch])
    return (time.perf_counter() - t0) * 1000.0, result.loss


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def measure_case(case: BenchCase, size: str, device: torch.device, batch: TrainingBatch,
                 warmup: int = 2, steps: int = 5, seed: int = 0) -> dict[str, Any]:
    """One row: step time and peak memory of `case` (model and optimizer built here, freed after)."""
    if steps < 1 or warmup < 0:
        raise ConfigError(f"finetune bench: need steps >= 1 and warmup >= 0, got {steps} and {warmup}")
    device = as_device(device)  # "cuda" -> "cuda:N", the name the allocator statistics use
    _release(device)
    model = trainer = None
    try:
        model = models.build("vallex", size, seed=seed).to(device)
        trainer = Trainer(model, TrainSettings(precision=case.precision, checkpointing=case.checkpointing,
                                               seed=seed))
        batch = batch.to(device)
        for _ in range(warmup):
            trainer.step([batch])
        activations = saved_activation_bytes(trainer, batch)
        state = model_state_bytes(trainer)
        _release(device)
        reset_torch_peaks(device)
        times, losses = [], []
        with NvmlSampler(device if device.type == "cuda" else [], period_s=0.02) as sampler:
            for _ in range(steps):
                ms, loss = _timed_step(trainer, batch)
                times.append(ms)
                losses.append(loss)
        peak_allocated = torch_peak_gb("allocated", device)  # NaN on the CPU
        peak_reserved = torch_peak_gb("reserved", device)
        nvml = sampler.summary()
    finally:
        del model, trainer
        _release(device)
    ordered = sorted(times)
    return {
        "checkpointing": case.checkpointing,
        "precision": case.precision,
        "size": size,
        "device": str(device),
        "batch_size": batch.size,
        "seconds_per_utterance": round(batch.codes.shape[1] / FRAME_RATE, 3),
        "frames_per_utterance": int(batch.codes.shape[1]),
        "text_tokens_per_utterance": int(batch.text.shape[1]),
        "warmup_steps": warmup,
        "measured_steps": steps,
        "step_ms_median": statistics.median(times),
        "step_ms_min": ordered[0],
        "step_ms_p90": ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)],
        "torch_peak_allocated_gb": peak_allocated,
        "torch_peak_reserved_gb": peak_reserved,
        "nvml_peak_mem_gb": nvml.peak_mem_gb,
        "nvml_mem_method": nvml.mem_method if nvml.available else f"n/a ({nvml.reason})",
        "saved_activations_gb": activations / 2**30,
        "model_state_gb": state / 2**30,
        "last_loss": losses[-1],
        "finite_losses": all(math.isfinite(x) for x in losses),
    }


def _memory_figure(row: dict[str, Any]) -> float:
    """The memory figure to compare cases by: the allocator peak on a GPU; on the CPU (no allocator
    peak) model state + saved activations, the part of the peak that training adds."""
    value = row["torch_peak_allocated_gb"]
    if isinstance(value, float) and math.isfinite(value):
        return value
    return row["model_state_gb"] + row["saved_activations_gb"]


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per precision: memory saved and step time added by checkpointing (percent of the plain case)."""
    out = []
    for precision in dict.fromkeys(r["precision"] for r in rows):
        plain = [r for r in rows if r["precision"] == precision and not r["checkpointing"]]
        ckpt = [r for r in rows if r["precision"] == precision and r["checkpointing"]]
        if not plain or not ckpt:
            continue
        p, c = plain[0], ckpt[0]
        mem_p, mem_c = _memory_figure(p), _memory_figure(c)
        out.append({
            "precision": precision,
            "memory_plain_gb": mem_p,
            "memory_checkpointing_gb": mem_c,
            "memory_saved_pct": 100.0 * (mem_p - mem_c) / mem_p if mem_p > 0 else math.nan,
            "step_ms_plain": p["step_ms_median"],
            "step_ms_checkpointing": c["step_ms_median"],
            "step_time_cost_pct": 100.0 * (c["step_ms_median"] / p["step_ms_median"] - 1.0),
        })
    return out


def run_benchmark(size: str, device: str | torch.device, batch_size: int, seconds: float,
                  cases: Iterable[BenchCase] | None = None, warmup: int = 2, steps: int = 5,
                  seed: int = 0) -> list[dict[str, Any]]:
    device = as_device(device)
    batch = synthetic_batch(batch_size, seconds, seed)
    cases = list(cases) if cases is not None else default_cases(device)
    return [measure_case(case, size, device, batch, warmup, steps, seed) for case in cases]


def with_context(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row followed by the measurement context (its own keys win where names coincide)."""
    context = capture_context()
    out = []
    for row in rows:
        full = dict(row)
        full.update({"vallex_precision": row["precision"], "vallex_backend": "eager",
                     "vallex_device": row["device"]})
        for key, value in context.items():
            full.setdefault(key, value)
        out.append(full)
    return out


def write_benchmark_csv(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    return write_csv(path, with_context(rows))
