"""Face detectors for avatar preparation: S3FD (with its checkpoint) or a bundled cascade (no download).

Every detector maps RGB frames to one face box per frame, (x1, y1, x2, y2) in pixels, or None where
it finds no face. `cache_id` says which detector (and which weights) produced the boxes, so cached
avatars are never reused across detectors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from iris_pipeline.errors import ConfigError

Box = tuple[int, int, int, int]  # x1, y1, x2, y2

# Cascades run on a copy no larger than this (longest side); boxes are scaled back.
_CASCADE_MAX_SIDE = 640


class FaceDetector(Protocol):
    cache_id: str

    def detect(self, frames_rgb: np.ndarray) -> list[Box | None]:
        """uint8 [B, H, W, 3] RGB frames -> the best face box of each frame, or None."""


class S3FDDetector:
    """The official detector: the whole frame at native resolution, best-scoring face after NMS."""

    def __init__(self, model: torch.nn.Module, batch_size: int = 16, cache_id: str = "s3fd"):
        self.model = model.eval()
        self.batch_size = batch_size
        self.cache_id = cache_id

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 16,
                        size: str = "full") -> S3FDDetector:
        from iris_pipeline import models
        from iris_pipeline.cache import content_hash

        model = models.load("s3fd", path, size=size).to(device)
        # "rgb": boxes of the official RGB input; avatars cached from the former BGR input are not reused
        return cls(model, batch_size, cache_id=f"s3fd:rgb:{content_hash(Path(path))[:16]}")

    def detect(self, frames_rgb: np.ndarray) -> list[Box | None]:
        from iris_pipeline.models.s3fd import best_face_box, detect_faces

        device = next(self.model.parameters()).device
        boxes: list[Box | None] = []
        for start in range(0, len(frames_rgb), self.batch_size):
            # RGB, as the official pipeline feeds it (it flips OpenCV's BGR frames first)
            batch = torch.from_numpy(np.ascontiguousarray(frames_rgb[start:start + self.batch_size]))
            boxes.extend(best_face_box(faces) for faces in detect_faces(self.model, batch.to(device)))
        return boxes


def _opencv_haar_path() -> str | None:
    """OpenCV's bundled frontal-face Haar cascade, where this OpenCV build still ships it (4.x)."""
    import cv2

    data = getattr(cv2, "data", None)
    folder = getattr(data, "haarcascades", None)
    if not folder or not hasattr(cv2, "CascadeClassifier"):
        return None
    path = os.path.join(folder, "haarcascade_frontalface_default.xml")
    return path if os.path.isfile(path) else None


def _skimage_lbp_path() -> str | None:
    """scikit-image's bundled copy of OpenCV's LBP frontal-face cascade."""
    try:
        import skimage.data
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(skimage.data.__file__), "lbpcascade_frontalface_opencv.xml")
    return path if os.path.isfile(path) else None


class CascadeDetector:
    """A classic boosted-cascade frontal-face detector shipped inside an installed package.

    OpenCV 4.x ships its Haar cascade (used first); OpenCV 5 moved cascades out of the main
    package, so there the LBP cascade bundled with scikit-image is used. The largest face wins.
    """

    def __init__(self) -> None:
        haar = _opencv_haar_path()
        if haar is not None:
            import cv2

            classifier = cv2.CascadeClassifier(haar)
            self.cache_id = "cascade:opencv-haar-frontalface-default"
            self._find: Callable[[np.ndarray, int], list[Box]] = (
                lambda gray, min_side: [tuple(int(v) for v in (x, y, x + w, y + h)) for x, y, w, h in
                                        classifier.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                                                    minSize=(min_side, min_side))])
            return
        lbp = _skimage_lbp_path()
        if lbp is None:
            raise ConfigError(
                "wav2lip.options.face_detector: no bundled face cascade is available (this OpenCV has no "
                "Haar cascades and scikit-image is not installed); install scikit-image or give an S3FD "
                "checkpoint (wav2lip.options.s3fd_checkpoint)")
        from skimage.feature import Cascade

        cascade = Cascade(lbp)
        self.cache_id = "cascade:skimage-lbp-frontalface"

        def find(gray: np.ndarray, min_side: int) -> list[Box]:
            found = cascade.detect_multi_scale(img=gray.astype(np.float32) / 255.0, scale_factor=1.2,
                                               step_ratio=1, min_size=(min_side, min_side),
                                               max_size=gray.shape[:2])
            return [(d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]) for d in found]

        self._find = find

    def detect(self, frames_rgb: np.ndarray) -> list[Box | None]:
        import cv2

        boxes: list[Box | None] = []
        for frame in frames_rgb:
            height, width = frame.shape[:2]
            scale = min(1.0, _CASCADE_MAX_SIDE / max(height, width))
            small = frame if scale == 1.0 else cv2.resize(
                frame, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
            gray = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY)
            min_side = max(24, min(gray.shape) // 10)
            faces = self._find(gray, min_side)
            if not faces:
                boxes.append(None)
                continue
            x1, y1, x2, y2 = max(faces, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            boxes.append((int(x1 / scale), int(y1 / scale), min(width, int(round(x2 / scale))),
                          min(height, int(round(y2 / scale)))))
        return boxes


def make_face_detector(kind: str = "auto", s3fd_checkpoint: str | Path | None = None,
                       device: str | torch.device = "cpu", batch_size: int = 16, size: str = "full") -> FaceDetector:
    """"s3fd" (needs its checkpoint), "cascade", or "auto" (S3FD when a checkpoint is given)."""
    if kind not in ("auto", "s3fd", "cascade"):
        raise ConfigError(f"wav2lip.options.face_detector: {kind!r} is not allowed; allowed: auto, s3fd, cascade")
    if kind == "s3fd" and s3fd_checkpoint is None:
        raise ConfigError("wav2lip.options.face_detector: 's3fd' needs wav2lip.options.s3fd_checkpoint "
                          "(the official s3fd.pth)")
    if kind == "cascade" or (kind == "auto" and s3fd_checkpoint is None):
        return CascadeDetector()
    return S3FDDetector.from_checkpoint(s3fd_checkpoint, device=device, batch_size=batch_size, size=size)
