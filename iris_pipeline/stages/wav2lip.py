"""Wav2Lip stage: face crops + 16-frame mel windows -> lip-synced crops pasted back into full frames.

Inference follows the official `inference.py`: output frame f (global index, `fps` frames per
second) reads the mel window starting at `min(int(f * (80 / fps)), total_mel_frames - 16)`; the
avatar's 96x96 crop has its lower half zeroed and is stacked with the unmasked crop as the
reference (6 channels, /255, BGR as the model was trained on OpenCV frames); the generated crop is
resized back to the face box (bilinear) and pasted into the avatar frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from iris_pipeline import models
from iris_pipeline.avatar import (
    CROP_SIZE,
    DEFAULT_PADS,
    DEFAULT_SMOOTH_WINDOW,
    Avatar,
    Progress,
    prepare_avatar,
)
from iris_pipeline.cache import DiskCache, default_cache_dir
from iris_pipeline.config import StageConfig
from iris_pipeline.config import parse_options as config_options
from iris_pipeline.errors import InputError
from iris_pipeline.face_detectors import FaceDetector, make_face_detector
from iris_pipeline.stages.base import Stage

MEL_STEP = 16  # mel frames per window
MEL_FRAMES_PER_SECOND = 80.0
MEL_BINS = 80


class Wav2LipOptions(BaseModel):
    """`wav2lip.options` of the pipeline config."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=128, ge=1, le=4096, description="frames per generator call")
    face_detector: Literal["auto", "s3fd", "cascade"] = "auto"
    s3fd_checkpoint: Path | None = None
    face_det_batch_size: int = Field(default=16, ge=1, le=1024)
    pads: tuple[int, int, int, int] = Field(default=DEFAULT_PADS, description="top, bottom, left, right")
    smooth_window: int = Field(default=DEFAULT_SMOOTH_WINDOW, ge=1, le=100, description="1 = no smoothing")
    resize_factor: int = Field(default=1, ge=1, le=16)
    cache_dir: Path | None = None
    cache_entries: int = Field(default=16, ge=1, le=10000)


def parse_options(options: dict[str, Any]) -> Wav2LipOptions:
    return config_options(options=options, model=Wav2LipOptions, prefix="wav2lip.options")


def mel_window_starts(frames: torch.Tensor, fps: float, total_mel_frames: int) -> torch.Tensor:
    """Global start column of each frame's 16-frame mel window, with the official arithmetic:
    `int(f * (80. / fps))`, clamped so the window ends at the last mel frame."""
    starts = torch.floor(frames.to(torch.float64) * (MEL_FRAMES_PER_SECOND / float(fps))).long()
    return torch.clamp(starts, max=total_mel_frames - MEL_STEP)


def check_speech_length(total_mel_frames: int, fps: float) -> None:
    """Refuse speech too short for one video frame or one mel window, with one clear line."""
    # T mel frames come from (T - 1) * hop <= n < T * hop samples: report the middle of that range
    seconds = (total_mel_frames - 0.5) / MEL_FRAMES_PER_SECOND
    if seconds < 1.0 / fps:
        raise InputError(f"speech: about {seconds:.3f} s of audio ({total_mel_frames} mel frames) is shorter than one "
                         f"video frame (1/{fps:g} s)")
    if total_mel_frames < MEL_STEP:
        raise InputError(f"speech: about {seconds:.3f} s of audio gives {total_mel_frames} mel frames; Wav2Lip needs at "
                         f"least {MEL_STEP} ({MEL_STEP / MEL_FRAMES_PER_SECOND:.1f} s of audio)")


