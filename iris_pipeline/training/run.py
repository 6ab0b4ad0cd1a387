"""A whole fine-tuning run: data -> model -> N optimizer steps -> checkpoint (what `iris finetune` does).

Resuming (`resume=True`, with `init` a checkpoint this code wrote) restores the optimizer, grad scaler,
NAR random stream and step count, and skips the batches already consumed, so a run interrupted after
k steps and resumed gives the steps an uninterrupted run would have given.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from iris_pipeline import models
from iris_pipeline.cache import DiskCache, default_cache_dir
from iris_pipeline.errors import ConfigError
from iris_pipeline.training.checkpoint import load_trainer_state, save_checkpoint
from iris_pipeline.training.dataset import CodeEncoder, DataLimits, FinetuneData, batches, load_dataset
from iris_pipeline.training.step import StepResult, Trainer, TrainSettings

CODE_CACHE_ENTRIES = 1_000_000  # one entry per utterance; a fine-tuning set is never evicted


@dataclass
class FinetuneOptions:
    data: Path
    steps: int
    out: Path = Path("vallex-finetuned.pt")
    size: str = "full"
    device: str = "cpu"
    batch_size: int = 4
    language: str = "en"
    init: Path | None = None
    resume: bool = False
    encodec_checkpoint: Path | None = None
    cache_dir: Path | None = None
    save_every: int = 0  # 0: only at the end
    seed: int = 0
    settings: TrainSettings = field(default_factory=TrainSettings)
    limits: DataLimits = field(default_factory=DataLimits)


@dataclass
class FinetuneOutcome:
    data: FinetuneData
    results: list[StepResult]
    checkpoint: Path


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"finetune: --device {name!r} is not a device (cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"finetune: --device {name} asked for, but CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"finetune: --device {name}: only cpu and cuda are supported")
    return device


def prepare_data(options: FinetuneOptions, device: torch.device) -> FinetuneData:
    encodec = models.get("encodec_24khz", options.encodec_checkpoint, options.size, seed=options.seed)
    encodec = encodec.to(device).eval()
    cache = DiskCache(options.cache_dir or default_cache_dir("finetune_codes"), max_entries=CODE_CACHE_ENTRIES)
    try:
        return load_dataset(options.data, CodeEncoder(encodec, cache, device), options.language, options.limits)
    finally:
        del encodec


def run_finetune(options: FinetuneOptions, on_data: Callable[[FinetuneData], None] | None = None,
                 on_step: Callable[[StepResult], None] | None = None) -> FinetuneOutcome:
    if options.steps < 1:
        raise ConfigError(f"finetune: --steps must be >= 1, got {options.steps}")
    if options.resume and options.init is None:
        raise ConfigError("finetune: --resume needs --init CHECKPOINT (a checkpoint written by iris finetune)")
    device = resolve_device(options.device)
    if options.settings.precision == "fp16" and device.type != "cuda":
        raise ConfigError("finetune: precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    data = prepare_data(options, device)
    if on_data is not None:
        on_data(data)
    if not data.utterances:
        raise ConfigError(f"finetune: no usable (audio, transcript) pair in {options.data} "
                          f"({len(data.skipped)} skipped)")

    model = models.get("vallex", options.init, options.size, seed=options.seed).to(device)
    trainer = Trainer(model, options.settings)
    if options.resume:
        load_trainer_state(options.init, trainer)

    accumulate = options.settings.accumulate
    stream = batches(data.utterances, options.batch_size, seed=options.seed)
    # the batches of the steps already done (when resuming) are skipped, so the order continues
    stream = itertools.islice(stream, trainer.step_count * accumulate, None)
    results = []
    last = trainer.step_count + options.steps
    while trainer.step_count < last:
        result = trainer.step([next(stream) for _ in range(accumulate)])
        results.append(result)
        if on_step is not None:
            on_step(result)
        if options.save_every and trainer.step_count % options.save_every == 0 and trainer.step_count < last:
            save_checkpoint(options.out, model, trainer)
    save_checkpoint(options.out, model, trainer)
    return FinetuneOutcome(data, results, Path(options.out))
