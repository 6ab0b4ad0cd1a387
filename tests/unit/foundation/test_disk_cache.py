"""The shared disk cache: round trip, LRU bound, unreadable entries, writers in several processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import torch

from iris_pipeline.cache import DiskCache, content_hash, tensor_hash


def test_round_trip_and_miss(tmp_path: Path):
    cache = DiskCache(tmp_path, max_entries=4)
    key = content_hash("prompt", 1)
    assert cache.get(key) is None
    cache.put(key, {"audio": torch.arange(5.0), "rate": 24000, "name": "x"})
    hit = cache.get(key)
    assert torch.equal(hit["audio"], torch.arange(5.0)) and hit["rate"] == 24000 and hit["name"] == "x"
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
    assert keys[1] not in cache and keys[0] in cache and keys[2] in cache


def test_unreadable_entry_is_a_miss_and_removed(tmp_path: Path):
    cache = DiskCache(tmp_path)
    key = content_hash("broken")
    (tmp_path / f"{key}.pt").write_bytes(b"not a torch file")
    assert cache.get(key) is None
    assert key not in cache


def test_hashes_depend_on_content():
    a, b = torch.zeros(3), torch.zeros(3, dtype=torch.float64)
    assert tensor_hash(a) == tensor_hash(torch.zeros(3))
    assert tensor_hash(a) != tensor_hash(b) and tensor_hash(a) != tensor_hash(torch.zeros(4))
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
        assert value is not None and value["x"].shape == (1000,)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
