"""Wav2Lip stage: face crops + 16-frame mel windows -> lip-synced crops pasted back into full frames.

Inference follows the official `inference.py`: output frame f (global index, `fps` frames per
second) reads the mel window starting at `min(int(f * (80 / fps)), total_mel_frames - 16)`; the
avatar's 96x96 crop has its lower half zeroed and is stacked with the unmasked crop as the
reference (6 channels, /255, BGR as the model was trained on OpenCV frames); the generated crop
x 255 is truncated to uint8, resized back to the face box by OpenCV (bilinear) and pasted into the
avatar frame, in that order, as the official loop does.

The generator runs through `backends.prepare_graph` (`backend`: eager, compile or tensorrt at the
stage's precision; settings under `options.backend`). A TensorRT INT8 engine is calibrated on the
stage's own inputs when `calibration_avatar` and `calibration_speech` are set: seeded batches of
frames built exactly as `render_frames` builds them (masked crops of that avatar, mel windows of that speech);
without them on the backend's seeded synthetic set (speech-like mel, smooth face-like crops).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from iris_pipeline import models
from iris_pipeline.audio import read_audio, wav2lip_mel
from iris_pipeline.avatar import (
    CROP_SIZE,
    Avatar,
    Progress,
    prepare_avatar,
)
from iris_pipeline.backends import GraphSpec, PreparedGraph, prepare_graph
from iris_pipeline.backends.stage_graphs import WAV2LIP_PROFILES, wav2lip_graph
from iris_pipeline.backends.tensorrt import tensorrt_unavailable_reason
from iris_pipeline.cache import DiskCache, default_cache_dir
from iris_pipeline.config import Wav2LipConfig
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.face_detectors import FaceDetector, make_face_detector
from iris_pipeline.stages.base import Stage
from iris_pipeline.stages.contracts import FramesRequest, FramesResult
from iris_pipeline.timebase import MEL_BINS, MEL_COLUMN_RATE, MEL_WINDOW, MEL_WINDOW_SECONDS, window_starts


def check_speech_length(total_mel_frames: int, fps: float) -> None:
    """Refuse speech too short for one video frame or one mel window, with one clear line."""
    # T mel frames come from (T - 1) * hop <= n < T * hop samples: report the middle of that range
    seconds = (total_mel_frames - 0.5) / MEL_COLUMN_RATE
    if seconds < 1.0 / fps:
        raise InputError(f"speech: about {seconds:.3f} s of audio ({total_mel_frames} mel frames) is shorter than one "
                         f"video frame (1/{fps:g} s)")
    if total_mel_frames < MEL_WINDOW:
        raise InputError(f"speech: about {seconds:.3f} s of audio gives {total_mel_frames} mel frames; Wav2Lip needs at "
                         f"least {MEL_WINDOW} ({MEL_WINDOW_SECONDS:.1f} s of audio)")


@dataclass(frozen=True)
class _FramePlan:
    """A checked `FramesRequest`: the local mel window start and avatar frame of each of its frames,
    and the output frames (copies of the avatar's) its generated crops are pasted into."""

    request: FramesRequest
    mel: torch.Tensor  # the request's mel, float32 on the stage's device
    local_starts: torch.Tensor  # [count] window starts, columns of `mel`
    sources: torch.Tensor  # [count] avatar frame of each output frame
    frames: torch.Tensor  # uint8 [count, H, W, 3]

    @property
    def count(self) -> int:
        return self.request.frame_count

    @classmethod
    def of(cls, request: FramesRequest, device: torch.device) -> _FramePlan:
        mel, fps = request.mel, float(request.fps)
        start, count, total = int(request.frame_start), int(request.frame_count), int(request.total_mel_frames)
        if mel.dim() != 2 or mel.shape[0] != MEL_BINS:
            raise ValueError(f"wav2lip: mel must be [80, M], got {tuple(mel.shape)}")
        if fps <= 0 or count < 0 or start < 0:
            raise ValueError(f"wav2lip: bad frame range start={start} count={count} fps={fps}")
        check_speech_length(total, fps)
        indices = torch.arange(start, start + count)
        local = window_starts(indices, fps, total) - int(request.mel_offset)
        if count and (int(local.min()) < 0 or int(local.max()) + MEL_WINDOW > mel.shape[1]):
            raise ValueError(f"wav2lip: mel chunk [{request.mel_offset}, {request.mel_offset + mel.shape[1]}) does "
                             f"not cover the windows of frames {start}..{start + count - 1}")
        sources = request.avatar.frame_indices(indices, fps)
        # advanced indexing copies: the avatar stays untouched
        return cls(request, mel.to(device, torch.float32), local, sources, request.avatar.frames[sources])


class Wav2LipStage(Stage):
    name: ClassVar[str] = "wav2lip"

    def __init__(self, config: Wav2LipConfig, size: str = "full", device: str | torch.device = "cpu",
                 seed: int = 0):
        super().__init__(config, size, device)
        self.options = config.options
        self.backend_options = config.options.backend
        self.seed = seed
        self._model: torch.nn.Module | None = None
        self._graph: PreparedGraph | None = None
        self.calibration_source: str | None = None  # INT8 only: "recorded" or "synthetic"
        self._detector: FaceDetector | None = None

    # --- models ---------------------------------------------------------------------------------

    @property
    def model(self) -> torch.nn.Module | None:
        """The generator module; assigning another one makes the next batch prepare its graph anew."""
        return self._model

    @model.setter
    def model(self, module: torch.nn.Module | None) -> None:
        self._model, self._graph = module, None

    def _prepare(self) -> None:
        model = models.get("wav2lip", self.config.checkpoint, size=self.size, seed=self.seed)
        self.model = model.to(device=self.device).eval()  # the backend casts it to the precision
        self._prepare_generator()

    def graph_spec(self, recorded: list[tuple[torch.Tensor, ...]] | None = None) -> GraphSpec:
        """The generator as a backend graph, its batch range covering `options.batch_size`."""
        lo, opt, hi = WAV2LIP_PROFILES[self.size]["batch"]
        batch = self.options.batch_size
        override = {"batch": (lo, min(opt, batch), batch)} if batch > hi else None
        spec = wav2lip_graph(self._model, self.size, override)
        spec.recorded_inputs = recorded
        return spec

    def _prepare_generator(self) -> PreparedGraph:
        recorded = None
        if self.config.backend == "tensorrt":
            reason = tensorrt_unavailable_reason(self.device)
            if reason is not None:  # before any calibration work
                raise ConfigError(f"wav2lip.backend: tensorrt is not usable here: {reason}")
            if self.config.precision == "int8":
                recorded = self.calibration_inputs()
        self._graph = prepare_graph(self.graph_spec(recorded), self.config, stage=self.name, device=self.device)
        if self.calibration_source is not None:
            self._graph.details["calibration"] = self.calibration_source
        return self._graph

    @property
    def generator(self) -> PreparedGraph:
        """The prepared generator graph (prepared on first use after the model changed)."""
        return self._graph if self._graph is not None else self._prepare_generator()

    def calibration_inputs(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Recorded INT8 calibration batches from the configured avatar and speech, else None (synthetic)."""
        opts = self.options
        if opts.calibration_avatar is None or opts.calibration_speech is None:
            self.calibration_source = "synthetic"
            return None
        int8 = self.backend_options.int8
        avatar = self.prepare_avatar(opts.calibration_avatar, fps=opts.calibration_fps)
        speech = read_audio(opts.calibration_speech, "wav2lip.options.calibration_speech")
        mel = wav2lip_mel(speech.samples.float(), speech.sample_rate)
        batch = self.graph_spec().profile.point("opt")["batch"]
        self.calibration_source = "recorded"
        return self.record_inputs(mel, avatar, opts.calibration_fps, int8.calibration_samples +
                                  int8.held_out_samples, batch, int8.seed)

    def record_inputs(self, mel: torch.Tensor, avatar: Avatar, fps: float, samples: int, batch: int,
                      seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`samples` batches of `batch` generator inputs (fp32, CPU), built exactly as `render_frames` builds them
        for frames of the speech whose whole mel [80, M] is `mel`, the frames drawn with `seed`."""
        total = int(mel.shape[1])
        check_speech_length(total, fps)
        video_frames = max(1, int(total / MEL_COLUMN_RATE * fps))
        generator = torch.Generator().manual_seed(seed)
        mel = mel.to(self.device, torch.float32)
        recorded = []
        for _ in range(samples):
            frames = torch.randint(0, video_frames, (batch,), generator=generator)
            windows = self._windows(mel, window_starts(frames, fps, total))
            crops = avatar.crops[avatar.frame_indices(frames, fps)]
            recorded.append(tuple(t.float().cpu() for t in self._model_inputs(windows, crops)))
        return recorded

    # --- avatars --------------------------------------------------------------------------------

    def face_detector(self) -> FaceDetector:
        if self._detector is None:
            opts = self.options
            self._detector = make_face_detector(opts.face_detector, opts.s3fd_checkpoint, self.device,
                                                opts.face_det_batch_size, size=self.size)
        return self._detector

    def prepare_avatar(self, path: str | Path, fps: float = 25.0, progress: Progress | None = None) -> Avatar:
        """The avatar's frames at `fps`, face boxes and crops (cached by content hash)."""
        opts = self.options
        cache = DiskCache(opts.cache_dir or default_cache_dir("avatars"), max_entries=opts.cache_entries)
        return prepare_avatar(path, fps, detector=self.face_detector(), cache=cache, pads=opts.pads,
                              smooth_window=opts.smooth_window, resize_factor=opts.resize_factor,
                              progress=progress)

    # --- inference ------------------------------------------------------------------------------

    @torch.no_grad()  # not inference_mode: callers may edit the returned frames in place
    def render_frames(self, requests: list[FramesRequest]) -> list[FramesResult]:
        """The frames of every request, one result per request in order.

        The frames of all requests, whichever job they belong to, go through the generator
        together in batches of up to `options.batch_size`; each frame reads only its own mel window
        and crop (the generator has no op across samples), so a request's frames do not depend on
        what shares its batch: bit for bit where the kernels do not change with the batch size (the
        CPU), within their rounding otherwise. Every request is checked before any work starts.
        """
        self.require_prepared("render_frames")
        plans = [_FramePlan.of(request, self.device) for request in requests]
        if not plans:
            return []
        # one flat sequence of frames: windows [N, 1, 80, 16] and crops uint8 [N, 96, 96, 3]
        windows = torch.cat([self._windows(p.mel, p.local_starts) for p in plans])
        crops = torch.cat([p.request.avatar.crops[p.sources] for p in plans])
        offsets = [0, *itertools.accumulate(plan.count for plan in plans)]  # plan i: frames [offsets[i], offsets[i+1])
        batch = self.options.batch_size
        for begin in range(0, offsets[-1], batch):
            end = min(offsets[-1], begin + batch)
            generated = self._generate(windows[begin:end], crops[begin:end])
            for plan, first in zip(plans, offsets, strict=False):  # the requests this batch overlaps
                lo, hi = max(begin, first), min(end, first + plan.count)
                if lo < hi:
                    self._paste(plan.frames[lo - first:hi - first], generated[lo - begin:hi - begin],
                                plan.request.avatar.boxes[plan.sources[lo - first:hi - first]])
        return [FramesResult(frames=plan.frames) for plan in plans]

    def _windows(self, mel: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """[B, 1, 80, 16] mel windows of `mel` [80, M] starting at the (local) columns `starts` [B]."""
        columns = starts.to(self.device)[:, None] + torch.arange(MEL_WINDOW, device=self.device)  # [B, 16]
        return mel[:, columns].permute(1, 0, 2).unsqueeze(1)

    def _model_inputs(self, windows: torch.Tensor, crops_rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mel windows and uint8 [B, 96, 96, 3] RGB crops -> the generator's fp32 (mel, faces [B, 6, 96, 96])."""
        faces = crops_rgb.to(self.device).flip(-1).permute(0, 3, 1, 2).float() / 255.0  # BGR
        masked = faces.clone()
        masked[:, :, CROP_SIZE // 2:] = 0  # the lower half (mouth) is what the model renders
        return windows.float(), torch.cat([masked, faces], dim=1)

    def _generate(self, windows: torch.Tensor, crops_rgb: torch.Tensor) -> torch.Tensor:
        """[B, 1, 80, 16] mel windows + uint8 [B, 96, 96, 3] RGB crops -> [B, 3, 96, 96] BGR in [0, 1]."""
        return self.generator(*self._model_inputs(windows, crops_rgb))  # the graph casts to its dtype

    @staticmethod
    def _paste(frames: torch.Tensor, crops_bgr: torch.Tensor, boxes: torch.Tensor) -> None:
        """Write each generated crop into its face box of `frames` (uint8, CPU) in place.

        In the official order: the crop x 255 is truncated to uint8 first, then OpenCV resizes the
        uint8 image to the box (bilinear, OpenCV's fixed-point rounding).
        """
        import cv2

        patches = (crops_bgr.float() * 255.0).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # BGR
        for i, (y1, y2, x1, x2) in enumerate(boxes.tolist()):
            resized = cv2.resize(patches[i], (x2 - x1, y2 - y1))
            frames[i, y1:y2, x1:x2] = torch.from_numpy(resized[..., ::-1].copy())  # to RGB
