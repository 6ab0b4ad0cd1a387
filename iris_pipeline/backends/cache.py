"""The engine cache: built artifacts (TensorRT engines, ONNX graphs, AOTInductor packages) on disk.

Each entry is a directory `<root>/<graph>/<digest>/` holding the artifact files and `manifest.json`
(key fields, per-file SHA-256 and size, build time, the build log's tail, outcome). The digest hashes
every input that makes an artifact invalid (`EngineKey`). A per-key file lock serialises building and
loading, so two processes never build the same entry twice and never read half of one: a build goes
to a temporary directory renamed into place when complete. An entry whose manifest does not match
its key or its files (stale, foreign, truncated), or whose manifest is not a manifest at all (any
JSON of the wrong shape), is removed and rebuilt, never loaded; listing and pruning treat such an
entry as unreadable and never fail on it. A build that fails for any reason other than bad input
is reported as one `EngineBuildError` line (the full error and the log's tail stay in the
manifest). Build attempts, successes, cache hits and seconds are counted in `<root>/stats.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generic, TypeVar

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from iris_pipeline.atomic import atomic_open
from iris_pipeline.backends.fingerprint import DeviceFingerprint, canonical_json
from iris_pipeline.cache import report_to_stderr
from iris_pipeline.errors import IrisError

MANIFEST_NAME = "manifest.json"
STATS_NAME = "stats.json"
MANIFEST_VERSION = 1
LOG_TAIL_LINES = 40

T = TypeVar("T")


class EngineBuildError(IrisError):
    """Building an engine failed; the manifest of the attempt keeps the log's tail."""


class EngineRefusedError(IrisError):
    """An engine was built but refused (e.g. INT8 outputs too far from fp32)."""


class CorruptEntryError(Exception):
    """A loader found an artifact unusable (raised by loaders; the cache then rebuilds)."""


@dataclass(frozen=True)
class EngineKey:
    """Everything that makes a built artifact invalid, and nothing else.

    `options` holds backend settings that change the artifact (export opset, quantisation method,
    calibration size and seed, workspace, ...). Build time, cache location and the like are not part
    of the key.
    """

    graph: str
    model_hash: str
    profile: Any
    precision: str
    backend: str
    backend_version: str
    device: DeviceFingerprint
    options: Any = None

    def fields(self) -> dict[str, Any]:
        return json.loads(canonical_json(asdict(self)))

    @property
    def digest(self) -> str:
        return hashlib.sha256(canonical_json(self.fields()).encode()).hexdigest()

    @property
    def short(self) -> str:
        return self.digest[:24]


class BuildLog:
    """Lines a build reports (tool logger output, timings); the manifest keeps the tail."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.extend(str(line).splitlines() or [""])

    def tail(self, n: int = LOG_TAIL_LINES) -> list[str]:
        return self.lines[-n:]


@dataclass
class BuildResult:
    """What a build function returns: the main artifact's file name and extra facts for the manifest."""

    artifact: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class CacheEntry:
    """A complete, verified entry on disk."""

    directory: Path
    manifest: dict[str, Any]

    @property
    def artifact(self) -> Path:
        return self.directory / self.manifest["artifact"]

    def file(self, name: str) -> Path:
        return self.directory / name

    @property
    def info(self) -> dict[str, Any]:
        return self.manifest.get("info", {})


@dataclass
class Cached(Generic[T]):
    """The loaded artifact plus how it was obtained."""

    value: T
    entry: CacheEntry
    hit: bool
    build_seconds: float
    load_seconds: float


@dataclass
class GraphCounters:
    attempts: int = 0
    successes: int = 0
    failures: int = 0
    refused: int = 0
    hits: int = 0
    rebuilt_invalid: int = 0
    build_seconds: float = 0.0
    load_seconds: float = 0.0


