"""A bounded, content-addressed disk cache that several processes can share, and that heals.

Used for results that depend only on their inputs (RVC prompts, prepared avatars, fine-tuning
codes). Entries are `torch.save`d dicts of tensors, numbers and strings, read back with
`weights_only=True`; writes go to a temporary file that is renamed into place under a file lock, so
a reader never sees half an entry. Past `max_entries`, the least recently used entries are removed.

Every entry carries its own key and a SHA-256 of its content, and a reader states the schema it
expects (`EntrySchema`: fields, tensor dtypes and shapes, finiteness, a final semantic check). An
entry that cannot be read, was written for another key, fails its checksum (bytes changed on disk)
or breaks the schema is a miss: it is removed, one line on stderr says why, and the caller rebuilds it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from iris_pipeline.atomic import atomic_open, remove_stale_temp_files

_SUFFIX = ".pt"
ENTRY_FORMAT = 2  # {"format", "key", "checksum", "payload"}; bump when the envelope changes


def content_hash(*parts: str | bytes | int | float | Path) -> str:
    """SHA-256 over the parts; a `Path` contributes its file's bytes, not its name."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            with open(part, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        elif isinstance(part, bytes):
            digest.update(part)
        else:
            digest.update(repr(part).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def tensor_hash(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    t = tensor.detach().cpu().contiguous()
    header = f"{t.dtype}{tuple(t.shape)}".encode()
    return content_hash(header, t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def payload_checksum(payload: Mapping[str, Any]) -> str:
    """SHA-256 over a payload's fields in name order: tensors by dtype, shape and bytes, the rest by repr."""
    parts: list[str | bytes] = []
    for name in sorted(payload):
        value = payload[name]
        parts += [name, tensor_hash(value) if isinstance(value, torch.Tensor) else repr(value)]
    return content_hash(*parts)


@dataclass(frozen=True)
class TensorSpec:
    """What a cached tensor must look like.

    `shape` items: an int is an exact size, a str names a size that must be the same wherever the
    name appears in the entry (and at least 1), None is any size.
    """

    dtype: torch.dtype
    shape: tuple[int | str | None, ...]
    finite: bool = False  # no NaN / inf (floating tensors)


@dataclass(frozen=True)
class EntrySchema:
    """Fields an entry must hold: tensors by `TensorSpec`, other values by type; then `check(payload)`,
    which returns what is wrong or None."""

    tensors: Mapping[str, TensorSpec] = field(default_factory=dict)
    values: Mapping[str, type | tuple[type, ...]] = field(default_factory=dict)
    check: Callable[[Mapping[str, Any]], str | None] | None = None

    def problem(self, payload: Mapping[str, Any]) -> str | None:
        """What is wrong with `payload`, or None when it matches."""
        sizes: dict[str, int] = {}
        for name, spec in self.tensors.items():
            value = payload.get(name)
            if not isinstance(value, torch.Tensor):
                return f"field {name!r} is not a tensor"
            if value.dtype != spec.dtype:
                return f"field {name!r} is {value.dtype}, expected {spec.dtype}"
            if value.ndim != len(spec.shape):
                return f"field {name!r} has shape {tuple(value.shape)}, expected {len(spec.shape)} dimensions"
            for size, want in zip(value.shape, spec.shape, strict=True):
                if isinstance(want, int) and size != want:
                    return f"field {name!r} has shape {tuple(value.shape)}, expected {spec.shape}"
                if isinstance(want, str):
                    if size < 1:
                        return f"field {name!r} is empty (shape {tuple(value.shape)})"
                    if sizes.setdefault(want, size) != size:
                        return f"field {name!r} has {want} = {size}, other fields {sizes[want]}"
            if spec.finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return f"field {name!r} holds NaN or inf"
        for name, kind in self.values.items():
            if not _is_of(payload.get(name), kind):
                return f"field {name!r} is {type(payload.get(name)).__name__}, expected {_type_names(kind)}"
        return self.check(payload) if self.check is not None else None


def _is_of(value: Any, kind: type | tuple[type, ...]) -> bool:
    """isinstance, except that a bool is not an int (True is no sample rate)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


def _type_names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))


def report_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class DiskCache:
    """`get(key, schema)` / `put(key, value)` on a directory, bounded to `max_entries` files.

    `on_invalid` receives the one line that says an entry was dropped (default: stderr).
    """

    def __init__(self, directory: str | Path, max_entries: int = 64,
                 on_invalid: Callable[[str], None] = report_to_stderr):
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.directory = Path(directory)
        self.max_entries = max_entries
        self.on_invalid = on_invalid
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.directory / ".lock"))
        remove_stale_temp_files(self.directory)  # entries of writers that were killed mid-way

    def _path(self, key: str) -> Path:
        if not key or any(c not in "0123456789abcdefABCDEF-_" for c in key):
            raise ValueError(f"cache key must be a hex digest, got {key!r}")
        return self.directory / f"{key}{_SUFFIX}"

    def get(self, key: str, schema: EntrySchema | None = None) -> dict[str, Any] | None:
        """The stored dict, or None when absent or invalid (an invalid entry is removed and reported)."""
        path = self._path(key)
        with self._lock:
            if not path.exists():
                return None
            payload, problem = self._read(path, key, schema)
            if problem is not None:
                path.unlink(missing_ok=True)
                self.on_invalid(f"warning: cache entry {path}: {problem}; removed, rebuilding it")
                return None
            os.utime(path)  # mark as recently used
        return payload

    @staticmethod
    def _read(path: Path, key: str, schema: EntrySchema | None) -> tuple[dict[str, Any] | None, str | None]:
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure to read is a miss
            return None, f"unreadable ({type(exc).__name__})"
        if not isinstance(entry, dict) or entry.get("format") != ENTRY_FORMAT \
                or not isinstance(entry.get("payload"), dict):
            return None, "not an entry of this cache format"
        if entry.get("key") != key:
            return None, "holds the entry of another key"
        payload = entry["payload"]
        if entry.get("checksum") != payload_checksum(payload):
            return None, "checksum mismatch (its content changed on disk)"
        problem = schema.problem(payload) if schema is not None else None
        return (payload, None) if problem is None else (None, problem)

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        path = self._path(key)
        payload = dict(value)
        entry = {"format": ENTRY_FORMAT, "key": key, "checksum": payload_checksum(payload), "payload": payload}
        with self._lock:
            with atomic_open(path, "wb") as fh:
                torch.save(entry, fh)
            self._evict()

    def __contains__(self, key: str) -> bool:
        return self._path(key).exists()

    def __len__(self) -> int:
        return len(self._entries())

    def _entries(self) -> list[Path]:
        return [p for p in self.directory.glob(f"*{_SUFFIX}") if not p.name.startswith(".")]

    def _evict(self) -> None:
        entries = sorted(self._entries(), key=lambda p: p.stat().st_mtime_ns)
        for old in entries[: max(0, len(entries) - self.max_entries)]:
            old.unlink(missing_ok=True)


def default_cache_dir(kind: str) -> Path:
    """`$IRIS_CACHE_DIR/<kind>` or `~/.cache/iris_pipeline/<kind>`."""
    root = os.environ.get("IRIS_CACHE_DIR") or Path.home() / ".cache" / "iris_pipeline"
    return Path(root) / kind
