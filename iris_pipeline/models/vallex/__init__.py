"""VALL-E X (Plachtaa/VALL-E-X), registry name `vallex`.

The released `vallex-checkpoint.pt` is a dict whose `model` entry holds the state dict (no prefix,
374 entries) next to trainer metadata, one value of which is a `pathlib.WindowsPath`. That one
global is allowed by mapping it onto `pathlib.PureWindowsPath` (buildable on every OS); everything
else still goes through `weights_only=True`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import torch

from iris_pipeline.errors import CheckpointError
from iris_pipeline.models.spec import ModelSpec
from iris_pipeline.models.vallex.config import CONFIGS, FULL, TINY, VallexConfig
from iris_pipeline.models.vallex.model import Vallex

# Exactly the extra global the official file pickles, mapped to a class that can be built anywhere.
WINDOWS_PATH_GLOBAL = (pathlib.PureWindowsPath, "pathlib.WindowsPath")


def build_vallex(size: str) -> Vallex:
    return Vallex(CONFIGS[size])


def tied_names(num_quantizers: int = 8) -> list[tuple[str, str]]:
    return [(f"nar_predict_layers.{j}.weight", f"nar_audio_embeddings.{j + 2}.word_embeddings.weight")
            for j in range(num_quantizers - 2)]


def extract_state_dict(obj: Any) -> Mapping[str, torch.Tensor]:
    """`checkpoint["model"]`; the tied entries must hold the same values (the official file stores them once)."""
    if not isinstance(obj, Mapping) or "model" not in obj:
        keys = ", ".join(map(str, list(obj)[:5])) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"vallex: checkpoint has no 'model' entry (found: {keys})")
    state = obj["model"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"vallex: checkpoint['model'] is a {type(state).__name__}, not a state dict")
    for output_name, embedding_name in tied_names():
        a, b = state.get(output_name), state.get(embedding_name)
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape \
                and not torch.equal(a, b):
            raise CheckpointError(
                f"vallex: checkpoint entries {output_name} and {embedding_name} differ, "
                "but the model ties them (share_embedding=True)"
            )
    return state


SPEC = ModelSpec(
    name="vallex",
    factory=build_vallex,
    extract_state_dict=extract_state_dict,
    safe_globals=(WINDOWS_PATH_GLOBAL,),
)

__all__ = ["CONFIGS", "FULL", "SPEC", "TINY", "Vallex", "VallexConfig", "WINDOWS_PATH_GLOBAL",
           "build_vallex", "extract_state_dict"]
