"""The perf suite's wiring that needs no GPU: one process under pytest-xdist, and the host memory
sampler behind `peak_host_mem_gb`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from iris_pipeline.benchmark.hostmem import HostMemorySampler
from iris_pipeline.metrics import repository_root


def _perf_conftest():
    path = repository_root() / "tests" / "perf" / "conftest.py"
    spec = importlib.util.spec_from_file_location("iris_perf_conftest", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class _Item:
    def __init__(self, path: Path):
        self.fspath = path
        self.marks: list = []

    def add_marker(self, mark) -> None:
        self.marks.append(mark)


def test_under_xdist_the_perf_suite_needs_loadgroup_and_shares_one_group():
    conftest = _perf_conftest()
    perf = _Item(repository_root() / "tests" / "perf" / "test_pipeline_perf.py")
    other = _Item(repository_root() / "tests" / "unit" / "bench" / "test_bench_ab.py")
    worker = SimpleNamespace(workerinput={"workerid": "gw0"}, option=SimpleNamespace(dist="load"))
    with pytest.raises(pytest.UsageError, match="--dist loadgroup"):
        conftest.pytest_collection_modifyitems(worker, [perf, other])
    worker.option.dist = "loadgroup"
    conftest.pytest_collection_modifyitems(worker, [perf, other])
    assert [m.name for m in perf.marks] == ["xdist_group"]
    assert perf.marks[0].args == (conftest.XDIST_GROUP,)
    assert other.marks == []
    conftest.pytest_collection_modifyitems(SimpleNamespace(option=SimpleNamespace(dist="no")), [perf])  # no xdist
    assert len(perf.marks) == 1


def test_host_memory_peak_follows_the_window():
    with HostMemorySampler(0.01) as host:
        before = host.peak_gb()
        block = bytearray(300 * 2**20)  # 300 MiB, touched so it is resident
        block[:: 4096] = b"x" * len(block[:: 4096])
        grown = host.peak_gb()
        del block
        host.reset()
        after = host.peak_gb()
    assert grown - before > 0.25
    assert after < grown - 0.2  # a new window starts from the current RSS, not the old peak
