"""The HTTP API (a FastAPI ingress on Ray Serve) and the application builder.

Every endpoint but the health probes needs `Authorization: Bearer <token>` (compared in constant
time). Uploads are raw request bodies (no multipart, no pickle), size-limited and decoded with the
CLI's checks. Errors are one line of JSON: `{"error": "..."}`.

    GET  /healthz, /readyz          liveness / readiness (no token)
    GET  /metrics                   Prometheus: per-stage latency and in-flight calls, admitted renders
    GET  /openapi.json, /docs       the API description
    POST /v1/voices?transcript=&language=    body: a sound file        -> {"voice_id", ...}
    POST /v1/avatars?filename=face.jpg       body: an image or video   -> {"avatar_id", ...}
    POST /v1/renders                JSON job -> the clip, written: {"render_id", "mp4", "vtt", ...}
    GET  /v1/renders/{id}.mp4 | .vtt
    POST /v1/renders/stream         JSON job -> NDJSON, one line per chunk as it is ready, then a
                                    "done" line (or an "error" line)

The ingress runs the single-machine `Pipeline` with remote stages (see `remote`), so a render
here runs the same code as `iris render`.
"""


import asyncio
import base64
import hmac
import json
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from iris_pipeline.config import PipelineConfig, describe_validation_error, parse_pipeline_config
from iris_pipeline.errors import ConfigError, InputError, IrisError
from iris_pipeline.serve.config import DEPLOYMENT_GROUPS, DeploymentSettings, gpu_share, read_token
from iris_pipeline.serve.deployments import Frames, LipsyncMel, Registry, Speech, UnknownId, VoicePrompt
from iris_pipeline.serve.remote import AvatarRef, StageUnavailable, remote_stage_factory, unwrap

APP_NAME = "iris"
INGRESS = "Ingress"
HEALTH_PATHS = ("/healthz", "/readyz")
AVATAR_SUFFIXES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/bmp": ".bmp",
                   "video/mp4": ".mp4", "video/quicktime": ".mov", "video/webm": ".webm"}
_LATENCY_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class ApiError(Exception):
    """An HTTP error with one line of text."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


api = FastAPI(title="iris_pipeline", summary="Lip-synced talking-avatar clips from text, a voice and a face",
              openapi_url=None, docs_url=None, redoc_url=None)  # served below, behind the token


@api.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.headers)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    more = f" [+{len(exc.errors()) - 1} more problem(s)]" if len(exc.errors()) > 1 else ""
    return error_response(422, f"{where}: {first.get('msg', 'invalid')}{more}")


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


class RenderRequest(BaseModel):
    """One clip: the script, its language, a registered voice and avatar."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=20000)
    language: str = Field(default="en", max_length=8)
    voice_id: str = Field(min_length=1, max_length=64)
    avatar_id: str = Field(min_length=1, max_length=64)
    seconds: float | None = Field(default=None, gt=0, le=3600, description="impose the speech length")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)


_JSON_LIMIT_BYTES = 256 * 1024  # a render request is text and ids
_RENDER_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": RenderRequest.model_json_schema()}}}}


def engine_config(config: PipelineConfig) -> PipelineConfig:
    """The ingress's pipeline: the chain's arithmetic runs on the host; the stages' devices are the
    replicas' business."""
    cfg = config.model_copy(deep=True)
    cfg.device = "cpu"
    for stage in cfg.stages:
        cfg.stage(stage).device = None
    return cfg


