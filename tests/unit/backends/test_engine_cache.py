"""The engine cache: one build per key, verified loads, rebuilds of stale/foreign/corrupt entries,
failure records, counters, pruning, and two processes racing for the same engine."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
from pathlib import Path

import pytest

from iris_pipeline.backends import BuildResult, CorruptEntryError, EngineCache, EngineKey, EngineRefusedError
from iris_pipeline.backends.cache import MANIFEST_NAME, EngineBuildError
from iris_pipeline.backends.fingerprint import DeviceFingerprint

KEY = EngineKey(
    graph="toy",
    model_hash="0" * 64,
    profile={"batch": [1, 2, 4]},
    precision="fp32",
    backend="test",
    backend_version="test 1",
    device=DeviceFingerprint("cpu", "x86_64", "none", "none"),
)
PAYLOAD = b"engine-bytes-" * 1000


def _build(workdir: Path, log) -> BuildResult:
    log("writing the engine")
    (workdir / "engine.bin").write_bytes(PAYLOAD)
    (workdir / "calibration.pt").write_bytes(b"calib")
    return BuildResult("engine.bin", {"note": "toy"})


def _load(entry) -> bytes:
    data = entry.artifact.read_bytes()
    if data != PAYLOAD:
        raise AssertionError("loaded a wrong artifact")
    return data


def test_build_once_then_hit(tmp_path):
    cache = EngineCache(tmp_path)
    first = cache.get_or_build(KEY, _build, _load)
    second = cache.get_or_build(KEY, _build, _load)
    assert not first.hit
    assert second.hit
    assert second.value == PAYLOAD
    manifest = json.loads((first.entry.directory / MANIFEST_NAME).read_text())
    assert manifest["outcome"] == "success"
    assert manifest["key"] == KEY.digest
    assert set(manifest["files"]) == {"engine.bin", "calibration.pt"}
    assert manifest["size_bytes"] == len(PAYLOAD) + 5
    assert manifest["build_seconds"] >= 0
    assert "writing the engine" in manifest["log_tail"]
    stats = cache.stats().graphs["toy"]
    assert (stats.attempts, stats.successes, stats.hits) == (1, 1, 1)


def _corrupt_truncate(directory: Path) -> None:
    path = directory / "engine.bin"
    path.write_bytes(path.read_bytes()[: len(PAYLOAD) // 2])


def _corrupt_same_size(directory: Path) -> None:
    path = directory / "engine.bin"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))


def _corrupt_foreign(directory: Path) -> None:
    # an entry built for another GPU copied over this one (its files intact, its key different)
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest["key_fields"]["device"]["gpu_name"] = "NVIDIA A100-SXM4-80GB"
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))


def _corrupt_missing_manifest(directory: Path) -> None:
    (directory / MANIFEST_NAME).unlink()


def _corrupt_side_file(directory: Path) -> None:
    (directory / "calibration.pt").write_bytes(b"other")


@pytest.mark.parametrize(
    "corrupt",
    [_corrupt_truncate, _corrupt_same_size, _corrupt_foreign, _corrupt_missing_manifest, _corrupt_side_file],
)
def test_bad_entry_is_rebuilt_never_loaded(tmp_path, corrupt):
    cache = EngineCache(tmp_path)
    built = cache.get_or_build(KEY, _build, _load)
    corrupt(built.entry.directory)
    assert cache.lookup(KEY) is None
    again = cache.get_or_build(KEY, _build, _load)  # _load asserts it sees the intact payload
    assert not again.hit
    assert again.value == PAYLOAD
    stats = cache.stats().graphs["toy"]
    assert stats.attempts == 2
    assert stats.successes == 2
    assert stats.hits == 0
    assert stats.rebuilt_invalid == 1
    assert cache.get_or_build(KEY, _build, _load).hit


def test_loader_rejection_triggers_one_rebuild(tmp_path):
    cache = EngineCache(tmp_path)
    cache.get_or_build(KEY, _build, _load)
    calls = []

    def picky_load(entry):
        calls.append(entry)
        if len(calls) == 1:
            raise CorruptEntryError("deserialisation failed")
        return _load(entry)

    result = cache.get_or_build(KEY, _build, picky_load)
    assert not result.hit
    assert len(calls) == 2
    assert cache.stats().graphs["toy"].attempts == 2


def test_failed_and_refused_builds_are_recorded(tmp_path):
    cache = EngineCache(tmp_path)

    def failing(workdir, log):
        log("step 1 ok")
        raise RuntimeError("builder crashed")

    def refusing(workdir, log):
        (workdir / "engine.bin").write_bytes(b"x")
        error = EngineRefusedError("int8 too far from fp32")
        error.info = {"accuracy": {"min_cosine": 0.5}}
        raise error

    with pytest.raises(EngineBuildError, match=r"the test build failed \(RuntimeError: builder crashed\)"):
        cache.get_or_build(KEY, failing, _load)
    manifest = json.loads((cache.entry_dir(KEY) / MANIFEST_NAME).read_text())
    assert manifest["outcome"] == "failed"
    assert "builder crashed" in manifest["error"]
    assert "step 1 ok" in manifest["log_tail"]
    assert cache.lookup(KEY) is None

    other = dataclasses.replace(KEY, precision="int8")
    with pytest.raises(EngineRefusedError):
        cache.get_or_build(other, refusing, _load)
    manifest = json.loads((cache.entry_dir(other) / MANIFEST_NAME).read_text())
    assert manifest["outcome"] == "refused"
    assert manifest["info"]["accuracy"]["min_cosine"] == 0.5
    assert not (cache.entry_dir(other) / "engine.bin").exists()  # a refused engine is not kept

    cache.get_or_build(KEY, _build, _load)  # a later attempt may succeed
    total = cache.stats().total
    assert (total.attempts, total.successes, total.failures, total.refused) == (3, 1, 1, 1)
    assert cache.stats().summary().startswith("1 of 3 builds succeeded")


def test_prune(tmp_path):
    cache = EngineCache(tmp_path)
    cache.get_or_build(KEY, _build, _load)
    failed_key = dataclasses.replace(KEY, precision="fp16")
    with pytest.raises(EngineBuildError):
        cache.get_or_build(failed_key, lambda w, log: (_ for _ in ()).throw(RuntimeError("no")), _load)
    assert len(list(cache.entries())) == 2
    assert cache.prune(failed=True) == [cache.entry_dir(failed_key)]
    assert cache.prune(older_than_s=3600) == []
    assert cache.prune(everything=True) == [cache.entry_dir(KEY)]
    assert list(cache.entries()) == []


def _racer(root: str, start_at: float, queue) -> None:
    def slow_build(workdir: Path, log) -> BuildResult:
        time.sleep(1.0)  # long enough for the other process to arrive while this one builds
        return _build(workdir, log)

    while time.time() < start_at:
        time.sleep(0.005)
    result = EngineCache(root).get_or_build(KEY, slow_build, _load)
    queue.put((result.hit, len(result.value)))


def test_two_processes_build_once_and_both_get_a_valid_engine(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 3.0  # both start their request at the same moment, after spawning
    procs = [ctx.Process(target=_racer, args=(str(tmp_path), start_at, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    results = sorted(queue.get(timeout=5) for _ in procs)
    assert results == [(False, len(PAYLOAD)), (True, len(PAYLOAD))]  # one built, the other hit
    stats = EngineCache(tmp_path).stats().graphs["toy"]
    assert (stats.attempts, stats.successes, stats.hits) == (1, 1, 1)
    assert not list(tmp_path.glob("toy/.build-*"))  # no half-built directory left behind


def test_stats_since_a_snapshot(tmp_path):
    cache = EngineCache(tmp_path)
    cache.get_or_build(KEY, _build, _load)
    before = cache.stats()
    cache.get_or_build(KEY, _build, _load)
    delta = cache.stats().since(before).graphs["toy"]
    assert (delta.attempts, delta.hits) == (0, 1)


@pytest.mark.parametrize("manifest", [b"[]", b'"x"', b"null", b'{"outcome": "success", "files": "x"}',
                                      b'{"outcome": "success", "files": {"engine.bin": {"size": "big"}}}',
                                      b'{"outcome": 3}', b"\xff\xfe"],
                         ids=["list", "string", "null", "files-string", "size-string", "outcome-int", "binary"])
def test_a_manifest_of_any_shape_is_rebuilt_listed_and_pruned(tmp_path, capsys, manifest):
    cache = EngineCache(tmp_path)
    cache.get_or_build(KEY, _build, _load)
    (cache.entry_dir(KEY) / MANIFEST_NAME).write_bytes(manifest)
    assert [m for _, m in cache.entries()] == [None]  # unreadable, never an exception
    assert cache.verify(KEY)[0] is None
    capsys.readouterr()
    again = cache.get_or_build(KEY, _build, _load)
    lines = capsys.readouterr().err.strip().splitlines()
    assert not again.hit, lines
    assert len(lines) == 1, lines
    assert "manifest" in lines[0], lines
    assert "rebuilding" in lines[0], lines
    assert cache.get_or_build(KEY, _build, _load).hit
    (cache.entry_dir(KEY) / MANIFEST_NAME).write_bytes(manifest)
    assert cache.prune(failed=True) == [cache.entry_dir(KEY)]
    cache.get_or_build(KEY, _build, _load)
    (cache.entry_dir(KEY) / MANIFEST_NAME).write_bytes(manifest)
    (tmp_path / "stats.json").write_bytes(manifest)
    assert cache.stats().total.attempts == 0  # counters of the wrong shape restart
    assert cache.prune(everything=True) == [cache.entry_dir(KEY)]
    assert list(cache.entries()) == []
