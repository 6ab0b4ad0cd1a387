"""`iris loadtest URL`: Locust, headless, against a served chain on this machine; `iris bench`'s files.

For each clip length: one warm-up render, then one Locust run per concurrency step (c users in a
closed loop, bounded by a clip count and a time limit). Each step becomes a benchmark result
written by the benchmark's own writer (`benchmark.results.write_outputs`) in `OUT/c<c>/`, whose
runs are that step's renders and whose throughput phases are every step's, so `iris report OUT/c1`
reads it like an `iris bench` directory; `OUT/bench.csv` holds every step's rows (same columns; the
`serve_concurrency` and `serve_replicas` context columns tell them apart).
"""

from __future__ import annotations

import io
import ipaddress
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from iris_pipeline.errors import InputError, IrisError

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
MAX_CLIPS_PER_STEP = 1000
MAX_STEP_SECONDS = 3600.0


class LoadTestError(IrisError):
    """The service refused or failed the load test's set-up, or Locust could not run."""


@dataclass(frozen=True)
class LoadTestPlan:
    url: str
    token: str
    clip_lengths: tuple[float, ...]
    concurrencies: tuple[int, ...]
    clips_per_step: int  # renders counted per step beyond the c that fill the loop
    step_seconds: float  # time limit of one step
    out_dir: Path
    language: str = "en"
    seed: int = 0


def check_loopback(url: str) -> None:
    """Only a service on this machine may be loaded: the host must resolve to loopback addresses."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InputError(f"URL {url!r}: expected http://HOST:PORT")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parsed.hostname, parsed.port or 80)}
    except socket.gaierror as exc:
        raise InputError(f"URL {url!r}: cannot resolve {parsed.hostname} ({exc.strerror})") from None
    remote = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if remote:
        raise InputError(f"URL {url!r}: {parsed.hostname} is not this machine ({remote[0]}); "
                         "the load test only targets loopback addresses")


def check_plan(plan: LoadTestPlan) -> None:
    check_loopback(plan.url)
    if not plan.concurrencies or any(c < 1 or c > 64 for c in plan.concurrencies):
        raise InputError("--concurrency: each step must be between 1 and 64 users")
    if not 1 <= plan.clips_per_step <= MAX_CLIPS_PER_STEP:
        raise InputError(f"--clips: must be between 1 and {MAX_CLIPS_PER_STEP}")
    if not 0 < plan.step_seconds <= MAX_STEP_SECONDS:
        raise InputError(f"--step-seconds: must be in (0, {MAX_STEP_SECONDS:g}]")


class Client:
    """The few calls the set-up makes (requests, outside Locust)."""

    def __init__(self, plan: LoadTestPlan):
        self.url = plan.url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {plan.token}"}

    def _check(self, resp: requests.Response, what: str) -> Any:
        if resp.status_code >= 400:
            try:
                message = resp.json().get("error", resp.text)
            except ValueError:
                message = resp.text
            raise LoadTestError(f"{what}: HTTP {resp.status_code}: {' '.join(str(message).split())[:300]}")
        return resp.json()

    def info(self) -> dict[str, Any]:
        try:
            resp = requests.get(f"{self.url}/v1/info", headers=self.headers, timeout=30)
        except requests.RequestException as exc:
            raise LoadTestError(f"{self.url}: no service answers ({type(exc).__name__})") from None
        return self._check(resp, "GET /v1/info")

    def register(self, language: str, seed: int) -> dict[str, str]:
        """The benchmark's own inputs: its synthetic reference voice and its bundled avatar."""
        import soundfile

        from iris_pipeline.benchmark.inputs import (
            default_avatar_path,
            reference_transcript,
            synthetic_reference,
        )

        wave = synthetic_reference(seed)
        buf = io.BytesIO()
        soundfile.write(buf, wave.samples.numpy(), wave.sample_rate, format="WAV", subtype="FLOAT")
        voice = self._check(requests.post(f"{self.url}/v1/voices", data=buf.getvalue(), headers=self.headers,
                                          params={"transcript": reference_transcript(language), "language": language},
                                          timeout=300), "POST /v1/voices")
        avatar_path = default_avatar_path()
        avatar = self._check(requests.post(f"{self.url}/v1/avatars", data=avatar_path.read_bytes(),
                                           params={"filename": avatar_path.name}, headers=self.headers, timeout=300),
                             "POST /v1/avatars")
        return {"voice_id": voice["voice_id"], "avatar_id": avatar["avatar_id"]}


