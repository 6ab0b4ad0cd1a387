"""Atomic result files and the append-only history, including writers killed mid-write."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from iris_pipeline.metrics import append_history, parse_number, read_csv, read_history, write_csv, write_json

REPO_ROOT = Path(__file__).resolve().parents[3]


def _visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def test_csv_round_trip_marks_missing_figures_na(tmp_path: Path) -> None:
    rows = [
        {"clip_s": 5, "stage": "e2e", "latency_ms": 12.345678901234, "sm_active_pct": math.nan},
        {"clip_s": 10, "stage": "vallex", "latency_ms": np.float32(3.5), "gpu_name": None, "ok": True},
    ]
    path = write_csv(tmp_path / "bench.csv", rows)
    back = read_csv(path)
    assert list(back[0]) == ["clip_s", "stage", "latency_ms", "sm_active_pct", "gpu_name", "ok"]
    assert back[0]["latency_ms"] == "12.345678901234"  # full precision
    assert back[0]["sm_active_pct"] == "n/a"
    assert back[1]["gpu_name"] == "n/a"  # unmeasured is never 0
    assert back[0]["gpu_name"] == "n/a"
    assert back[1]["ok"] == "true"
    assert parse_number(back[1]["latency_ms"]) == 3.5
    assert math.isnan(parse_number(back[0]["sm_active_pct"]))
    assert _visible(tmp_path) == ["bench.csv"]


def test_csv_with_columns_rejects_unknown_keys_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "bench.csv"
    write_csv(path, [{"a": 1}], columns=["a"])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="outside the columns"):
        write_csv(path, [{"a": 2}, {"a": 3, "b": 4}], columns=["a"])
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["bench.csv"]  # the temporary file was removed


def test_json_is_standard_json(tmp_path: Path) -> None:
    obj = {"peak_mem_gb": math.nan, "n": np.int64(3), "path": tmp_path, "xs": np.arange(3), "inf": math.inf}
    path = write_json(tmp_path / "bench.json", obj)
    text = path.read_text()
    assert "NaN" not in text
    assert "Infinity" not in text
    back = json.loads(text)
    assert back == {"peak_mem_gb": None, "n": 3, "path": str(tmp_path), "xs": [0, 1, 2], "inf": None}
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


# A child that writes many rows, then blocks forever inside the last one, after telling us so.
_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from iris_pipeline.metrics import append_history, write_csv, write_json

    kind, target, marker = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

    class Slow:
        def __str__(self):
            marker.write_text("writing")
            time.sleep(120)
            return "never"

    rows = [{"run": i, "latency_ms": 100.0 + i, "note": "x" * 50} for i in range(3000)]
    rows.append({"run": 3000, "latency_ms": 1.0, "note": Slow()})
    if kind == "csv":
        write_csv(target, iter(rows), columns=["run", "latency_ms", "note"])
    elif kind == "json":
        write_json(target, {"rows": rows})
    else:
        append_history(target, rows)
    """
)


def _kill_mid_write(kind: str, target: Path) -> None:
    marker = target.parent / "child-is-writing"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, kind, str(target), str(marker)], cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, f"writer exited early with code {child.returncode}"
            assert time.monotonic() < deadline, "writer never reached the slow row"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    marker.unlink()


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_a_writer_killed_mid_write_leaves_the_old_file_intact(tmp_path: Path, kind: str) -> None:
    target = tmp_path / f"bench.{kind}"
    if kind == "csv":
        write_csv(target, [{"run": 0, "latency_ms": 1.5}])
    else:
        write_json(target, {"old": True})
    before = target.read_bytes()

    _kill_mid_write(kind, target)

    assert target.read_bytes() == before
    assert _visible(tmp_path) == [target.name]  # nothing partial under a visible name
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(f".{target.name}.") and p.name.endswith(".tmp")]
    assert len(partial) == 1
    assert partial[0].stat().st_size > 0  # proof that it died mid-write


def test_history_survives_a_writer_killed_mid_append(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    append_history(history, [{"run": "a", "latency_ms": 10.0}, {"run": "b", "latency_ms": 11.0}])
    before = history.read_bytes()

    _kill_mid_write("history", history)

    assert history.read_bytes() == before
    assert [r["run"] for r in read_history(history)] == ["a", "b"]
    # the killed writer's lock died with it: the next append goes through at once
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the dead writer's partial file
    append_history(history, [{"run": "c", "latency_ms": 12.0}])
    assert [r["run"] for r in read_history(history)] == ["a", "b", "c"]
    assert _visible(tmp_path) == ["history.csv"]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # cleaned up under the lock


def test_history_adds_new_columns_and_keeps_old_rows(tmp_path: Path) -> None:
    history = tmp_path / "results" / "history.csv"
    assert read_history(history) == []
    append_history(history, [{"commit": "abc", "latency_ms": 300.0}])
    append_history(history, [{"commit": "def", "first_chunk_ms": 90.0, "latency_ms": 310.0}])
    text = history.read_text().splitlines()
    assert text[0] == "commit,latency_ms,first_chunk_ms"  # old columns keep their place
    rows = read_history(history)
    assert rows == [
        {"commit": "abc", "latency_ms": "300.0", "first_chunk_ms": "n/a"},
        {"commit": "def", "latency_ms": "310.0", "first_chunk_ms": "90.0"},
    ]


def test_concurrent_history_writers_lose_no_rows(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    code = textwrap.dedent(
        """
        import sys
        from iris_pipeline.metrics.records import append_history
        for i in range(15):
            append_history(sys.argv[1], [{"writer": sys.argv[2], "i": i}])
        """
    )
    writers = [subprocess.Popen([sys.executable, "-c", code, str(history), name], cwd=REPO_ROOT) for name in "AB"]
    for w in writers:
        assert w.wait(timeout=120) == 0
    rows = read_history(history)
    assert len(rows) == 30
    for name in "AB":
        assert [int(r["i"]) for r in rows if r["writer"] == name] == list(range(15))
