"""The shared disk cache: round trip, LRU bound, unreadable entries, writers in several processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import torch

from iris_pipeline.cache import DiskCache, EntrySchema, TensorSpec, content_hash, tensor_hash


def test_round_trip_and_miss(tmp_path: Path):
    cache = DiskCache(tmp_path, max_entries=4)
    key = content_hash("prompt", 1)
    assert cache.get(key) is None
    cache.put(key, {"audio": torch.arange(5.0), "rate": 24000, "name": "x"})
    hit = cache.get(key)
    assert torch.equal(hit["audio"], torch.arange(5.0))
    assert hit["rate"] == 24000
    assert hit["name"] == "x"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_least_recently_used_entries_are_evicted(tmp_path: Path):
    cache = DiskCache(tmp_path, max_entries=2)
    keys = [content_hash(i) for i in range(3)]
    cache.put(keys[0], {"v": 0})
    time.sleep(0.01)
    cache.put(keys[1], {"v": 1})
    time.sleep(0.01)
    assert cache.get(keys[0])["v"] == 0  # touch: keys[1] is now the oldest
    time.sleep(0.01)
    cache.put(keys[2], {"v": 2})
    assert len(cache) == 2
    assert keys[1] not in cache
    assert keys[0] in cache
    assert keys[2] in cache


def test_unreadable_entry_is_a_miss_and_removed(tmp_path: Path):
    cache = DiskCache(tmp_path)
    key = content_hash("broken")
    (tmp_path / f"{key}.pt").write_bytes(b"not a torch file")
    assert cache.get(key) is None
    assert key not in cache


def test_hashes_depend_on_content():
    a, b = torch.zeros(3), torch.zeros(3, dtype=torch.float64)
    assert tensor_hash(a) == tensor_hash(torch.zeros(3))
    assert tensor_hash(a) != tensor_hash(b)
    assert tensor_hash(a) != tensor_hash(torch.zeros(4))
    assert content_hash("a", 1) != content_hash("a", 2)


def _writer(directory: str, worker: int) -> None:
    cache = DiskCache(directory, max_entries=8)
    for i in range(20):
        cache.put(content_hash(worker, i), {"x": torch.full((1000,), float(i)), "worker": worker})


def test_writers_in_several_processes_leave_a_consistent_bounded_cache(tmp_path: Path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    cache = DiskCache(tmp_path, max_entries=8)
    entries = [p for p in tmp_path.iterdir() if p.suffix == ".pt" and not p.name.startswith(".")]
    assert len(entries) <= 8
    for entry in entries:
        value = cache.get(entry.stem)
        assert value is not None
        assert value["x"].shape == (1000,)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


# --- entries that verify what they return ---------------------------------------------------------------

def _lines(cache_dir: Path) -> tuple[DiskCache, list[str]]:
    lines: list[str] = []
    return DiskCache(cache_dir, on_invalid=lines.append), lines


def test_an_entry_swapped_with_another_keys_is_a_miss(tmp_path: Path):
    cache, lines = _lines(tmp_path)
    a, b = content_hash("a"), content_hash("b")
    cache.put(a, {"x": torch.zeros(3)})
    cache.put(b, {"x": torch.ones(3)})
    (tmp_path / f"{b}.pt").write_bytes((tmp_path / f"{a}.pt").read_bytes())
    assert cache.get(b) is None
    assert b not in cache
    assert len(lines) == 1
    assert "another key" in lines[0]
    assert str(tmp_path / f"{b}.pt") in lines[0]
    assert torch.equal(cache.get(a)["x"], torch.zeros(3))
    assert len(lines) == 1


def test_bytes_changed_on_disk_are_caught_by_the_checksum(tmp_path: Path):
    """20 KB of 0xFF written into the middle of a stored tensor: torch still loads the file."""
    cache, lines = _lines(tmp_path)
    key = content_hash("frames")
    frames = torch.arange(200_000, dtype=torch.int32).to(torch.uint8)
    cache.put(key, {"frames": frames})
    path = tmp_path / f"{key}.pt"
    data = bytearray(path.read_bytes())
    start = data.find(bytes(frames[:64].numpy()))
    assert start > 0
    data[start + 50_000:start + 70_000] = b"\xff" * 20_000
    path.write_bytes(bytes(data))
    loaded = torch.load(path, weights_only=True)  # the damage itself goes unnoticed by torch
    assert not torch.equal(loaded["payload"]["frames"], frames)
    assert cache.get(key) is None
    assert key not in cache
    assert len(lines) == 1
    assert "checksum mismatch" in lines[0]


def test_entries_of_the_old_format_are_rebuilt(tmp_path: Path):
    cache, lines = _lines(tmp_path)
    key = content_hash("old")
    torch.save({"x": torch.zeros(2)}, tmp_path / f"{key}.pt")  # a bare dict: no key, no checksum
    assert cache.get(key) is None
    assert len(lines) == 1
    assert "format" in lines[0]


def test_schema_checks_dtype_shape_shared_sizes_and_finiteness(tmp_path: Path):
    schema = EntrySchema(tensors={"a": TensorSpec(torch.float32, ("N", 2), finite=True),
                                  "b": TensorSpec(torch.int64, ("N",))}, values={"rate": int})
    good = {"a": torch.zeros(3, 2), "b": torch.zeros(3, dtype=torch.int64), "rate": 24000}
    assert schema.problem(good) is None
    bad = {
        "dtype": {**good, "b": torch.zeros(3)},
        "rank": {**good, "a": torch.zeros(3)},
        "fixed size": {**good, "a": torch.zeros(3, 4)},
        "shared size": {**good, "b": torch.zeros(4, dtype=torch.int64)},
        "empty": {**good, "a": torch.zeros(0, 2), "b": torch.zeros(0, dtype=torch.int64)},
        "nan": {**good, "a": torch.full((3, 2), float("nan"))},
        "missing": {k: v for k, v in good.items() if k != "b"},
        "value type": {**good, "rate": "24000"},
        "bool is not int": {**good, "rate": True},
    }
    for name, payload in bad.items():
        assert schema.problem(payload) is not None, name
    cache, lines = _lines(tmp_path)
    key = content_hash("nan")
    cache.put(key, bad["nan"])
    assert cache.get(key, schema) is None
    assert "NaN" in lines[0]
    assert key not in cache


def test_temporary_files_of_dead_writers_are_removed(tmp_path: Path):
    import subprocess
    import sys

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    stale = tmp_path / f".{content_hash('x')}.pt.{dead}.abcd.tmp"
    mine = tmp_path / f".{content_hash('y')}.pt.{os.getpid()}.abcd.tmp"
    unrelated = tmp_path / ".notes.tmp"
    for path in (stale, mine, unrelated):
        path.write_bytes(b"partial")
    DiskCache(tmp_path)
    assert not stale.exists()
    assert mine.exists()
    assert unrelated.exists()
