"""Locust users for `iris loadtest`: each streams renders of one job back to back (a closed loop).

Run by `iris loadtest` (headless, one process per concurrency step); its settings come from the
environment:

    IRIS_LOADTEST_TOKEN      bearer token
    IRIS_LOADTEST_JOB        the render request (JSON)
    IRIS_LOADTEST_RECORDS    JSON-lines file: one record per finished render
    IRIS_LOADTEST_CLIPS      stop the whole run after this many finished renders

A record: start/end (Unix seconds), first_chunk_s (when the first chunk line arrived), ok, error,
and the server's own figures from the stream's last line.
"""

from __future__ import annotations

import json
import os
import time

from locust import HttpUser, constant, events, task

TOKEN = os.environ.get("IRIS_LOADTEST_TOKEN", "")
JOB = json.loads(os.environ.get("IRIS_LOADTEST_JOB", "{}"))
RECORDS = os.environ.get("IRIS_LOADTEST_RECORDS", "")
CLIPS = int(os.environ.get("IRIS_LOADTEST_CLIPS", "1"))
_finished = 0


@events.init.add_listener
def _check(environment, **_kwargs) -> None:
    if not (TOKEN and JOB and RECORDS):
        raise SystemExit("iris loadtest: IRIS_LOADTEST_TOKEN, IRIS_LOADTEST_JOB and IRIS_LOADTEST_RECORDS are needed")


class RenderUser(HttpUser):
    wait_time = constant(0)

    @task
    def render(self) -> None:
        global _finished
        record = {"start": time.time(), "first_chunk_s": None, "ok": False, "error": None, "server": None}
        with self.client.post("/v1/renders/stream", json=JOB, headers={"Authorization": f"Bearer {TOKEN}"},
                              stream=True, catch_response=True, name="render") as resp:
            if resp.status_code != 200:
                record["error"] = f"HTTP {resp.status_code}: {resp.text.strip()[:200]}"
                resp.failure(record["error"])
            else:
                for raw in resp.iter_lines(chunk_size=1 << 20):
                    if record["first_chunk_s"] is None:
                        record["first_chunk_s"] = time.time()
                    line = json.loads(raw)
                    if "error" in line:
                        record["error"] = line["error"]
                    elif line.get("done"):
                        record["server"] = {k: line.get(k) for k in ("latency_ms", "first_chunk_ms", "stage_ms",
                                                                     "seconds", "chunks")}
                record["ok"] = record["error"] is None and record["server"] is not None
                if record["ok"]:
                    resp.success()
                else:
                    resp.failure(record["error"] or "the stream ended without its last line")
        record["end"] = time.time()
        with open(RECORDS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        _finished += 1
        if _finished >= CLIPS and self.environment.runner is not None:
            self.environment.runner.quit()
