"""One fine-tuning step: AdamW over (accumulated) micro-batches, in fp32, fp16 (+ grad scaler) or bf16.

Mixed precision keeps fp32 master weights and runs the forward under autocast; fp16 scales the loss
with a `GradScaler` (steps with inf/NaN gradients are skipped and the scale lowered), bf16 needs none.
Gradients are clipped to norm 1.0 as in lifeiteng's trainer (after unscaling). With `accumulate` = n,
one optimizer step sums the gradients of n micro-batches, each loss divided by n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from iris_pipeline.errors import ConfigError
from iris_pipeline.models.vallex.model import Vallex
from iris_pipeline.training.dataset import TrainingBatch
from iris_pipeline.training.losses import draw_nar, training_loss

Precision = Literal["fp32", "fp16", "bf16"]
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TrainSettings:
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    precision: Precision = "fp32"
    checkpointing: bool = True
    accumulate: int = 1
    clip_grad_norm: float = 1.0  # lifeiteng's trainer clips AdamW gradients at 1.0; <= 0: no clipping
    seed: int = 0  # NAR stage and prefix draws

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise ConfigError(f"finetune: precision must be fp32, fp16 or bf16, got {self.precision!r}")
        if self.accumulate < 1:
            raise ConfigError(f"finetune: accumulate must be >= 1, got {self.accumulate}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"finetune: lr must be a positive number, got {self.lr}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StepResult:
    step: int  # optimizer steps done, this one included
    loss: float  # mean over the micro-batches of (ar + nar) / 2
    ar_loss: float
    nar_loss: float
    nar_stages: tuple[int, ...]
    grad_norm: float  # before clipping; inf/NaN when fp16 overflowed (the step is then skipped)
    skipped: bool
    frames: int


def _make_scaler(device: torch.device, enabled: bool):
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        try:
            return torch.amp.GradScaler(device.type, enabled=enabled)
        except (TypeError, RuntimeError):  # older torch: CUDA-only class
            pass
    return torch.cuda.amp.GradScaler(enabled=enabled and device.type == "cuda")


class Trainer:
    """Owns the optimizer, the grad scaler and the random stream of the NAR draws for one model."""

    def __init__(self, model: Vallex, settings: TrainSettings | None = None):
        self.model = model
        self.settings = settings or TrainSettings()
        self.device = next(model.parameters()).device
        if self.settings.precision == "fp16" and self.device.type == "cpu":
            # float16 autocast on the CPU is slow and partial; mixed precision there means bf16
            raise ConfigError("finetune: precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=self.settings.lr, betas=self.settings.betas,
                                           weight_decay=self.settings.weight_decay)
        self.scaler = _make_scaler(self.device, self.settings.precision == "fp16")
        self.generator = torch.Generator().manual_seed(self.settings.seed)
        self.step_count = 0

    def autocast(self):
        dtype = AUTOCAST_DTYPES.get(self.settings.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def micro_step(self, batch: TrainingBatch, scale: float):
        """Forward + backward of one micro-batch; gradients accumulate in `.grad`."""
        batch = batch.to(self.device)
        draw = draw_nar(batch, self.generator, self.model.config.num_quantizers)
        with self.autocast():
            parts = training_loss(self.model, batch, draw, self.settings.checkpointing)
        self.scaler.scale(parts.total * scale).backward()
        return parts

    def step(self, micro_batches: Sequence[TrainingBatch]) -> StepResult:
        """One optimizer step over `micro_batches` (normally `settings.accumulate` of them)."""
        if not micro_batches:
            raise ValueError("Trainer.step needs at least one micro-batch")
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        scale = 1.0 / len(micro_batches)
        parts = [self.micro_step(batch, scale) for batch in micro_batches]
        self.scaler.unscale_(self.optimizer)
        max_norm = self.settings.clip_grad_norm if self.settings.clip_grad_norm > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        skipped = self.scaler.is_enabled() and self.scaler.get_scale() < scale_before
        self.step_count += 1
        return StepResult(
            step=self.step_count,
            loss=sum(float(p.total.detach()) for p in parts) * scale,
            ar_loss=sum(float(p.ar.detach()) for p in parts) * scale,
            nar_loss=sum(float(p.nar.detach()) for p in parts) * scale,
            nar_stages=tuple(p.draw.stage for p in parts),
            grad_norm=grad_norm,
            skipped=skipped,
            frames=sum(b.frames for b in micro_batches),
        )

    # ---- state for resuming (the model's own weights are saved separately) -----------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "step": self.step_count,
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.settings.as_dict().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.generator.set_state(state["generator"])
        self.step_count = int(state["step"])
        for group in self.optimizer.param_groups:  # this run's settings win over the saved ones
            group["lr"] = self.settings.lr
            group["weight_decay"] = self.settings.weight_decay
            group["betas"] = self.settings.betas