@dataclass
class CacheStats:
    """Counters persisted in `stats.json`, per graph and in total."""

    graphs: dict[str, GraphCounters] = field(default_factory=dict)

    @property
    def total(self) -> GraphCounters:
        total = GraphCounters()
        for counters in self.graphs.values():
            for name in asdict(total):
                setattr(total, name, getattr(total, name) + getattr(counters, name))
        return total

    def since(self, earlier: CacheStats) -> CacheStats:
        """The counts added after `earlier` (a snapshot taken before a run)."""
        out = {}
        for name, counters in self.graphs.items():
            before = earlier.graphs.get(name, GraphCounters())
            out[name] = GraphCounters(
                **{k: getattr(counters, k) - getattr(before, k) for k in asdict(counters)}
            )
        return CacheStats(out)

    def summary(self) -> str:
        t = self.total
        return (
            f"{t.successes} of {t.attempts} builds succeeded ({t.refused} refused, {t.failures} failed), "
            f"{t.hits} cache hits, {t.build_seconds:.1f} s building"
        )

    def as_dict(self) -> dict[str, Any]:
        return {"graphs": {k: asdict(v) for k, v in self.graphs.items()}, "total": asdict(self.total)}


class _FileFacts(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    size: int = Field(ge=0)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")


class _ManifestSchema(BaseModel):
    """The shape every manifest must have (`_build` writes it); any other JSON is unreadable."""

    model_config = ConfigDict(extra="allow", strict=True)

    outcome: str
    key: str | None = None
    key_fields: dict[str, Any] | None = None
    graph: str | None = None
    backend: str | None = None
    precision: str | None = None
    artifact: str | None = None
    files: dict[str, _FileFacts] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)
    size_bytes: int = Field(default=0, ge=0)
    build_seconds: float | int | None = None
    finished_at: str | None = None


