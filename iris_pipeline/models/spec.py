"""`ModelSpec`: how one registry entry builds a model and reads its official checkpoint file."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from iris_pipeline.models.checkpoint import load_state_dict_strict, safe_torch_load


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    `factory(size)` returns an un-initialised-by-seed model; `build` seeds torch around it so the
    random weights are reproducible. `extract_state_dict(obj)` turns what `torch.load` returned
    (the official file layout) into a plain state dict with the model's own names.
    """

    name: str
    factory: Callable[[str], torch.nn.Module]
    extract_state_dict: Callable[[Any], Mapping[str, torch.Tensor]] = lambda obj: obj
    # Extra classes an official file pickles and that are safe to allow (e.g. pathlib paths).
    safe_globals: tuple[Any, ...] = field(default_factory=tuple)
    # Called after a strict load, e.g. to re-apply weight norm or to read a config stored in the file.
    after_load: Callable[[torch.nn.Module, Any], torch.nn.Module] | None = None

    def build(self, size: str = "full", seed: int = 0) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.factory(size)
        return model.eval()

    def load(self, path: Path, size: str = "full") -> torch.nn.Module:
        obj = safe_torch_load(path, model_name=self.name, safe_globals=self.safe_globals)
        model = self.factory(size)
        state = self.extract_state_dict(obj)
        load_state_dict_strict(model, state, model_name=self.name, path=path)
        if self.after_load is not None:
            model = self.after_load(model, obj)
        return model.eval()
