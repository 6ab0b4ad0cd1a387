"""A second process (a later pytest session) finds the engine the first one built, and loads it
faster than it was built."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys, torch
from iris_pipeline.backends import EngineCache, GraphSpec, ShapeProfile, TensorSpec, onnx_artifact
torch.manual_seed(0)
layers = [torch.nn.Conv1d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv1d(8, 2, 1)]
module = torch.nn.Sequential(*layers).eval()
spec = GraphSpec("toy.session", module, (TensorSpec("x", ("batch", 4, "time")),), ("y",),
                 ShapeProfile({"batch": (1, 2, 4), "time": (8, 16, 64)}), config={"toy": 1})
cached = onnx_artifact(spec, "fp32", cache=EngineCache(sys.argv[1]), threads=1)
x = torch.randn(3, 4, 40)
ok = torch.allclose(cached.value(x), module(x).detach(), atol=1e-5)
print(json.dumps({"hit": cached.hit, "build_s": cached.build_seconds, "load_s": cached.load_seconds,
                  "ok": ok, "entry": str(cached.entry.directory)}))
"""


def _session(cache_dir: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cache_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_session_hits_the_cache(tmp_path):
    first = _session(tmp_path)
    second = _session(tmp_path)
    assert (first["hit"], second["hit"]) == (False, True)
    assert first["ok"] and second["ok"] and first["entry"] == second["entry"]
    assert second["load_s"] < first["build_s"], (second, first)
    stats = json.loads((tmp_path / "stats.json").read_text())["graphs"]["toy.session"]
    assert (stats["attempts"], stats["successes"], stats["hits"]) == (1, 1, 1)
