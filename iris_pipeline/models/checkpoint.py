"""Safe, strict checkpoint loading shared by every model.

Official files are read with `torch.load(weights_only=True)`: a pickle that would import or call
anything outside the allow-list is refused with a `CheckpointError`, never executed. A file that
pickles a few bookkeeping objects beside its weights (fairseq's label dictionaries) names those
classes in its spec; each is mapped to an `InertRecord` subclass that only keeps the pickled
attributes as data, so no code of the original class, and none of the file, runs.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from iris_pipeline.errors import CheckpointError

_SHOWN = 5  # how many names of each kind a mismatch error lists


class InertRecord:
    """Stand-in for a class an official checkpoint pickles beside its weights.

    Unpickling creates it without calling any constructor and stores the pickled attributes in
    `__dict__` (torch's weights-only unpickler does exactly that for allowed classes without
    `__setstate__`); it has no behaviour, so what the file holds stays inert data.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Unpickling builds these without calling them; a pickle that calls one is not the official layout.
        raise pickle.UnpicklingError(f"{type(self).__name__} is data only; the file calls it")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(sorted(vars(self)))})"


def safe_torch_load(path: Path | str, model_name: str, safe_globals: Iterable[Any] = ()) -> Any:
    """`torch.load` with `weights_only=True`, on CPU, allowing only `safe_globals` beyond tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{model_name}: checkpoint {path} does not exist or is not a file")
    allowed = list(safe_globals)
    try:
        if allowed:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{model_name}: refused to load {path}: {_why_refused(exc)}") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{model_name}: cannot read checkpoint {path}: {first}") from exc


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _why_refused(exc: pickle.UnpicklingError) -> str:
    """What the weights-only unpickler refused, without torch's advice to turn it off (which would
    run whatever code a malicious file carries)."""
    found = _UNSUPPORTED_GLOBAL.search(str(exc))
    what = f" (it pickles {found.group(1)})" if found else ""
    return f"it is not a plain weights file{what}; it is not loaded, since unpickling it could run code"


def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Remove `prefix` from every key that has it (e.g. DataParallel's `module.`)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def describe_mismatch(
    expected: Mapping[str, torch.Size | tuple[int, ...]],
    found: Mapping[str, torch.Size | tuple[int, ...]],
) -> str | None:
    """A one-line description of how two {name: shape} maps differ, or None when they agree."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [
        f"{k} {tuple(found[k])} != {tuple(expected[k])}"
        for k in expected
        if k in found and tuple(found[k]) != tuple(expected[k])
    ]
    if not (missing or unexpected or wrong):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    if wrong:
        parts.append(f"{len(wrong)} wrong shape ({_names(wrong)})")
    return "; ".join(parts)


def load_state_dict_strict(
    model: torch.nn.Module,
    state: Mapping[str, Any],
    model_name: str,
    path: Path | str | None = None,
) -> None:
    """Copy `state` into `model`, refusing any missing, unexpected or wrong-shape entry."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        where = f" {path}" if path is not None else ""
        raise CheckpointError(f"{model_name}: checkpoint{where} does not hold a state dict of tensors")
    expected = {k: v.shape for k, v in model.state_dict().items()}
    found = {k: v.shape for k, v in state.items()}
    problem = describe_mismatch(expected, found)
    if problem is not None:
        where = f" {path}" if path is not None else ""
        raise CheckpointError(
            f"{model_name}: checkpoint{where} does not match the model "
            f"({len(found)} entries in file, {len(expected)} in model): {problem}"
        )
    model.load_state_dict(dict(state), strict=True)
