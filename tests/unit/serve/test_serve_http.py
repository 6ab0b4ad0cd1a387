"""The chain served on Ray Serve (a local Ray started here, tiny models on the CPU), over HTTP.

One application serves the whole module (starting it takes most of a minute on two cores).
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

ray = pytest.importorskip("ray", reason="ray[serve] is not installed (pip install -e '.[serve]')")
requests = pytest.importorskip("requests")

from iris_pipeline.audio import read_audio  # noqa: E402
from iris_pipeline.config import PipelineConfig  # noqa: E402
from iris_pipeline.pipeline import Job, Pipeline  # noqa: E402
from tests.support.chain import FACE, tiny_config, voiced_samples  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data"
TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UPLOAD_LIMIT_MB = 1.0
MAX_INFLIGHT = 2
TEXT = "Hello there. This clip is rendered by the served chain, chunk by chunk."


def served_config(tmp: Path) -> PipelineConfig:
    cfg = tiny_config(chunk_seconds=2.5)
    serving = cfg.serving
    serving.port = _free_port()
    serving.token_file = tmp / "token"
    serving.results_dir = tmp / "results"
    serving.max_upload_mb = UPLOAD_LIMIT_MB
    serving.max_inflight_renders = MAX_INFLIGHT
    serving.retry_after_s = 7
    for group in ("ingress", "registry", "voice", "speech", "lipsync", "frames"):
        getattr(serving, group).num_cpus = 0.1  # six replicas on a two-CPU Ray
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from iris_pipeline.serve import launch

    tmp = tmp_path_factory.mktemp("serve")
    cfg = served_config(tmp)
    (tmp / "token").write_text(TOKEN + "\n")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        launch.start(cfg)
        yield cfg, f"http://127.0.0.1:{cfg.serving.port}"
    finally:
        launch.stop()


@pytest.fixture(scope="module")
def voice_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("voice") / "ref.wav"
    soundfile.write(path, voiced_samples(2.0, 16000), 16000, subtype="FLOAT")  # read back exactly
    return path


@pytest.fixture(scope="module")
def ids(served, voice_file) -> dict[str, str]:
    _, url = served
    voice = requests.post(f"{url}/v1/voices", params={"transcript": "a short reference", "language": "en"},
                          data=voice_file.read_bytes(), headers=AUTH, timeout=120)
    assert voice.status_code == 201, voice.text
    avatar = requests.post(f"{url}/v1/avatars", data=(FACE).read_bytes(),
                           headers={**AUTH, "content-type": "image/jpeg"}, timeout=120)
    assert avatar.status_code == 201, avatar.text
    assert avatar.json()["height"] == 256 and avatar.json()["width"] == 256
    return {"voice_id": voice.json()["voice_id"], "avatar_id": avatar.json()["avatar_id"]}


def stream_lines(url: str, job: dict, on_line=None) -> list[dict]:
    lines = []
    with requests.post(f"{url}/v1/renders/stream", json=job, headers=AUTH, stream=True, timeout=300) as resp:
        assert resp.status_code == 200, resp.text
        for raw in resp.iter_lines(chunk_size=1 << 20):
            line = json.loads(raw)
            lines.append(line)
            if on_line is not None:
                on_line(line)
    return lines


def assemble(lines: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    chunks = [line for line in lines if "chunk" in line]
    speech = np.concatenate([np.frombuffer(base64.b64decode(c["speech"]), dtype="<f4") for c in chunks])
    frames = np.concatenate([np.frombuffer(base64.b64decode(c["frames"]), dtype=np.uint8).reshape(c["frames_shape"])
                             for c in chunks if c["frames_shape"][0]])
    return torch.from_numpy(speech.copy()), torch.from_numpy(frames.copy())


def assert_one_line_error(resp, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]
    return body["error"]


# --- the same clip as in-process ------------------------------------------------------------------

def test_http_render_equals_in_process_render(served, ids, voice_file, tmp_path):
    cfg, url = served
    job = {"text": TEXT, "language": "en", **ids, "seconds": 4.0, "seed": 3}
    lines = stream_lines(url, job)
    assert lines[-1].get("done"), lines[-1]
    speech, frames = assemble(lines)

    local_cfg = cfg.model_copy(deep=True)
    pipeline = Pipeline(local_cfg)
    try:
        avatar = pipeline.prepare_avatar(FACE)
        pipeline.prepare()
        expected = pipeline.render(Job(text=TEXT, language="en", reference=read_audio(voice_file),
                                       transcript="a short reference", avatar=avatar, seconds=4.0, seed=3))
    finally:
        pipeline.close()
    assert len(lines) - 1 == expected.chunks > 1
    assert torch.equal(speech, expected.speech.samples)
    assert torch.equal(frames, expected.frames)

    written = requests.post(f"{url}/v1/renders", json=job, headers=AUTH, timeout=300)
    assert written.status_code == 201, written.text
    answer = written.json()
    assert answer["frames"] == expected.frames.shape[0] and answer["seconds"] == pytest.approx(4.0, abs=1e-3)
    mp4 = requests.get(url + answer["mp4"], headers=AUTH, timeout=60)
    assert mp4.status_code == 200 and mp4.content[4:8] == b"ftyp"
    vtt = requests.get(url + answer["vtt"], headers=AUTH, timeout=60)
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT")
    from iris_pipeline.video import read_mp4_info

    (tmp_path / "clip.mp4").write_bytes(mp4.content)
    assert read_mp4_info(tmp_path / "clip.mp4").frame_count == expected.frames.shape[0]


def test_stream_delivers_first_chunk_before_the_last_is_made(served, ids):
    _, url = served
    job = {"text": TEXT + " And a few more words to make a third chunk.", "language": "en", **ids,
           "seconds": 8.0, "seed": 1}
    received: list[float] = []
    sent = time.monotonic()
    lines = stream_lines(url, job, on_line=lambda line: received.append(time.monotonic()))
    done = lines[-1]
    assert done.get("done") and done["chunks"] >= 3
    # the server submitted after `sent`, and made its last chunk latency_ms after submitting:
    # a first chunk received before sent + latency_ms arrived before the last chunk was made
    assert (received[0] - sent) * 1e3 < done["latency_ms"]
    assert done["first_chunk_ms"] < done["latency_ms"]


# --- refusals ---------------------------------------------------------------------------------------

def test_health_needs_no_token_everything_else_does(served, ids):
    _, url = served
    assert requests.get(f"{url}/healthz", timeout=30).json() == {"status": "ok"}
    assert requests.get(f"{url}/readyz", timeout=30).json() == {"ready": True}
    for method, path in (("get", "/metrics"), ("get", "/openapi.json"), ("get", "/docs"),
                         ("post", "/v1/voices"), ("post", "/v1/avatars"), ("post", "/v1/renders"),
                         ("post", "/v1/renders/stream"), ("get", "/v1/info")):
        missing = getattr(requests, method)(url + path, timeout=30)
        assert "bearer token" in assert_one_line_error(missing, 401)
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = getattr(requests, method)(url + path, headers={"Authorization": "Bearer " + TOKEN[:-1] + "X"},
                                          timeout=30)
        assert assert_one_line_error(wrong, 401) == "wrong bearer token"
    info = requests.get(f"{url}/v1/info", headers=AUTH, timeout=30).json()
    assert info["replicas"] == {"VoicePrompt": "1", "Speech": "1", "LipsyncMel": "1", "Frames": "1", "Registry": "1",
                                "Ingress": "1"}
    assert (info["size"], info["device"]) == ("tiny", "cpu")
    spec = requests.get(f"{url}/openapi.json", headers=AUTH, timeout=30).json()
    assert "/v1/renders/stream" in spec["paths"] and "/v1/voices" in spec["paths"]
    metrics = requests.get(f"{url}/metrics", headers=AUTH, timeout=30).text
    for name in ("iris_stage_latency_seconds_bucket", "iris_stage_inflight_calls", "iris_renders_inflight"):
        assert name in metrics
    assert 'stage="wav2lip"' in metrics and 'stage="vallex"' in metrics


@pytest.mark.parametrize(("case", "status", "needle"), [
    ("missing field", 422, "voice_id"),
    ("unknown voice", 404, "voice_id"),
    ("unknown avatar", 404, "avatar_id"),
    ("bad language", 400, "language"),
    ("empty text", 422, "text"),
    ("not json", 422, "JSON"),
])
def test_bad_render_requests(served, ids, case, status, needle):
    _, url = served
    job = {"text": TEXT, "language": "en", **ids}
    if case == "missing field":
        job.pop("voice_id")
    elif case == "unknown voice":
        job["voice_id"] = "0" * 32
    elif case == "unknown avatar":
        job["avatar_id"] = "0" * 32
    elif case == "bad language":
        job["language"] = "xx"
    elif case == "empty text":
        job["text"] = ""
    if case == "not json":
        resp = requests.post(f"{url}/v1/renders", data=b"{not json", headers={**AUTH, "content-type": "application/json"},
                             timeout=60)
    else:
        resp = requests.post(f"{url}/v1/renders", json=job, headers=AUTH, timeout=60)
    assert needle in assert_one_line_error(resp, status)


def test_bad_uploads(served, tmp_path):
    _, url = served
    params = {"transcript": "words", "language": "en"}
    big = requests.post(f"{url}/v1/voices", params=params, data=b"\0" * int((UPLOAD_LIMIT_MB + 0.5) * 2**20),
                        headers=AUTH, timeout=60)
    assert "over the limit" in assert_one_line_error(big, 413)

    def chunked():  # no Content-Length: the limit is enforced while reading
        for _ in range(int(UPLOAD_LIMIT_MB * 4) + 2):
            yield b"\0" * (1 << 18)

    streamed = requests.post(f"{url}/v1/voices", params=params, data=chunked(), headers=AUTH, timeout=60)
    assert "over the limit" in assert_one_line_error(streamed, 413)
    not_audio = requests.post(f"{url}/v1/voices", params=params, data=b"RIFF not really a wav file", headers=AUTH,
                              timeout=60)
    assert "not a readable audio file" in assert_one_line_error(not_audio, 400)
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(32000, dtype=np.float32), 16000)
    assert "silent" in assert_one_line_error(
        requests.post(f"{url}/v1/voices", params=params, data=silent.read_bytes(), headers=AUTH, timeout=60), 400)
    no_language = requests.post(f"{url}/v1/voices", params={**params, "language": "xx"}, data=silent.read_bytes(),
                                headers=AUTH, timeout=60)
    assert "not supported" in assert_one_line_error(no_language, 400)
    not_image = requests.post(f"{url}/v1/avatars", data=b"\x89PNG broken", headers={**AUTH, "content-type": "image/png"},
                              timeout=60)
    assert assert_one_line_error(not_image, 400).startswith("avatar upload: ")
    no_kind = requests.post(f"{url}/v1/avatars", data=b"abc", headers={**AUTH, "content-type": "text/plain"},
                            timeout=60)
    assert_one_line_error(no_kind, 415)


def test_overload_gets_503_with_retry_after(served, ids):
    _, url = served
    job = {"text": TEXT, "language": "en", **ids, "seconds": 4.0}
    opened = []
    try:
        for _ in range(MAX_INFLIGHT):  # each open stream holds one admission until it is read to its end
            resp = requests.post(f"{url}/v1/renders/stream", json=job, headers=AUTH, stream=True, timeout=300)
            assert resp.status_code == 200
            opened.append(resp)
        refused = requests.post(f"{url}/v1/renders", json=job, headers=AUTH, timeout=60)
        assert "overloaded" in assert_one_line_error(refused, 503)
        assert refused.headers["Retry-After"] == "7"
    finally:
        for resp in opened:
            for _ in resp.iter_lines(chunk_size=1 << 20):
                pass
            resp.close()
    again = requests.post(f"{url}/v1/renders", json=job, headers=AUTH, timeout=300)
    assert again.status_code == 201, again.text


# --- load test -------------------------------------------------------------------------------------

def test_loadtest_writes_what_iris_bench_and_iris_report_read(served, tmp_path):
    from iris_pipeline.benchmark import schema
    from iris_pipeline.metrics import read_csv
    from iris_pipeline.report.results import load_results
    from iris_pipeline.serve.loadtest.runner import LoadTestPlan, run_loadtest

    _, url = served
    plan = LoadTestPlan(url=url, token=TOKEN, clip_lengths=(2.0,), concurrencies=(1, 2), clips_per_step=2,
                        step_seconds=120, out_dir=tmp_path / "lt")
    result = run_loadtest(plan, echo=lambda line: None)
    assert [(s["concurrency"], s["failed"]) for s in result["steps"]] == [(1, 0), (2, 0)]
    assert all(s["renders"] >= 2 + s["concurrency"] and s["clips_per_s"] > 0 for s in result["steps"])
    for c in (1, 2):
        rows = read_csv(tmp_path / "lt" / f"c{c}" / schema.BENCH_CSV)
        assert list(rows[0])[:len(schema.csv_columns([]))] == schema.csv_columns([])
        e2e = [r for r in rows if r["stage"] == schema.E2E]
        assert len(e2e) == 1 and e2e[0]["serve_concurrency"] == str(c) and "Frames=1" in e2e[0]["serve_replicas"]
        assert float(e2e[0]["first_chunk_ms_p50"]) < float(e2e[0]["latency_ms_p50"])
        loaded = load_results(tmp_path / "lt" / f"c{c}")
        assert [row.clip_s for row in loaded.e2e] == [2.0]
    assert len(read_csv(tmp_path / "lt" / schema.BENCH_CSV)) == 2 * len(rows)


# --- faults -------------------------------------------------------------------------------------------

def _replica_actor(deployment: str):
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith("SERVE_REPLICA::") and f"#{deployment}#" in actor["name"]:
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise AssertionError(f"no live replica of {deployment}")


def _stage_inflight(url: str, stage: str) -> float:
    for line in requests.get(f"{url}/metrics", headers=AUTH, timeout=30).text.splitlines():
        if line.startswith(f'iris_stage_inflight_calls{{stage="{stage}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_killing_a_replica_mid_load_loses_no_request(served, ids):
    cfg, url = served
    job = {"text": TEXT, "language": "en", **ids, "seconds": 6.0, "seed": 5}
    reference = assemble(stream_lines(url, job))
    outcome: dict = {}

    def stream() -> None:
        outcome["stream"] = stream_lines(url, job)

    def write() -> None:
        outcome["written"] = requests.post(f"{url}/v1/renders", json=job, headers=AUTH, timeout=300)

    workers = [threading.Thread(target=stream), threading.Thread(target=write)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 120
    while _stage_inflight(url, "wav2lip") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    ray.kill(_replica_actor("Frames"), no_restart=True)  # Serve's controller replaces it
    for worker in workers:
        worker.join(timeout=240)
        assert not worker.is_alive()

    last = outcome["stream"][-1]
    if "error" in last:  # a clear error, never a silent loss
        assert last["status"] == 503 and "replica was lost" in last["error"]
    else:  # retried on the new replica: the same clip
        assert last.get("done")
        speech, frames = assemble(outcome["stream"])
        assert torch.equal(speech, reference[0]) and torch.equal(frames, reference[1])
    written = outcome["written"]
    if written.status_code != 201:
        assert "replica was lost" in assert_one_line_error(written, 503)
        assert written.headers["Retry-After"]
    else:
        assert written.json()["frames"] == reference[1].shape[0]

    # the service recovers by itself, and no render leaves a partial file
    again = requests.post(f"{url}/v1/renders", json=job, headers=AUTH, timeout=300)
    assert again.status_code == 201, again.text
    results = Path(cfg.serving.results_dir)
    assert not [p.name for p in results.iterdir() if p.suffix not in (".mp4", ".vtt")]
    assert {p.stem for p in results.glob("*.mp4")} == {p.stem for p in results.glob("*.vtt")}
