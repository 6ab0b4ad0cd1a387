"""Avatar preparation: real-photo face detection, official box post-processing, fps resampling,
caching, and one-line errors for unusable avatars."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from iris_pipeline.avatar import prepare_avatar, read_avatar_frames, smooth_boxes
from iris_pipeline.cache import DiskCache, content_hash
from iris_pipeline.errors import InputError
from iris_pipeline.face_detectors import CascadeDetector, make_face_detector

DATA = Path(__file__).resolve().parents[2] / "data"
PHOTO = DATA / "astronaut_face.jpg"  # NASA photo of Eileen Collins, public domain (see tests/data/README.md)
# Where a person marks the face in the 256x256 photo (x1, y1, x2, y2): forehead to chin, ear to ear.
FACE = (84, 28, 142, 96)


def _centre_inside(box, region) -> bool:
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return region[0] <= cx <= region[2] and region[1] <= cy <= region[3]


def _write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "10"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


@pytest.fixture(scope="module")
def photo_rgb() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)


def test_the_bundled_cascade_finds_the_face_in_a_real_photograph(photo_rgb):
    (box,) = CascadeDetector().detect(photo_rgb[None])
    assert box is not None
    assert _centre_inside(box, FACE)
    width, height = box[2] - box[0], box[3] - box[1]
    assert 35 <= width <= 80
    assert 35 <= height <= 80


def test_a_blank_image_has_no_face():
    assert CascadeDetector().detect(np.full((1, 200, 200, 3), 128, np.uint8)) == [None]


def test_auto_detector_without_checkpoint_is_the_cascade():
    assert make_face_detector("auto", None).cache_id.startswith("cascade:")


def test_photo_avatar_has_official_padding_crops_and_is_cached(tmp_path, photo_rgb):
    cache = DiskCache(tmp_path / "cache")
    avatar = prepare_avatar(PHOTO, fps=25.0, cache=cache)
    assert avatar.still
    assert avatar.num_frames == 1
    assert avatar.frames.shape == (1, 256, 256, 3)
    assert avatar.frames[0].numpy().tolist() == photo_rgb.tolist()
    (raw,) = CascadeDetector().detect(photo_rgb[None])
    y1, y2, x1, x2 = avatar.boxes[0].tolist()
    assert (x1, y1, x2, y2) == (raw[0], raw[1], raw[2], min(256, raw[3] + 10))  # pads (0, 10, 0, 0)
    expected_crop = cv2.resize(photo_rgb[y1:y2, x1:x2], (96, 96))
    assert avatar.crops.shape == (1, 96, 96, 3)
    assert np.array_equal(avatar.crops[0].numpy(), expected_crop)

    class MustNotRun:
        cache_id = CascadeDetector().cache_id

        def detect(self, frames):
            raise AssertionError("a cached avatar must not be detected again")

    again = prepare_avatar(PHOTO, fps=25.0, detector=MustNotRun(), cache=cache)
    assert again.key == avatar.key
    assert np.array_equal(again.boxes.numpy(), avatar.boxes.numpy())


def _official_smoothing(boxes: np.ndarray, window: int) -> np.ndarray:
    """inference.py's get_smoothened_boxes, on a copy."""
    boxes = boxes.copy()
    for i in range(len(boxes)):
        if i + window > len(boxes):
            chunk = boxes[len(boxes) - window:]
        else:
            chunk = boxes[i: i + window]
        boxes[i] = np.mean(chunk, axis=0)
    return boxes


@pytest.mark.parametrize("count", [1, 3, 5, 12])
def test_box_smoothing_is_the_official_running_mean(count):
    boxes = np.random.default_rng(count).integers(0, 500, (count, 4)).astype(np.int64)
    assert np.array_equal(smooth_boxes(boxes, 5), _official_smoothing(boxes, 5))


def test_video_frames_are_resampled_to_the_output_fps(tmp_path):
    # 10 fps source, 12 frames whose brightness encodes their index; read back at 25 fps
    frames = np.stack([np.full((64, 64, 3), 10 + 20 * i, np.uint8) for i in range(12)])
    path = tmp_path / "ten_fps.mp4"
    _write_video(path, frames, fps=10)
    out, still = read_avatar_frames(path, fps=25.0)
    assert not still
    assert len(out) == 30  # 1.2 s at 25 fps
    shown = [int(round((float(f.mean()) - 10) / 20)) for f in out]
    assert shown == [int(Fraction(k, 25) * 10) for k in range(30)]


