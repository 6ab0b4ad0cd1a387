"""Fine-tuned checkpoints: the model in the official VALL-E X layout, the trainer state beside it.

`NAME.pt` is what the official loader (and `iris_pipeline.models.load("vallex", ...)`) reads: a dict
whose `model` entry is the full state dict (374 entries for the full model, no prefix, tied entries
stored once as in the released file), plus `batch_idx_train`, the optimizer-step count (the name
icefall's trainer uses). Like the released `vallex-checkpoint.pt`, it holds no optimizer state.

`NAME.trainer.pt` holds what resuming needs: AdamW and grad-scaler states, the random stream of the
NAR draws, the step count and the settings. Both files are written to a temporary name and renamed,
trainer state first, so a crash never leaves a half-written file under either name; the step count in
both must agree when resuming.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from iris_pipeline.errors import CheckpointError
from iris_pipeline.metrics.records import atomic_open
from iris_pipeline.models.checkpoint import safe_torch_load
from iris_pipeline.models.vallex import WINDOWS_PATH_GLOBAL, extract_state_dict
from iris_pipeline.training.step import Trainer

TRAINER_SUFFIX = ".trainer.pt"


def trainer_state_path(model_path: str | Path) -> Path:
    path = Path(model_path)
    return path.with_name(path.stem + TRAINER_SUFFIX)


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict on the CPU in float32; tensors that share storage still share it."""
    copies: dict[tuple[int, torch.device], torch.Tensor] = {}
    state = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.device)
        if key not in copies:
            value = tensor.detach()
            copies[key] = value.to("cpu", torch.float32 if value.is_floating_point() else value.dtype).clone()
        state[name] = copies[key]
    return state


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def save_checkpoint(path: str | Path, model: torch.nn.Module, trainer: Trainer | None = None) -> Path:
    """Write `path` (official layout) and, with a trainer, its state beside it; returns `path`."""
    path = Path(path)
    step = trainer.step_count if trainer is not None else 0
    if trainer is not None:
        _atomic_save(trainer.state_dict(), trainer_state_path(path))
    _atomic_save({"model": cpu_state_dict(model), "batch_idx_train": step}, path)
    return path


def load_trainer_state(model_path: str | Path, trainer: Trainer) -> None:
    """Restore optimizer, scaler, random stream and step count saved beside `model_path`."""
    model_path = Path(model_path)
    state_path = trainer_state_path(model_path)
    if not state_path.is_file():
        raise CheckpointError(f"finetune: no trainer state {state_path} beside {model_path} (cannot resume)")
    state = safe_torch_load(state_path, "finetune trainer state")
    model_file = safe_torch_load(model_path, "vallex", (WINDOWS_PATH_GLOBAL,))
    extract_state_dict(model_file)  # the same checks as models.load
    saved_step = model_file.get("batch_idx_train") if isinstance(model_file, dict) else None
    if not isinstance(state, dict) or "optimizer" not in state:
        raise CheckpointError(f"finetune: {state_path} is not a trainer state (no 'optimizer' entry)")
    if saved_step != state.get("step"):
        raise CheckpointError(f"finetune: {state_path} is from step {state.get('step')} but {model_path} from "
                              f"step {saved_step}; they do not belong together")
    try:
        trainer.load_state_dict(state)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"finetune: cannot restore {state_path}: {str(exc).splitlines()[0]}") from exc
