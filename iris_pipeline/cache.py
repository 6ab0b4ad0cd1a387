"""A bounded, content-addressed disk cache that several processes can share.

Used for results that depend only on their inputs (RVC prompts, prepared avatars). Entries are
`torch.save`d dicts of tensors, numbers and strings, read back with `weights_only=True`; writes go
to a temporary file that is renamed into place under a file lock, so a reader never sees half an
entry. Past `max_entries`, the least recently used entries are removed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from iris_pipeline.atomic import atomic_open

_SUFFIX = ".pt"


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


class DiskCache:
    """`get(key)` / `put(key, value)` on a directory, bounded to `max_entries` files."""

    def __init__(self, directory: str | Path, max_entries: int = 64):
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.directory = Path(directory)
        self.max_entries = max_entries
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.directory / ".lock"))

    def _path(self, key: str) -> Path:
        if not key or any(c not in "0123456789abcdefABCDEF-_" for c in key):
            raise ValueError(f"cache key must be a hex digest, got {key!r}")
        return self.directory / f"{key}{_SUFFIX}"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored dict, or None when absent or unreadable (an unreadable entry is removed)."""
        path = self._path(key)
        with self._lock:
            if not path.exists():
                return None
            try:
                value = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:
                path.unlink(missing_ok=True)
                return None
            os.utime(path)  # mark as recently used
        return value

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        path = self._path(key)
        with self._lock:
            with atomic_open(path, "wb") as fh:
                torch.save(dict(value), fh)
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