def run_step(plan: LoadTestPlan, job: dict[str, Any], concurrency: int, clips: int, records: Path,
             csv_prefix: Path) -> list[dict[str, Any]]:
    """One headless Locust run: `concurrency` users until `clips` renders finished or the time limit."""
    env = {**os.environ, "IRIS_LOADTEST_TOKEN": plan.token, "IRIS_LOADTEST_JOB": json.dumps(job),
           "IRIS_LOADTEST_RECORDS": str(records), "IRIS_LOADTEST_CLIPS": str(clips)}
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", plan.url,
               "--users", str(concurrency), "--spawn-rate", str(concurrency),
               "--run-time", f"{math.ceil(plan.step_seconds)}s", "--stop-timeout", "600",
               "--csv", str(csv_prefix), "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=plan.step_seconds + 900)  # + the renders in flight at the time limit
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise LoadTestError(f"locust (concurrency {concurrency}) exited with {proc.returncode}: {tail}")
    if not records.is_file():
        return []
    return [json.loads(line) for line in records.read_text(encoding="utf-8").splitlines() if line.strip()]


def phase_of(concurrency: int, records: list[dict[str, Any]], step_seconds: float) -> Any:
    """A closed-loop phase from the step's renders, by `iris bench`'s rule: the first `concurrency`
    completions fill the loop; the rate counts the later ones over the span from the loop's fill to
    the last completion. A failed render makes the phase invalid."""
    from iris_pipeline.benchmark.runner import Phase

    stamps = sorted(r["end"] for r in records if r["ok"])
    failed = [r for r in records if not r["ok"]]
    counted = max(0, len(stamps) - concurrency)
    window_s = stamps[-1] - stamps[concurrency - 1] if counted else math.nan
    rate = counted / window_s if counted and window_s > 0 else math.nan
    why = None
    if failed:
        why = f"{len(failed)} render(s) failed, first: {failed[0]['error']}"
    elif counted < 2:
        why = f"fewer than 2 renders after the loop filled within {step_seconds:g} s"
    gaps = [b - a for a, b in zip(stamps[concurrency - 1:], stamps[concurrency:], strict=False)] if counted else []
    return Phase(concurrency, rate, counted, window_s, min(len(stamps), concurrency), why is None, why,
                 source="Locust over HTTP", gaps_s=gaps)


def run_sample(index: int, seed: int, record: dict[str, Any]) -> Any:
    """A render as the benchmark's run record: latency and first chunk as the client saw them."""
    from iris_pipeline.benchmark.runner import RunSample

    server = record["server"] or {}
    return RunSample(index=index, seed=seed, latency_ms=(record["end"] - record["start"]) * 1e3,
                     first_chunk_ms=(record["first_chunk_s"] - record["start"]) * 1e3,
                     stage_ms=dict(server.get("stage_ms") or {}), chunks=int(server.get("chunks") or 0),
                     pipeline_latency_ms=float(server.get("latency_ms") or math.nan),
                     speech_s=float(server.get("seconds") or math.nan))


def _no_nvml(reason: str) -> Any:
    from iris_pipeline.metrics.nvml import NvmlSummary

    nan = math.nan
    return NvmlSummary(available=False, reason=reason, peak_mem_gb=nan, mem_method="unavailable", gpu_busy_pct=nan,
                       sample_period_s=nan, driver_busy_period_s=nan, n_samples=0, window_s=nan, sm_active_pct=nan,
                       sm_occupancy_pct=nan, gpm_reason=reason)


