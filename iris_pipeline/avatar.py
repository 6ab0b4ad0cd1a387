"""Avatars: frames at the output fps, one face box per frame, and the 96x96 face crops Wav2Lip reads.

An avatar is prepared once (frames decoded, faces detected, boxes padded and smoothed, crops cut)
and cached on disk under the hash of the file's bytes and every setting that changes the result,
so face detection is never part of a clip's latency. The box post-processing is the official
`inference.py`'s: pads (top, bottom, left, right) = (0, 10, 0, 0) clipped to the frame, then a
running mean over a window of 5 frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from iris_pipeline.cache import DiskCache, EntrySchema, TensorSpec, content_hash
from iris_pipeline.errors import InputError
from iris_pipeline.face_detectors import Box, CascadeDetector, FaceDetector

CROP_SIZE = 96
DEFAULT_PADS = (0, 10, 0, 0)  # top, bottom, left, right
DEFAULT_SMOOTH_WINDOW = 5
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
_FORMAT_VERSION = 2  # bump when the cached content changes meaning

Progress = Callable[[str, int, int], None]  # (step, done, total)


@dataclass(frozen=True)
class Avatar:
    """A prepared avatar. All tensors live on the CPU.

    frames: uint8 [N, H, W, 3] RGB at `fps` (N == 1 for a still image, which is looped).
    boxes: int64 [N, 4] face boxes (y1, y2, x1, x2) after padding and smoothing.
    crops: uint8 [N, 96, 96, 3] RGB, each box resized to 96x96 (the generator's input).
    """

    frames: torch.Tensor
    boxes: torch.Tensor
    crops: torch.Tensor
    fps: float
    still: bool
    source: str
    key: str

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    def frame_indices(self, output_frames: torch.Tensor, fps: float) -> torch.Tensor:
        """Avatar frame used for each global output frame: the frame at that time, looping the video."""
        if self.still:
            return torch.zeros_like(output_frames)
        if abs(fps - self.fps) < 1e-9:
            return output_frames % self.num_frames
        return torch.floor(output_frames.double() * (self.fps / fps)).long() % self.num_frames


# --- frames ---------------------------------------------------------------------------------------

def _read_image(path: Path) -> np.ndarray:
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"avatar {path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)[None]


def _read_video(path: Path, fps: float) -> np.ndarray:
    """All frames as RGB, resampled to `fps`: output frame k shows the source frame at time k / fps."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"avatar {path}: not a readable video (no video stream)")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0) or fps
            frames, times = [], []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(frame.time if frame.time is not None else len(times) / rate)
    except InputError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"avatar {path}: not a readable image or video ({first})") from exc
    if not frames:
        raise InputError(f"avatar {path}: not a readable video (no frames decoded)")
    start = np.asarray(times, dtype=np.float64) - times[0]
    duration = len(frames) / rate
    count = max(1, round(duration * fps))
    wanted = np.arange(count) / fps
    source = np.clip(np.searchsorted(start, wanted + 1e-6, side="right") - 1, 0, len(frames) - 1)
    return np.stack([frames[i] for i in source])


def read_avatar_frames(path: str | Path, fps: float, resize_factor: int = 1) -> tuple[np.ndarray, bool]:
    """(uint8 [N, H, W, 3] RGB frames at `fps`, is_still_image). Bad files raise `InputError`."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InputError(f"avatar {path}: no such file")
    still = path.suffix.lower() in IMAGE_SUFFIXES
    frames = _read_image(path) if still else _read_video(path, fps)
    if resize_factor > 1:  # as the official --resize_factor: integer downscale before detection
        height, width = frames.shape[1:3]
        size = (max(1, width // resize_factor), max(1, height // resize_factor))
        frames = np.stack([cv2.resize(f, size) for f in frames])
    return frames, still


# --- boxes ----------------------------------------------------------------------------------------

def pad_box(box: Box, pads: Sequence[int], height: int, width: int) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) detector box -> padded (x1, y1, x2, y2), clipped to the frame."""
    top, bottom, left, right = pads
    x1, y1, x2, y2 = box
    return max(0, x1 - left), max(0, y1 - top), min(width, x2 + right), min(height, y2 + bottom)


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """The official running mean: box i becomes the mean of boxes i .. i+window-1 (the slice
    `[n - window:]` near the end), computed in place in order and truncated to integers, exactly as
    `get_smoothened_boxes` does on its integer array."""
    boxes = boxes.copy()
    n = len(boxes)
    for i in range(n):
        # With fewer boxes than the window, `n - window` is negative and Python slicing counts it
        # from the end, as upstream does; kept so cached boxes equal the official ones.
        chunk = boxes[n - window:] if i + window > n else boxes[i:i + window]
        boxes[i] = np.mean(chunk, axis=0)  # assignment into an int array truncates, as upstream
    return boxes


