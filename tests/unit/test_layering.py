"""The package's layers: no module of iris_pipeline imports from a layer above its own.

The import graph is read with `ast` from every module, imports inside functions and under
`TYPE_CHECKING` included (a lazy import is still a dependency). Each module's layer is that of the
longest entry of `LAYERS` its dotted name starts with; a module no entry covers fails the test, so a
new top-level module has to be placed here deliberately. Imports within one layer are allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import iris_pipeline

PACKAGE = "iris_pipeline"
PACKAGE_DIR = Path(iris_pipeline.__file__).resolve().parent

# Lowest first. The foundation holds what the models themselves are written on (errors, atomic
# files, signal primitives such as the mel filterbank, the symbol sets); it imports nothing above
# itself. `timebase` reads the models' rates, so it sits above them.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("iris_pipeline", "errors", "atomic", "dsp", "text")),
    ("models", ("models",)),
    ("runtime", ("timebase", "audio", "config", "stage_options", "serve.config", "backends", "cache", "avatar",
                 "face_detectors",
                 "alignment", "melbridge", "subtitles", "video", "metrics", "placement", "checkpoints",
                 "profiles")),
    ("stages", ("stages",)),
    ("streaming", ("chunking", "lipsync", "scheduling")),
    ("pipeline", ("pipeline",)),
    ("applications", ("benchmark", "benchmark_runner", "commands", "serve", "report", "training", "cli",
                      "__main__")),
)


def _qualified(entry: str) -> str:
    return PACKAGE if entry == PACKAGE else f"{PACKAGE}.{entry}"


LAYER_OF_PREFIX: dict[str, int] = {_qualified(e): rank for rank, (_, entries) in enumerate(LAYERS) for e in entries}


def layer_of(module: str) -> int | None:
    """The rank of `module`'s layer: its longest prefix in the map (None when no entry covers it)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        rank = LAYER_OF_PREFIX.get(".".join(parts[:end]))
        if rank is not None:
            return rank
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    base = PACKAGE_DIR.parent.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(path: Path) -> set[str]:
    """The iris_pipeline modules `path` imports anywhere in its body (`from p import m` names m when
    m is a module, else p)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                found.add(f"{source}.{alias.name}" if _is_module(f"{source}.{alias.name}") else source)
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) for path in sorted(PACKAGE_DIR.rglob("*.py"))}


GRAPH = import_graph()


def test_the_graph_covers_the_whole_package():
    assert len(GRAPH) > 100, f"only {len(GRAPH)} modules found under {PACKAGE_DIR}"
    assert "iris_pipeline.stages.vallex" in GRAPH
    assert "iris_pipeline.models" in GRAPH["iris_pipeline.stages.vallex"], "imports not read"


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in GRAPH if layer_of(m) is None)
    assert not unplaced, f"modules with no layer (add them to LAYERS): {unplaced}"


# Known violations, each to be fixed by moving code (strict xfail: the test fails once it is fixed,
# so the entry has to go then).
KNOWN_VIOLATIONS: dict[str, str] = {}  # module -> why it may not yet keep the rule (none today)


@pytest.mark.parametrize("module", [
    pytest.param(m, marks=pytest.mark.xfail(reason=KNOWN_VIOLATIONS[m], strict=True)) if m in KNOWN_VIOLATIONS else m
    for m in sorted(GRAPH)
])
def test_no_import_from_a_layer_above(module):
    own = layer_of(module)
    above = sorted(f"{target} ({LAYERS[layer_of(target)][0]})" for target in GRAPH[module]
                   if layer_of(target) is not None and own is not None and layer_of(target) > own)
    assert not above, f"{module} ({LAYERS[own][0]}) imports from a layer above its own: {above}"


@pytest.mark.parametrize("module, target, allowed", [
    ("iris_pipeline.stages.rvc", "iris_pipeline.pipeline", False),
    ("iris_pipeline.models.vallex.decode", "iris_pipeline.stages", False),
    ("iris_pipeline.pipeline", "iris_pipeline.stages.rvc", True),
    ("iris_pipeline.config", "iris_pipeline.serve.config", True),  # settings only, no Ray
    ("iris_pipeline.config", "iris_pipeline.serve.app", False),
])
def test_the_layer_map_orders_known_pairs(module, target, allowed):
    assert (layer_of(target) <= layer_of(module)) is allowed
