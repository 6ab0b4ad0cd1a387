"""Manifests of the official state dicts, and synthetic checkpoints written from them.

No official weights can be downloaded here, so model tests write a file in the official layout
with random tensors of the manifest's names and shapes, load it through the registry, and compare.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

MANIFEST_DIR = Path(__file__).resolve().parents[1] / "data" / "manifests"


def load_manifest(name: str) -> dict:
    return json.loads((MANIFEST_DIR / f"{name}.json").read_text())


def manifest_shapes(manifest: dict) -> dict[str, tuple[int, ...]]:
    """{name: shape} of every state-dict entry (params, then buffers) the manifest lists."""
    shapes = {k: tuple(v) for k, v in manifest["params"].items()}
    shapes.update({k: tuple(v) for k, v in (manifest.get("buffers") or {}).items()})
    return shapes


def model_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def random_state_dict(model: torch.nn.Module, seed: int = 1234,
                      dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """A state dict with the model's names, shapes and dtypes, filled with seeded random values.

    Integer entries (e.g. BatchNorm's num_batches_tracked) get small random integers.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, ref in model.state_dict().items():
        if ref.dtype.is_floating_point:
            t = torch.randn(ref.shape, generator=gen, dtype=torch.float32)
            out[name] = t.to(dtype or ref.dtype)
        else:
            out[name] = torch.randint(0, 100, ref.shape, generator=gen).to(ref.dtype)
    return out


def assert_state_dicts_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b) or set(a) == set(b), "different names"
    for name in a:
        assert a[name].shape == b[name].shape, name
        assert torch.equal(a[name].to(b[name].dtype), b[name]), f"{name} differs"