class ResultStore:
    """Finished renders on disk (mp4 + vtt, each written whole or not at all), the newest kept."""

    def __init__(self, directory: Path, keep: int):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep = keep

    def paths(self, render_id: str) -> tuple[Path, Path]:
        if not render_id.isalnum() or len(render_id) != 32:
            raise ApiError(404, f"render {render_id!r}: unknown")
        return self.directory / f"{render_id}.mp4", self.directory / f"{render_id}.vtt"

    def prune(self) -> None:
        clips = sorted(self.directory.glob("*.mp4"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in clips[self.keep:]:
            old.unlink(missing_ok=True)
            old.with_suffix(".vtt").unlink(missing_ok=True)


def _ndjson(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def chunk_line(chunk: Any) -> dict[str, Any]:
    """One streamed chunk: speech (float32 LE) and frames (uint8) in base64, with their places."""
    frames = chunk.frames.numpy()
    return {"chunk": chunk.index, "last": chunk.last, "speech_start": chunk.speech_start,
            "speech": base64.b64encode(chunk.speech.numpy().astype("<f4").tobytes()).decode(),
            "frame_start": chunk.frame_start, "frames_shape": list(frames.shape),
            "frames": base64.b64encode(np.ascontiguousarray(frames).tobytes()).decode(),
            "words": [{"word": w.word, "start_s": w.start_s, "end_s": w.end_s} for w in chunk.words]}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, UnknownId):
        return 404
    if isinstance(exc, StageUnavailable):
        return 503
    if isinstance(exc, InputError | ConfigError):
        return 400
    return 500


class _Metrics:
    """Prometheus figures of this ingress replica (Serve's own come from Ray's metrics endpoint)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.stage_latency = Histogram("iris_stage_latency_seconds", "stage call latency seen by the ingress",
                                       ["stage"], buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.stage_inflight = Gauge("iris_stage_inflight_calls", "stage calls waiting on a deployment (queue depth)",
                                    ["stage"], registry=self.registry)
        self.renders_inflight = Gauge("iris_renders_inflight", "admitted renders not yet finished",
                                      registry=self.registry)
        self.renders = Counter("iris_renders_total", "renders by outcome", ["outcome"], registry=self.registry)
        self.render_latency = Histogram("iris_render_latency_seconds", "submit to last chunk",
                                        buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.first_chunk = Histogram("iris_render_first_chunk_seconds", "submit to first chunk",
                                     buckets=_LATENCY_BUCKETS_S, registry=self.registry)

    def observe_stage(self, stage: str, ms: float) -> None:
        self.stage_latency.labels(stage=stage).observe(ms / 1e3)

    def stage_calls(self, stage: str, delta: int) -> None:
        self.stage_inflight.labels(stage=stage).inc(delta)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# --- deployment options (defined before Ingress: Serve serialises the class where it is defined) ---

def chain_on_gpus(config: PipelineConfig) -> bool:
    """`num_gpus: auto` gives GPU shares unless the chain is told to run on the CPU."""
    return config.device != "cpu"


def deployment_options(settings: DeploymentSettings, group: str, on_gpus: bool) -> dict[str, Any]:
    """Serve options of one deployment from its settings (the same in code and in the emitted YAML)."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": settings.num_cpus, "num_gpus": gpu_share(settings, group, on_gpus)},
        "max_ongoing_requests": settings.max_ongoing_requests,
        "max_queued_requests": settings.max_queued_requests,
    }
    if settings.autoscaling is not None:
        options["autoscaling_config"] = settings.autoscaling.model_dump()
    else:
        options["num_replicas"] = settings.num_replicas
    return options


def all_deployment_options(config: PipelineConfig) -> dict[str, dict[str, Any]]:
    """Deployment name -> Serve options, for every deployment of the application."""
    serving, on_gpus = config.serving, chain_on_gpus(config)
    out = {name: deployment_options(getattr(serving, attr), attr, on_gpus)
           for name, (attr, _) in DEPLOYMENT_GROUPS.items()}
    out["Registry"] = deployment_options(serving.registry, "registry", on_gpus)
    out["Registry"]["num_replicas"] = 1  # one shared store
    out["Registry"].pop("autoscaling_config", None)
    out[INGRESS] = deployment_options(serving.ingress, "ingress", on_gpus)
    return out