def run_loadtest(plan: LoadTestPlan, echo: Any = print) -> dict[str, Any]:
    """Run every step and write the files; returns {"steps": [...figures...], "files": {...}}."""
    from iris_pipeline.benchmark.inputs import script_for
    from iris_pipeline.benchmark.results import csv_rows, write_outputs
    from iris_pipeline.benchmark.runner import ClipMeasurement
    from iris_pipeline.benchmark.session import BenchResult
    from iris_pipeline.benchmark.settings import BenchSettings, resolve
    from iris_pipeline.config import parse_pipeline_config
    from iris_pipeline.metrics import Summary, capture_context, write_csv
    from iris_pipeline.metrics.records import columns_of

    check_plan(plan)
    client = Client(plan)
    info = client.info()
    config = parse_pipeline_config(info["config"], source="the service's config")
    ids = client.register(plan.language, plan.seed)
    replicas = ",".join(f"{k}={v}" for k, v in info["replicas"].items())
    on_gpu = config.device != "cpu"
    settings = BenchSettings(clip_lengths=list(plan.clip_lengths), runs=plan.clips_per_step, warmup=1,
                             max_concurrency=max(plan.concurrencies), language=plan.language, seed=plan.seed)
    resolved = resolve(settings, on_gpu)
    why_no_gpu_figures = "served over HTTP: the load generator samples no GPU (see the service's own metrics)"
    started = time.time()
    steps: list[dict[str, Any]] = []
    per_step: dict[int, list[tuple[float, list[Any], list[Any]]]] = {c: [] for c in plan.concurrencies}
    phases: dict[float, list[Any]] = {}
    with tempfile.TemporaryDirectory(prefix="iris-loadtest-") as scratch:
        for clip_s in plan.clip_lengths:
            job = {"text": script_for(clip_s, plan.language), "language": plan.language, **ids,
                   "seconds": clip_s, "seed": plan.seed}
            warm = run_step(plan, job, 1, 1, Path(scratch) / f"warm-{clip_s:g}.jsonl", Path(scratch) / "warm")
            if not warm or not warm[0]["ok"]:
                raise LoadTestError(f"warm-up render of {clip_s:g} s failed: "
                                    f"{warm[0]['error'] if warm else 'no render finished'}")
            warmup = [run_sample(0, plan.seed, warm[0])]
            phases[clip_s] = []
            for c in plan.concurrencies:
                records = run_step(plan, job, c, plan.clips_per_step + c, Path(scratch) / f"{clip_s:g}-c{c}.jsonl",
                                   plan.out_dir / f"c{c}" / f"locust-{clip_s:g}s")
                phase = phase_of(c, records, plan.step_seconds)
                phases[clip_s].append(phase)
                runs = [run_sample(i, plan.seed, r) for i, r in enumerate(records) if r["ok"]]
                per_step[c].append((clip_s, runs, warmup))
                latency = Summary.from_samples([r.latency_ms for r in runs], n_boot=settings.n_boot,
                                               seed=settings.seed) if runs else None
                figures = {"clip_s": clip_s, "concurrency": c, "renders": len(runs),
                           "failed": sum(1 for r in records if not r["ok"]), "clips_per_s": phase.rate_cps,
                           "latency_p50_ms": latency.p50 if latency else math.nan,
                           "latency_p99_ms": latency.p99 if latency else math.nan, "replicas": replicas}
                steps.append(figures)
                echo(f"{clip_s:g} s clips, concurrency {c}: {figures['renders']} renders, "
                     f"{phase.rate_cps:.3f} clips/s, latency p50 {figures['latency_p50_ms']:.0f} ms, "
                     f"p99 {figures['latency_p99_ms']:.0f} ms, {figures['failed']} failed")

    all_rows: list[dict[str, Any]] = []
    files: dict[str, str] = {}
    for c, clips in per_step.items():
        measurements = []
        for clip_s, runs, warmup in clips:
            ramp_phases = phases[clip_s]
            best = max((p for p in ramp_phases if p.valid), key=lambda p: p.rate_cps, default=None)
            measurements.append(ClipMeasurement(
                clip_s=clip_s, runs=runs, warmup=warmup, phases=ramp_phases,
                saturating_concurrency=best.concurrency if best else None,
                ramp_note=f"Locust closed loops at concurrency {', '.join(map(str, plan.concurrencies))} "
                          f"over HTTP; these runs are the concurrency-{c} step's",
                nvml_runs=_no_nvml(why_no_gpu_figures), nvml_all=_no_nvml(why_no_gpu_figures),
                torch_peak_reserved_gb=math.nan))
        context = {**capture_context(config), "serve_url": plan.url, "serve_concurrency": c,
                   "serve_replicas": replicas}
        result = BenchResult(context=context, resolved=resolved, config=config.model_dump(mode="json"),
                             placement={"served": replicas}, clips=measurements,
                             engines={"available": False, "reason": "the chain runs in the service"},
                             build_nvml=_no_nvml(why_no_gpu_figures),
                             notes=[*resolved.notes, f"load test over HTTP with Locust at concurrency {c}; "
                                                     f"replicas {replicas}"],
                             started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                             duration_s=time.time() - started)
        paths = write_outputs(result, [], plan.out_dir / f"c{c}", targets_file="(none: a load test)")
        files.update({f"c{c}_{k}": str(p) for k, p in paths.items()})
        all_rows += csv_rows(result)
    files["csv"] = str(write_csv(plan.out_dir / "bench.csv", all_rows, columns_of(all_rows)))
    write_csv(plan.out_dir / "steps.csv", steps)
    files["steps"] = str(plan.out_dir / "steps.csv")
    return {"steps": steps, "files": files}
