"""AOTInductor: compile a graph ahead of time into a package the engine cache stores.

torch >= 2.6 has `torch._inductor.aoti_compile_and_package` (a `.pt2` package loaded with
`aoti_load_package`); torch 2.2-2.5 had `torch._export.aot_compile` (a shared library loaded with
`torch._export.aot_load`). Both need a C++ compiler. Dynamic dimensions follow the graph's profile.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from iris_pipeline.backends.cache import BuildResult, CorruptEntryError
from iris_pipeline.backends.graph import GraphSpec, cast_inputs

PACKAGE_NAME = "model.pt2"
LIBRARY_NAME = "model.so"


def _package_api() -> bool:
    import torch._inductor

    return hasattr(torch._inductor, "aoti_compile_and_package") and hasattr(
        torch._inductor, "aoti_load_package"
    )


def _library_api() -> bool:
    import torch._export

    return hasattr(torch._export, "aot_compile") and hasattr(torch._export, "aot_load")


def cxx_compiler() -> str | None:
    for candidate in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def aoti_unavailable_reason(device: str | torch.device = "cpu") -> str | None:
    """Why AOTInductor cannot build here, or None when it can."""
    if not (_package_api() or _library_api()):
        return (
            f"torch {torch.__version__} has neither torch._inductor.aoti_compile_and_package nor "
            "torch._export.aot_compile"
        )
    if cxx_compiler() is None:
        return "AOTInductor needs a C++ compiler and none of $CXX, g++, c++, clang++ is on PATH"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        return "AOTInductor for CUDA needs a CUDA device"
    return None


def _dynamic_shapes(spec: GraphSpec) -> tuple[dict[int, Any] | None, ...]:
    dims = {name: torch.export.Dim(name, min=lo, max=hi) for name, (lo, _, hi) in spec.profile.ranges.items()}
    return tuple(
        {i: dims[d] for i, d in enumerate(t.dims) if isinstance(d, str)} or None for t in spec.inputs
    )


def build_aoti(
    spec: GraphSpec,
    workdir: Path,
    log: Callable[[str], None],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> BuildResult:
    """Export `spec.module` with its dynamic dims and compile it into `workdir`."""
    device = torch.device(device)
    module = copy.deepcopy(spec.module).to(device=device, dtype=dtype).eval()
    example = cast_inputs(spec.example_inputs("opt"), dtype, device)
    start = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pytree deprecations inside torch.export
        if _package_api():
            program = torch.export.export(module, example, dynamic_shapes=_dynamic_shapes(spec))
            log(f"exported {spec.name} with torch.export in {time.perf_counter() - start:.2f} s")
            torch._inductor.aoti_compile_and_package(program, package_path=str(workdir / PACKAGE_NAME))
            artifact = PACKAGE_NAME
        else:
            library = torch._export.aot_compile(
                module,
                example,
                dynamic_shapes=_dynamic_shapes(spec),
                options={"aot_inductor.output_path": str(workdir / LIBRARY_NAME)},
            )
            if Path(library) != workdir / LIBRARY_NAME:
                shutil.move(library, workdir / LIBRARY_NAME)
            artifact = LIBRARY_NAME
    seconds = time.perf_counter() - start
    log(f"AOTInductor compiled {spec.name} for {device} in {seconds:.2f} s")
    return BuildResult(
        artifact,
        {
            "compile_seconds": round(seconds, 3),
            "device": str(device),
            "dtype": str(dtype).replace("torch.", ""),
        },
    )


def load_aoti(path: Path, device: str | torch.device = "cpu") -> Callable[..., Any]:
    """The compiled callable; an unloadable file raises `CorruptEntryError` so the cache rebuilds it."""
    try:
        if path.suffix == ".pt2":
            return torch._inductor.aoti_load_package(str(path))
        return torch._export.aot_load(str(path), str(torch.device(device)))
    except Exception as exc:  # the loaders raise RuntimeError, zipfile errors, OSError, ...
        raise CorruptEntryError(
            f"AOTInductor could not load {path.name}: {type(exc).__name__}: {exc}"
        ) from exc