def replica_plan(config: PipelineConfig) -> dict[str, str]:
    """Deployment name -> its replica count, or `min-max` under autoscaling (the load test's context)."""
    plan = {}
    for name, options in all_deployment_options(config).items():
        auto = options.get("autoscaling_config")
        plan[name] = f"{auto['min_replicas']}-{auto['max_replicas']}" if auto else str(options["num_replicas"])
    return plan


@serve.deployment(name=INGRESS)
@serve.ingress(api)
class Ingress:
    def __init__(self, pipeline_config: dict[str, Any], registry: Any, voice: Any, speech: Any, lipsync: Any,
                 frames: Any):
        from iris_pipeline.cache import default_cache_dir
        from iris_pipeline.pipeline import Pipeline

        self.config = parse_pipeline_config(pipeline_config, source="serving pipeline config")
        self.serving = self.config.serving
        self._token = read_token(self.serving.token_file, self.serving.token_env).encode()
        self.registry, self.frames = registry, frames
        self.metrics = _Metrics()
        handles = {"VoicePrompt": voice, "Speech": speech, "LipsyncMel": lipsync, "Frames": frames}
        factory = remote_stage_factory(handles, self.serving.stage_retries, self.metrics.observe_stage,
                                       self.metrics.stage_calls)
        self.pipeline = Pipeline(engine_config(self.config), stage_factory=factory)
        self.pipeline.prepare()
        self.results = ResultStore(self.serving.results_dir or default_cache_dir("serve-results"),
                                   self.serving.keep_results)
        self._admitted = 0
        self._admit_lock = threading.Lock()

    def __del__(self) -> None:  # Serve's hook when the replica is shut down
        pipeline = getattr(self, "pipeline", None)
        if pipeline is not None:
            pipeline.close()

    # --- access -----------------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)",
                           {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), self._token):
            raise ApiError(401, "wrong bearer token", {"WWW-Authenticate": "Bearer"})

    def _admit(self) -> None:
        with self._admit_lock:
            if self._admitted >= self.serving.max_inflight_renders:
                raise ApiError(503, f"overloaded: {self._admitted} renders in progress on this replica; "
                                    f"retry in {self.serving.retry_after_s} s",
                               {"Retry-After": str(self.serving.retry_after_s)})
            self._admitted += 1
            self.metrics.renders_inflight.set(self._admitted)

    def _release(self, outcome: str) -> None:
        with self._admit_lock:
            self._admitted -= 1
            self.metrics.renders_inflight.set(self._admitted)
        self.metrics.renders.labels(outcome=outcome).inc()

    async def _body(self, request: Request, limit: int | None = None) -> bytes:
        """The request body, refused with 413 past the limit (before reading it when it says its length)."""
        limit = limit or self.serving.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"upload of {int(declared)} bytes is over the limit of {limit} bytes")
        parts, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise ApiError(413, f"upload is over the limit of {limit} bytes")
            parts.append(part)
        if not size:
            raise ApiError(400, "empty upload: send the file as the request body")
        return b"".join(parts)

    # --- health, metrics, API description -----------------------------------------------------------

    @api.get("/healthz", include_in_schema=False)
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", include_in_schema=False)
    async def readyz(self) -> JSONResponse:
        """Ready when this replica is up (Serve routes to it only then) and the shared registry answers."""
        try:
            await asyncio.wait_for(self.registry.ping.remote(), timeout=5)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", said in one line
            return JSONResponse({"ready": False, "error": _one_line(unwrap(exc))}, status_code=503)
        return JSONResponse({"ready": True})

    @api.get("/metrics", include_in_schema=False)
    async def prometheus(self, request: Request) -> PlainTextResponse:
        self._authorize(request)
        from prometheus_client import CONTENT_TYPE_LATEST

        return PlainTextResponse(self.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> JSONResponse:
        self._authorize(request)
        return JSONResponse(api.openapi())

    @api.get("/docs", include_in_schema=False)
    async def docs(self, request: Request) -> Any:
        self._authorize(request)
        return get_swagger_ui_html(openapi_url="/openapi.json", title="iris_pipeline API")

    @api.get("/v1/info", summary="What this service runs: size, device, config hash, deployments' scaling")
    async def info(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        return {"size": self.config.size, "device": self.config.device, "config_hash": self.config.config_hash(),
                "replicas": replica_plan(self.config), "config": self.config.model_dump(mode="json")}

    # --- voices and avatars -----------------------------------------------------------------------

    @api.post("/v1/voices", status_code=201, summary="Register a reference voice (sound file as the body)",
              openapi_extra={"parameters": [
                  {"name": "transcript", "in": "query", "required": True, "schema": {"type": "string"},
                   "description": "the words spoken in the recording"},
                  {"name": "language", "in": "query", "schema": {"type": "string", "default": "en"}}],
                  "requestBody": {"required": True, "content": {"audio/*": {"schema": {"type": "string",
                                                                                      "format": "binary"}}}}})
    async def add_voice(self, request: Request) -> dict[str, Any]:
        self._authorize(request)  # before anything of the request is read or checked
        from iris_pipeline.chunking import SPEECH_RATES

        transcript = request.query_params.get("transcript", "")
        language = request.query_params.get("language", "en")
        if language not in SPEECH_RATES:
            raise ApiError(400, f"language {language!r}: not supported; supported: {', '.join(sorted(SPEECH_RATES))}")
        if not transcript.strip():
            raise ApiError(400, "transcript: empty; give the words spoken in the recording")
        data = await self._body(request)
        wave = await asyncio.to_thread(self._decode_voice, data)
        voice_id = await self.registry.put_voice.remote(wave, transcript.strip(), language)
        return {"voice_id": voice_id, "seconds": round(wave.seconds, 3), "sample_rate": wave.sample_rate}

    def _decode_voice(self, data: bytes) -> Any:
        """The CLI's checks on a reference recording: readable, finite, not silent, length in range."""
        from iris_pipeline.audio import check_waveform, read_audio
        from iris_pipeline.pipeline import MIN_REFERENCE_SECONDS

        with tempfile.TemporaryDirectory(prefix="iris-upload-") as tmp:
            path = Path(tmp) / "voice"
            path.write_bytes(data)
            try:
                wave = read_audio(path, name="voice upload")
            except InputError as exc:
                raise ApiError(400, str(exc).replace(f" {path}", "")) from None
        try:
            check_waveform(wave, name="voice upload", min_seconds=MIN_REFERENCE_SECONDS,
                           max_seconds=self.config.max_reference_seconds)
        except InputError as exc:
            raise ApiError(400, str(exc)) from None
        return wave

    @api.post("/v1/avatars", status_code=201, summary="Register an avatar (image or video file as the body)",
              openapi_extra={"parameters": [
                  {"name": "filename", "in": "query", "schema": {"type": "string"},
                   "description": "names the file type when the content-type does not (e.g. face.jpg)"}],
                  "requestBody": {"required": True, "content": {"image/*": {"schema": {"type": "string",
                                                                                      "format": "binary"}},
                                                                "video/*": {"schema": {"type": "string",
                                                                                      "format": "binary"}}}}})
    async def add_avatar(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        suffix = self._avatar_suffix(request, request.query_params.get("filename"))
        data = await self._body(request)
        avatar_id = await self.registry.put_avatar.remote(data, suffix)
        try:
            count, height, width = await self.frames.check_avatar.remote(avatar_id)
        except Exception as exc:
            await self.registry.drop_avatar.remote(avatar_id)
            cause = unwrap(exc)
            if isinstance(cause, InputError):
                raise ApiError(400, "avatar upload: " + _one_line(cause).split(": ", 1)[-1]) from None
            raise
        await self.registry.avatar_checked.remote(avatar_id, (count, height, width))
        return {"avatar_id": avatar_id, "frames": count, "height": height, "width": width}

    @staticmethod
    def _avatar_suffix(request: Request, filename: str | None) -> str:
        from iris_pipeline.avatar import IMAGE_SUFFIXES

        if filename:
            suffix = Path(filename).suffix.lower()
            if suffix in IMAGE_SUFFIXES or suffix in AVATAR_SUFFIXES.values():
                return suffix
            raise ApiError(400, f"filename {filename!r}: not an image or video file name")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind in AVATAR_SUFFIXES:
            return AVATAR_SUFFIXES[kind]
        raise ApiError(415, f"content-type {kind or '(none)'!r}: send an image or video "
                            f"({', '.join(sorted(AVATAR_SUFFIXES))}) or give ?filename=")

    # --- renders ------------------------------------------------------------------------------------

    async def _render_request(self, request: Request) -> RenderRequest:
        """The JSON job, checked after the token (FastAPI's own parsing would run before it)."""
        body = await self._body(request, limit=_JSON_LIMIT_BYTES)
        try:
            return RenderRequest.model_validate_json(body)
        except ValidationError as exc:
            raise ApiError(422, describe_validation_error(exc, allowed_keys=RenderRequest.model_fields)) from None

    async def _job(self, body: RenderRequest) -> Any:
        from iris_pipeline.pipeline import Job

        try:
            reference, transcript, _ = await self.registry.voice.remote(body.voice_id)
            _, height, width = await self.registry.avatar_shape.remote(body.avatar_id)
        except Exception as exc:
            cause = unwrap(exc)
            raise ApiError(_status_of(cause), _one_line(cause)) from None
        job = Job(text=body.text, language=body.language, reference=reference, transcript=transcript,
                  avatar=AvatarRef(body.avatar_id, height, width), seconds=body.seconds,
                  seed=self.config.seed if body.seed is None else body.seed)
        try:
            self.pipeline.check_job(job)
        except IrisError as exc:
            raise ApiError(400, _one_line(exc)) from None
        return job

    @api.post("/v1/renders", status_code=201, summary="Render a clip; answers when the mp4 and vtt are written",
              openapi_extra=_RENDER_BODY)
    async def render(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        job = await self._job(await self._render_request(request))
        self._admit()
        outcome = "error"
        try:
            answer = await asyncio.to_thread(self._write_clip, job)
            outcome = "ok"
            return answer
        except ApiError:
            raise
        except Exception as exc:
            cause = unwrap(exc)
            status = _status_of(cause)
            headers = {"Retry-After": str(self.serving.retry_after_s)} if status == 503 else None
            raise ApiError(status, _one_line(cause), headers) from None
        finally:
            self._release(outcome)

    def _write_clip(self, job: Any) -> dict[str, Any]:
        """Chunks into the mp4 as they come (frames dropped once written), the vtt at the end; both
        appear only when complete."""
        from iris_pipeline.timebase import CODEC_RATE
        from iris_pipeline.video import Mp4Writer, close_with_subtitles

        render_id = uuid.uuid4().hex
        mp4, _ = self.results.paths(render_id)
        handle = self.pipeline.submit(job)
        writer = Mp4Writer(mp4, self.config.video.fps, job.avatar.width, job.avatar.height, sample_rate=CODEC_RATE)
        written, frames = [], 0
        try:
            for chunk in handle.chunks():
                if chunk.frames.shape[0]:
                    writer.write_frames(chunk.frames.numpy())
                writer.write_audio(chunk.speech)
                frames += chunk.frames.shape[0]
                chunk.frames = chunk.frames[:0]
                written.append(chunk)
            result = handle.assemble(written)
            close_with_subtitles(writer, result.words)
        except BaseException:
            writer.abort()
            raise
        self.metrics.render_latency.observe(result.latency_ms / 1e3)
        self.metrics.first_chunk.observe(result.first_chunk_ms / 1e3)
        self.results.prune()
        return {"render_id": render_id, "mp4": f"/v1/renders/{render_id}.mp4", "vtt": f"/v1/renders/{render_id}.vtt",
                "seconds": round(result.speech.seconds, 3), "frames": frames, "fps": self.config.video.fps,
                "chunks": result.chunks, "latency_ms": round(result.latency_ms, 1),
                "first_chunk_ms": round(result.first_chunk_ms, 1), "stage_ms": jsonable_encoder(result.stage_ms)}

    @api.get("/v1/renders/{name}", summary="A finished render's mp4 or vtt")
    async def result_file(self, request: Request, name: str) -> FileResponse:
        self._authorize(request)
        render_id, _, kind = name.partition(".")
        if kind not in ("mp4", "vtt"):
            raise ApiError(404, f"{name!r}: ask for <render_id>.mp4 or <render_id>.vtt")
        mp4, vtt = self.results.paths(render_id)
        path = mp4 if kind == "mp4" else vtt
        if not path.is_file():
            raise ApiError(404, f"render {render_id!r}: unknown or no longer kept")
        return FileResponse(path, media_type="video/mp4" if kind == "mp4" else "text/vtt")

    @api.post("/v1/renders/stream", summary="Render a clip, streaming its chunks (NDJSON) as each is ready",
              openapi_extra=_RENDER_BODY)
    async def render_stream(self, request: Request) -> StreamingResponse:
        self._authorize(request)
        job = await self._job(await self._render_request(request))
        self._admit()
        try:
            handle = self.pipeline.submit(job)
        except BaseException:
            self._release("error")
            raise
        return StreamingResponse(self._stream(handle), media_type="application/x-ndjson")

    def _stream(self, handle: Any) -> Iterator[bytes]:
        """Run by Starlette in a worker thread: each chunk goes out as soon as the pipeline hands it over."""
        from iris_pipeline.subtitles import webvtt

        outcome, written = "error", []
        try:
            for chunk in handle.chunks():
                yield _ndjson(chunk_line(chunk))
                chunk.frames = chunk.frames[:0]
                written.append(chunk)
            result = handle.assemble(written)
            self.metrics.render_latency.observe(result.latency_ms / 1e3)
            self.metrics.first_chunk.observe(result.first_chunk_ms / 1e3)
            outcome = "ok"
            yield _ndjson({"done": True, "chunks": result.chunks, "seconds": result.speech.seconds,
                           "latency_ms": result.latency_ms, "first_chunk_ms": result.first_chunk_ms,
                           "stage_ms": result.stage_ms, "vtt": webvtt(result.words)})
        except Exception as exc:
            cause = unwrap(exc)
            yield _ndjson({"error": _one_line(cause), "status": _status_of(cause)})
        finally:
            self._release(outcome)


# --- the application ------------------------------------------------------------------------------

def build_app(config: PipelineConfig) -> Any:
    """The Serve application of the chain."""
    data = config.model_dump(mode="json")
    opts = all_deployment_options(config)
    registry = Registry.options(**opts["Registry"]).bind(config.serving.registry_entries)
    return Ingress.options(**opts[INGRESS]).bind(
        data, registry,
        VoicePrompt.options(**opts["VoicePrompt"]).bind(data),
        Speech.options(**opts["Speech"]).bind(data),
        LipsyncMel.options(**opts["LipsyncMel"]).bind(data),
        Frames.options(**opts["Frames"]).bind(data, registry),
    )


def build(args: dict[str, Any]) -> Any:
    """Application builder for a Serve config file (`import_path: iris_pipeline.serve.app:build`);
    `args.pipeline` is the pipeline config (as `iris config show` prints it)."""
    return build_app(parse_pipeline_config(dict(args or {}).get("pipeline", {}), source="args.pipeline"))