def cut_crops(frames: np.ndarray, boxes_yyxx: np.ndarray) -> np.ndarray:
    """uint8 [N, 96, 96, 3] crops of each frame's box, resized as the official code (cv2 bilinear)."""
    import cv2

    return np.stack([cv2.resize(np.ascontiguousarray(f[y1:y2, x1:x2]), (CROP_SIZE, CROP_SIZE))
                     for f, (y1, y2, x1, x2) in zip(frames, boxes_yyxx, strict=True)])


def detect_boxes(frames: np.ndarray, detector: FaceDetector, source: str, pads: Sequence[int],
                 smooth_window: int, batch: int = 16, progress: Progress | None = None) -> np.ndarray:
    """int64 [N, 4] (y1, y2, x1, x2) boxes; a frame without a face is an `InputError` naming it."""
    height, width = frames.shape[1:3]
    padded = []
    for start in range(0, len(frames), batch):
        found = detector.detect(frames[start:start + batch])
        for offset, box in enumerate(found):
            index = start + offset
            if box is None:
                raise InputError(f"avatar {source}: no face found in frame {index} (of {len(frames)})")
            padded.append(pad_box(box, pads, height, width))
        if progress is not None:
            progress("detect faces", min(len(frames), start + batch), len(frames))
    boxes = np.asarray(padded, dtype=np.int64)
    if smooth_window > 1:
        boxes = smooth_boxes(boxes, smooth_window)
    x1, y1, x2, y2 = boxes.T
    if np.any(x2 <= x1) or np.any(y2 <= y1):
        bad = int(np.flatnonzero((x2 <= x1) | (y2 <= y1))[0])
        raise InputError(f"avatar {source}: the face box of frame {bad} is empty")
    return np.stack([y1, y2, x1, x2], axis=1)


# --- preparation ----------------------------------------------------------------------------------

def avatar_key(path: Path, fps: float, detector_id: str, pads: Sequence[int], smooth_window: int,
               resize_factor: int) -> str:
    return content_hash("avatar", _FORMAT_VERSION, path, float(fps), detector_id, tuple(int(p) for p in pads),
                        int(smooth_window), int(resize_factor))


def _boxes_problem(entry) -> str | None:
    """Boxes must be non-empty and inside their frames (a swapped or edited entry breaks this)."""
    height, width = entry["frames"].shape[1:3]
    y1, y2, x1, x2 = entry["boxes"].unbind(1)
    if bool(((y1 < 0) | (x1 < 0) | (y2 > height) | (x2 > width) | (y2 <= y1) | (x2 <= x1)).any()):
        return f"a face box lies outside its {width}x{height} frame or is empty"
    if entry["still"] and entry["frames"].shape[0] != 1:
        return "a still image with more than one frame"
    return None


# N frames; a still image has N == 1 (looped)
AVATAR_SCHEMA = EntrySchema(
    tensors={"frames": TensorSpec(torch.uint8, ("N", "H", "W", 3)),
             "boxes": TensorSpec(torch.int64, ("N", 4)),
             "crops": TensorSpec(torch.uint8, ("N", CROP_SIZE, CROP_SIZE, 3))},
    values={"fps": float, "still": bool},
    check=_boxes_problem,
)


def prepare_avatar(path: str | Path, fps: float = 25.0, detector: FaceDetector | None = None,
                   cache: DiskCache | None = None, pads: Sequence[int] = DEFAULT_PADS,
                   smooth_window: int = DEFAULT_SMOOTH_WINDOW, resize_factor: int = 1,
                   progress: Progress | None = None) -> Avatar:
    """Frames, face boxes and crops of an image or video avatar; from `cache` when already prepared.

    Without a detector, the bundled cascade (no download) finds the faces; pass an
    `S3FDDetector` for the official detector.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"avatar {path}: no such file")
    if len(pads) != 4:
        raise ValueError(f"pads must be (top, bottom, left, right), got {pads!r}")
    detector = detector if detector is not None else CascadeDetector()
    key = avatar_key(path, fps, detector.cache_id, pads, smooth_window, resize_factor)
    if cache is not None:
        hit = cache.get(key, AVATAR_SCHEMA)
        if hit is not None and hit["fps"] == float(fps):
            return Avatar(hit["frames"], hit["boxes"], hit["crops"], float(hit["fps"]), bool(hit["still"]),
                          str(path), key)
    if progress is not None:
        progress("read frames", 0, 1)
    frames, still = read_avatar_frames(path, fps, resize_factor)
    if progress is not None:
        progress("read frames", 1, 1)
    boxes = detect_boxes(frames, detector, str(path), pads, smooth_window, progress=progress)
    crops = cut_crops(frames, boxes)
    avatar = Avatar(torch.from_numpy(np.ascontiguousarray(frames)), torch.from_numpy(boxes),
                    torch.from_numpy(crops), float(fps), still, str(path), key)
    if cache is not None:
        cache.put(key, {"frames": avatar.frames, "boxes": avatar.boxes, "crops": avatar.crops,
                        "fps": avatar.fps, "still": avatar.still})
    return avatar
