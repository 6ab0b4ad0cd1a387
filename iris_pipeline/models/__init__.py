"""Model registry: `get(name, checkpoint, size, seed)` (load or build), `build` and `load`.

Each architecture lives in its own subpackage and exposes a module-level `SPEC` (a `ModelSpec`).
Subpackages are imported lazily so that using one model never imports the others.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from iris_pipeline.models.spec import ModelSpec

# registry name -> module that defines `SPEC`
_SPEC_MODULES: dict[str, str] = {
    "wav2lip": "iris_pipeline.models.wav2lip",
    "s3fd": "iris_pipeline.models.s3fd",
    "fastpitch": "iris_pipeline.models.fastpitch",
    "vallex": "iris_pipeline.models.vallex",
    "encodec_24khz": "iris_pipeline.models.encodec",
    "vocos_encodec_24khz": "iris_pipeline.models.vocos",
    "hubert_base": "iris_pipeline.models.hubert",
    "rmvpe": "iris_pipeline.models.rmvpe",
    "rvc_v2_40k": "iris_pipeline.models.rvc",
    "rvc_v2_48k": "iris_pipeline.models.rvc",
}

SIZES = ("full", "tiny")


def names() -> list[str]:
    """Every registry name, in a stable order."""
    return list(_SPEC_MODULES)


def spec(name: str) -> ModelSpec:
    """The `ModelSpec` registered under `name`."""
    if name not in _SPEC_MODULES:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(_SPEC_MODULES)}")
    module = importlib.import_module(_SPEC_MODULES[name])
    specs = module.SPECS if hasattr(module, "SPECS") else {module.SPEC.name: module.SPEC}
    return specs[name]


def build(name: str, size: str = "full", seed: int = 0) -> torch.nn.Module:
    """A randomly initialised (seeded) model of the official architecture, in eval mode."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return spec(name).build(size=size, seed=seed)


def load(name: str, checkpoint_path: str | Path, size: str = "full") -> torch.nn.Module:
    """A model with the weights of an official checkpoint file, loaded strictly."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return spec(name).load(Path(checkpoint_path), size=size)


def get(name: str, checkpoint: str | Path | None = None, size: str = "full", seed: int = 0) -> torch.nn.Module:
    """The model with an official checkpoint's weights when `checkpoint` is given, else randomly
    initialised with `seed` (benchmarks and tests need no weights); in eval mode, on the CPU."""
    if checkpoint is not None:
        return load(name, checkpoint, size=size)
    return build(name, size=size, seed=seed)


__all__ = ["ModelSpec", "SIZES", "build", "get", "load", "names", "spec"]