def read_manifest(path: Path) -> tuple[dict[str, Any] | None, str]:
    """A manifest file's content when it is a manifest of the right shape, else None and why not."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None, "unreadable manifest"
    try:
        _ManifestSchema.model_validate(data)
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        if not loc:
            return None, f"malformed manifest (a JSON {type(data).__name__}, not an object)"
        return None, f"malformed manifest ({'.'.join(str(part) for part in loc)}: {exc.errors()[0]['msg']})"
    return data, "ok"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json_atomic(path: Path, data: Any) -> None:
    with atomic_open(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "graph"


class EngineCache:
    """`get_or_build(key, build, load)` over a directory shared by processes."""

    def __init__(self, root: str | Path, lock_timeout_s: float = 3600.0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".locks").mkdir(exist_ok=True)
        self.lock_timeout_s = lock_timeout_s
        self._stats_lock = FileLock(str(self.root / ".locks" / "stats.lock"))

    # -- layout -----------------------------------------------------------------------------------
    def entry_dir(self, key: EngineKey) -> Path:
        return self.root / _safe_name(key.graph) / key.short

    def _lock(self, key: EngineKey) -> FileLock:
        return FileLock(str(self.root / ".locks" / f"{key.short}.lock"), timeout=self.lock_timeout_s)

    # -- lookup -----------------------------------------------------------------------------------
    def verify(self, key: EngineKey, directory: Path | None = None) -> tuple[CacheEntry | None, str]:
        """The entry if complete and matching `key`, else None and why not."""
        directory = directory or self.entry_dir(key)
        manifest_path = directory / MANIFEST_NAME
        if not manifest_path.exists():
            return None, "absent" if not directory.exists() else "no manifest"
        manifest, problem = read_manifest(manifest_path)
        if manifest is None:
            return None, problem
        if manifest.get("outcome") != "success":
            return None, f"last build {manifest.get('outcome', 'unknown')}"
        if manifest.get("key") != key.digest or manifest.get("key_fields") != key.fields():
            return None, "foreign (manifest key differs)"
        for name, facts in manifest.get("files", {}).items():
            path = directory / name
            if not path.is_file():
                return None, f"missing file {name}"
            if path.stat().st_size != facts["size"]:
                return None, f"truncated or altered file {name}"
            if _sha256_file(path) != facts["sha256"]:
                return None, f"checksum mismatch in {name}"
        if manifest.get("artifact") not in manifest.get("files", {}):
            return None, "artifact not listed"
        return CacheEntry(directory, manifest), "ok"

    def lookup(self, key: EngineKey) -> CacheEntry | None:
        with self._lock(key):
            entry, _ = self.verify(key)
        return entry

    # -- the main operation -----------------------------------------------------------------------
    def get_or_build(
        self,
        key: EngineKey,
        build: Callable[[Path, BuildLog], BuildResult],
        load: Callable[[CacheEntry], T],
    ) -> Cached[T]:
        """Load the entry for `key`, building it first when absent or invalid.

        `build(workdir, log)` writes the artifact files into `workdir` and returns a `BuildResult`.
        It may raise `EngineRefusedError` (counted as refused) or anything else (counted as failed);
        either way a manifest with the log's tail records the attempt and the error propagates.
        `load(entry)` may raise `CorruptEntryError` to have the entry rebuilt once.
        """
        with self._lock(key):
            entry, reason = self.verify(key)
            if entry is not None:
                start = time.perf_counter()
                try:
                    value = load(entry)
                except CorruptEntryError:
                    entry, reason = None, "loader rejected the artifact"
                else:
                    load_s = time.perf_counter() - start
                    os.utime(entry.directory / MANIFEST_NAME)  # last used
                    self._count(key.graph, hits=1, load_seconds=load_s)
                    return Cached(value, entry, True, 0.0, load_s)
            invalid = reason not in ("absent",)
            if invalid:
                report_to_stderr(f"warning: engine cache entry {self.entry_dir(key)}: {reason}; rebuilding it")
            entry, build_s = self._build(key, build, reason if invalid else None)
            start = time.perf_counter()
            value = load(entry)
            load_s = time.perf_counter() - start
            self._count(key.graph, load_seconds=load_s)
            return Cached(value, entry, False, build_s, load_s)

    def _build(
        self, key: EngineKey, build: Callable[[Path, BuildLog], BuildResult], invalid_reason: str | None
    ) -> tuple[CacheEntry, float]:
        final = self.entry_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        log = BuildLog()
        if invalid_reason is not None:
            log(f"rebuilding: previous entry {invalid_reason}")
            self._count(key.graph, rebuilt_invalid=1 if final.exists() else 0)
        workdir = Path(tempfile.mkdtemp(dir=final.parent, prefix=".build-"))
        manifest: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "key": key.digest,
            "key_fields": key.fields(),
            "graph": key.graph,
            "backend": key.backend,
            "precision": key.precision,
            "started_at": _now(),
        }
        start = time.perf_counter()
        try:
            result = build(workdir, log)
        except BaseException as exc:
            build_s = time.perf_counter() - start
            outcome = "refused" if isinstance(exc, EngineRefusedError) else "failed"
            stopped = not isinstance(exc, Exception)  # Ctrl-C and the like: record, then let it through
            log(f"{outcome}: {type(exc).__name__}: {exc}")
            manifest.update(
                outcome=outcome,
                error=f"{type(exc).__name__}: {exc}",
                build_seconds=round(build_s, 3),
                log_tail=log.tail(),
                info=getattr(exc, "info", {}),
            )
            self._publish(workdir, final, manifest, files={})
            self._count(
                key.graph,
                attempts=1,
                build_seconds=build_s,
                **({"refused": 1} if outcome == "refused" else {"failures": 1}),
            )
            if stopped or isinstance(exc, IrisError):
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise EngineBuildError(
                f"{key.graph}: the {key.backend} build failed ({type(exc).__name__}: {first}); "
                f"details in {final / MANIFEST_NAME}"
            ) from exc
        build_s = time.perf_counter() - start
        files = {}
        for path in sorted(workdir.iterdir()):
            if path.is_file() and path.name != MANIFEST_NAME:
                files[path.name] = {"size": path.stat().st_size, "sha256": _sha256_file(path)}
        manifest.update(
            outcome="success",
            artifact=result.artifact,
            files=files,
            info=result.info,
            build_seconds=round(build_s, 3),
            finished_at=_now(),
            size_bytes=sum(f["size"] for f in files.values()),
            log_tail=log.tail(),
        )
        if result.artifact not in files:
            raise EngineBuildError(f"{key.graph}: build did not write its artifact {result.artifact!r}")
        self._publish(workdir, final, manifest, files)
        self._count(key.graph, attempts=1, successes=1, build_seconds=build_s)
        entry, reason = self.verify(key)
        if entry is None:  # pragma: no cover - only if the disk changes under the lock
            raise EngineBuildError(f"{key.graph}: freshly built entry failed verification ({reason})")
        return entry, build_s

    @staticmethod
    def _publish(workdir: Path, final: Path, manifest: dict[str, Any], files: dict[str, Any]) -> None:
        """Write the manifest last, then swap the directory into place (the old one is removed)."""
        if not files:  # a failed attempt keeps only its manifest
            for path in workdir.iterdir():
                if path.is_file():
                    path.unlink()
                else:
                    shutil.rmtree(path, ignore_errors=True)
        _write_json_atomic(workdir / MANIFEST_NAME, manifest)
        if final.exists():
            trash = final.parent / f".trash-{final.name}-{os.getpid()}-{time.monotonic_ns()}"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(workdir, final)

    # -- counters ---------------------------------------------------------------------------------
    def _count(self, graph: str, **increments: float) -> None:
        path = self.root / STATS_NAME
        with self._stats_lock:
            stats = self._read_stats_unlocked()
            counters = stats.graphs.setdefault(graph, GraphCounters())
            for name, value in increments.items():
                setattr(counters, name, getattr(counters, name) + value)
            _write_json_atomic(
                path, {"graphs": {k: asdict(v) for k, v in stats.graphs.items()}, "updated_at": _now()}
            )

    def _read_stats_unlocked(self) -> CacheStats:
        path = self.root / STATS_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return CacheStats()
        known = set(GraphCounters.__dataclass_fields__)
        graphs = data.get("graphs") if isinstance(data, dict) else None
        if not isinstance(graphs, dict):
            return CacheStats()  # counters of the wrong shape restart from zero
        return CacheStats(
            {
                name: GraphCounters(
                    **{k: v for k, v in counters.items() if k in known and isinstance(v, (int, float))}
                )
                for name, counters in graphs.items()
                if isinstance(counters, dict)
            }
        )

    def stats(self) -> CacheStats:
        with self._stats_lock:
            return self._read_stats_unlocked()

    def reset_stats(self) -> None:
        with self._stats_lock:
            (self.root / STATS_NAME).unlink(missing_ok=True)

    # -- management -------------------------------------------------------------------------------
    def entries(self) -> Iterator[tuple[Path, dict[str, Any] | None]]:
        """Every entry directory with its manifest (None where unreadable), newest first."""
        found = []
        for graph_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for directory in graph_dir.iterdir():
                if not directory.is_dir() or directory.name.startswith("."):
                    continue
                found.append((directory, read_manifest(directory / MANIFEST_NAME)[0]))
        found.sort(key=lambda item: _mtime(item[0] / MANIFEST_NAME), reverse=True)
        yield from found

    def prune(
        self,
        *,
        older_than_s: float | None = None,
        failed: bool = False,
        everything: bool = False,
        keep_stats: bool = True,
    ) -> list[Path]:
        """Remove entries: all, those unused for `older_than_s`, failed/refused/unreadable ones."""
        removed = []
        now = time.time()
        for directory, manifest in list(self.entries()):
            broken = manifest is None or manifest.get("outcome") != "success"
            old = older_than_s is not None and now - _mtime(directory / MANIFEST_NAME) > older_than_s
            if everything or (failed and broken) or old:
                key_short = directory.name
                with FileLock(str(self.root / ".locks" / f"{key_short}.lock"), timeout=self.lock_timeout_s):
                    shutil.rmtree(directory, ignore_errors=True)
                removed.append(directory)
        for leftover in self.root.glob("*/.build-*"):  # builds killed mid-way
            if now - _mtime(leftover) > 3600 or everything:
                shutil.rmtree(leftover, ignore_errors=True)
        if everything and not keep_stats:
            self.reset_stats()
        return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