def test_a_video_frame_without_a_face_is_named(tmp_path, photo_rgb):
    frames = np.stack([photo_rgb, photo_rgb, np.full_like(photo_rgb, 90), photo_rgb])
    path = tmp_path / "face_leaves.mp4"
    _write_video(path, frames, fps=25)
    with pytest.raises(InputError, match=r"^avatar .*face_leaves\.mp4: no face found in frame 2 \(of 4\)$"):
        prepare_avatar(path, fps=25.0)


def test_an_image_without_a_face_is_refused(tmp_path):
    path = tmp_path / "wall.png"
    cv2.imwrite(str(path), np.full((120, 160, 3), 200, np.uint8))
    with pytest.raises(InputError, match=r"^avatar .*wall\.png: no face found in frame 0 \(of 1\)$"):
        prepare_avatar(path)


@pytest.mark.parametrize("name, problem", [("broken.png", "not a readable image"),
                                           ("broken.mp4", "not a readable image or video"),
                                           ("empty.jpg", "not a readable image")])
def test_unreadable_avatar_files_are_refused_in_one_line(tmp_path, name, problem):
    path = tmp_path / name
    path.write_bytes(b"" if name.startswith("empty") else b"this is not a picture \x00\x01" * 40)
    with pytest.raises(InputError) as info:
        prepare_avatar(path)
    assert str(info.value).startswith(f"avatar {path}: {problem}")
    assert "\n" not in str(info.value)


def test_a_missing_avatar_is_refused(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        prepare_avatar(tmp_path / "nobody.jpg")


class CountingDetector:
    """The cascade, counting how often it runs (a cache hit must not run it)."""

    def __init__(self):
        self.inner = CascadeDetector()
        self.cache_id = self.inner.cache_id
        self.calls = 0

    def detect(self, frames):
        self.calls += 1
        return self.inner.detect(frames)


def _tamper_payload(cache: DiskCache, key: str, change) -> None:
    """Rewrite an entry with a changed payload under a valid checksum: it loads, but it is wrong."""
    import torch

    from iris_pipeline.cache import ENTRY_FORMAT, payload_checksum

    path = cache.directory / f"{key}.pt"
    payload = torch.load(path, weights_only=True)["payload"]
    payload = change(payload)
    torch.save({"format": ENTRY_FORMAT, "key": key, "checksum": payload_checksum(payload), "payload": payload}, path)


def _flip_bytes(cache: DiskCache, key: str) -> None:
    """20 KB of 0xFF written into the stored frames (the white band of the issue)."""
    path = cache.directory / f"{key}.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 3:len(data) // 3 + 20_000] = b"\xff" * 20_000
    path.write_bytes(bytes(data))


def _swap_with_another_avatar(cache: DiskCache, key: str) -> None:
    other = content_hash("another avatar")
    cache.put(other, {"x": np.zeros(1).tolist()})
    (cache.directory / f"{key}.pt").write_bytes((cache.directory / f"{other}.pt").read_bytes())


@pytest.mark.parametrize("damage, why", [
    (lambda c, k: _tamper_payload(c, k, lambda p: {**p, "frames": p["frames"][:0], "boxes": p["boxes"][:0],
                                                   "crops": p["crops"][:0]}), "empty"),
    (lambda c, k: _tamper_payload(c, k, lambda p: {**p, "boxes": p["boxes"][:, :3]}), "boxes"),
    (lambda c, k: _tamper_payload(c, k, lambda p: {**p, "boxes": p["boxes"] + 1000}), "outside"),
    (lambda c, k: _tamper_payload(c, k, lambda p: {**p, "crops": p["crops"].float()}), "crops"),
    (_flip_bytes, ""),
    (_swap_with_another_avatar, "another key"),
], ids=["zero-frames", "box-shape", "box-outside", "crop-dtype", "0xff-bytes", "swapped"])
def test_a_wrong_avatar_entry_is_rebuilt_once_with_one_line(tmp_path, capsys, damage, why):
    cache = DiskCache(tmp_path / "cache")
    detector = CountingDetector()
    first = prepare_avatar(PHOTO, fps=25.0, detector=detector, cache=cache)
    assert detector.calls == 1
    damage(cache, first.key)
    capsys.readouterr()
    again = prepare_avatar(PHOTO, fps=25.0, detector=detector, cache=cache)
    lines = capsys.readouterr().err.strip().splitlines()
    assert detector.calls == 2, lines
    assert len(lines) == 1, lines
    assert first.key in lines[0], lines
    assert why in lines[0], lines
    assert np.array_equal(again.frames.numpy(), first.frames.numpy())
    assert np.array_equal(again.boxes.numpy(), first.boxes.numpy())
    prepare_avatar(PHOTO, fps=25.0, detector=detector, cache=cache)  # repaired: a plain hit now
    assert detector.calls == 2
    assert capsys.readouterr().err == ""