class Wav2LipStage(Stage):
    name: ClassVar[str] = "wav2lip"
    inputs: ClassVar[tuple[str, ...]] = (
        "mel", "mel_offset", "total_mel_frames", "avatar", "frame_start", "frame_count", "fps")
    outputs: ClassVar[tuple[str, ...]] = ("frames",)

    def __init__(self, config: StageConfig, size: str = "full", device: str | torch.device = "cpu",
                 seed: int = 0):
        super().__init__(config, size, device)
        self.options = parse_options(config.options)
        self.seed = seed
        self.model: torch.nn.Module | None = None
        self._detector: FaceDetector | None = None

    # --- models ---------------------------------------------------------------------------------

    def _prepare(self) -> None:
        if self.config.checkpoint is not None:
            model = models.load("wav2lip", self.config.checkpoint, size=self.size)
        else:
            model = models.build("wav2lip", size=self.size, seed=self.seed)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()

    # --- avatars --------------------------------------------------------------------------------

    def face_detector(self) -> FaceDetector:
        if self._detector is None:
            opts = self.options
            self._detector = make_face_detector(opts.face_detector, opts.s3fd_checkpoint, self.device,
                                                opts.face_det_batch_size)
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
    def run(self, **inputs: Any) -> dict[str, Any]:
        self.check_inputs(inputs)
        mel: torch.Tensor = inputs["mel"]
        mel_offset, total = int(inputs["mel_offset"]), int(inputs["total_mel_frames"])
        avatar: Avatar = inputs["avatar"]
        frame_start, frame_count, fps = int(inputs["frame_start"]), int(inputs["frame_count"]), float(inputs["fps"])
        if mel.dim() != 2 or mel.shape[0] != MEL_BINS:
            raise ValueError(f"wav2lip: mel must be [80, M], got {tuple(mel.shape)}")
        if fps <= 0 or frame_count < 0 or frame_start < 0:
            raise ValueError(f"wav2lip: bad frame range start={frame_start} count={frame_count} fps={fps}")
        check_speech_length(total, fps)

        frames = torch.arange(frame_start, frame_start + frame_count)
        local = mel_window_starts(frames, fps, total) - mel_offset
        if frame_count and (int(local.min()) < 0 or int(local.max()) + MEL_STEP > mel.shape[1]):
            raise ValueError(f"wav2lip: mel chunk [{mel_offset}, {mel_offset + mel.shape[1]}) does not cover the "
                             f"windows of frames {frame_start}..{frame_start + frame_count - 1}")
        sources = avatar.frame_indices(frames, fps)
        out = avatar.frames[sources]  # advanced indexing copies: the avatar stays untouched
        mel = mel.to(self.device, torch.float32)
        steps = torch.arange(MEL_STEP, device=self.device)
        for begin in range(0, frame_count, self.options.batch_size):
            end = min(frame_count, begin + self.options.batch_size)
            columns = local[begin:end].to(self.device)[:, None] + steps  # [B, 16]
            windows = mel[:, columns].permute(1, 0, 2).unsqueeze(1)  # [B, 1, 80, 16]
            crops = self._generate(windows, avatar.crops[sources[begin:end]])
            self._paste(out[begin:end], crops, avatar.boxes[sources[begin:end]])
        return {"frames": out}

    def _generate(self, windows: torch.Tensor, crops_rgb: torch.Tensor) -> torch.Tensor:
        """[B, 1, 80, 16] mel windows + uint8 [B, 96, 96, 3] RGB crops -> [B, 3, 96, 96] BGR in [0, 1]."""
        faces = crops_rgb.to(self.device).flip(-1).permute(0, 3, 1, 2).to(self.dtype) / 255.0  # BGR
        masked = faces.clone()
        masked[:, :, CROP_SIZE // 2:] = 0  # the lower half (mouth) is what the model renders
        assert self.model is not None
        return self.model(windows.to(self.dtype), torch.cat([masked, faces], dim=1))

    @staticmethod
    def _paste(frames: torch.Tensor, crops_bgr: torch.Tensor, boxes: torch.Tensor) -> None:
        """Resize each generated crop to its face box and write it into `frames` (uint8, CPU) in place."""
        unique, groups = torch.unique(boxes, dim=0, return_inverse=True)
        for g, (y1, y2, x1, x2) in enumerate(unique.tolist()):
            members = torch.nonzero(groups == g, as_tuple=True)[0]
            patch = F.interpolate(crops_bgr[members.to(crops_bgr.device)].float(), size=(y2 - y1, x2 - x1),
                                  mode="bilinear", align_corners=False)
            patch = (patch * 255.0).clamp_(0, 255).to(torch.uint8).flip(1).permute(0, 2, 3, 1).cpu()
            frames[members, y1:y2, x1:x2] = patch
