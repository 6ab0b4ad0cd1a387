"""A/B worker: a long-lived process that loads ONE checkout's pipeline and runs one job per request.

Run as a script (`python abworker.py --root CHECKOUT`), never imported from the package: it puts
CHECKOUT first on sys.path, so `iris_pipeline` is that checkout's code, and it uses only the
public pipeline API (PipelineConfig, Pipeline, Job, read_audio), so an older base works too. The
head's copy of this file drives both sides, so both are timed by the same code.

Protocol: one JSON object per line on stdin, one answer per line on the original stdout (anything
else the code prints goes to stderr). Requests:
  {"op": "prepare", "config": {...}, "avatar": path, "reference": wav path, "transcript", "language",
   "factory": "file.py:function" | null, "factory_args": {...}}
      -> {"ok": true, "dropped": ["chunking.first_chunk_seconds", ...]}
      `config` holds only the options set explicitly; this checkout fills in its own defaults, and an
      option its config model does not know is dropped (and named in "dropped"), never an error.
  {"op": "run", "text": str, "language": str, "clip_s": float, "seed": int}
      -> {"ok": true, "latency_ms", "first_chunk_ms", "stage_ms"}
  {"op": "quit"}
Errors: {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any


class Worker:
    def __init__(self, root: Path):
        self.root = root
        self.pipeline: Any = None
        self.job_args: dict[str, Any] = {}
        self.job_cls: Any = None

    def hello(self, _: dict[str, Any]) -> dict[str, Any]:
        import iris_pipeline

        where = Path(iris_pipeline.__file__ or next(iter(iris_pipeline.__path__))).resolve()
        if self.root not in where.parents:
            raise RuntimeError(f"iris_pipeline imported from {where}, not from the checkout {self.root}")
        return {"iris_file": str(where), "pid": os.getpid()}

    def prepare(self, req: dict[str, Any]) -> dict[str, Any]:
        self.hello(req)
        from iris_pipeline.audio import read_audio
        from iris_pipeline.config import PipelineConfig
        from iris_pipeline.pipeline import Job

        config, dropped = known_options(PipelineConfig, req["config"])

        if req.get("factory"):
            file, _, name = str(req["factory"]).rpartition(":")
            spec = importlib.util.spec_from_file_location("iris_ab_factory", file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses in the file look their module up
            spec.loader.exec_module(module)
            self.pipeline = getattr(module, name)(config, **(req.get("factory_args") or {}))
        else:
            from iris_pipeline.config import parse_pipeline_config
            from iris_pipeline.pipeline import Pipeline

            self.pipeline = Pipeline(parse_pipeline_config(config))
        self.pipeline.prepare()
        avatar = self.pipeline.prepare_avatar(req["avatar"])
        reference = read_audio(req["reference"], name="reference")
        self.job_cls = Job
        self.job_args = {"reference": reference, "transcript": req["transcript"], "avatar": avatar}
        return {"dropped": dropped}

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        job = self.job_cls(text=req["text"], language=req["language"], seconds=float(req["clip_s"]),
                           seed=int(req["seed"]), **self.job_args)
        start = _synced_now()
        handle = self.pipeline.submit(job)
        first = math.nan
        chunks = []
        for chunk in handle.chunks():
            if math.isnan(first):
                first = time.perf_counter()
            chunks.append(chunk)
        end = _synced_now()
        result = handle.assemble(chunks) if hasattr(handle, "assemble") else handle.result()
        return {"latency_ms": (end - start) * 1e3, "first_chunk_ms": (first - start) * 1e3,
                "stage_ms": dict(result.stage_ms)}

    def quit(self, _: dict[str, Any]) -> dict[str, Any]:
        if self.pipeline is not None:
            self.pipeline.close()
        return {}


def known_options(model: Any, options: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """`options` without the keys this checkout's config `model` (a pydantic model class) has no field
    for, recursively through nested models; and the dotted names of the dropped keys."""
    fields = getattr(model, "model_fields", None)
    if fields is None:  # not a pydantic v2 model: nothing to check against, the options go as they are
        return dict(options), []
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in options.items():
        if key not in fields:
            dropped.append(prefix + key)
            continue
        sub = fields[key].annotation
        if isinstance(value, dict) and isinstance(sub, type) and hasattr(sub, "model_fields"):
            value, more = known_options(sub, value, f"{prefix}{key}.")
            dropped += more
        kept[key] = value
    return kept, dropped


def _synced_now() -> float:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        for index in range(torch.cuda.device_count()):
            torch.cuda.synchronize(index)
    return time.perf_counter()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="checkout whose iris_pipeline this worker loads")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(root))
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stray prints of the code under test must not corrupt the protocol
    sys.stdout = sys.stderr
    worker = Worker(root)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        op = req.get("op")
        try:
            answer = {"ok": True, **getattr(worker, op)(req)} if op in ("hello", "prepare", "run", "quit") \
                else {"ok": False, "error": f"unknown op {op!r}"}
        except BaseException as exc:  # noqa: BLE001 - sent to the driver
            traceback.print_exc()
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        channel.write(json.dumps(answer) + "\n")
        channel.flush()
        if op == "quit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
