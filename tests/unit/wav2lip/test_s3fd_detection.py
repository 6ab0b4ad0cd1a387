"""S3FD box decoding, NMS and input convention, checked against the official per-candidate formulas."""

from __future__ import annotations

import math

import numpy as np
import torch

from iris_pipeline import models
from iris_pipeline.face_detectors import S3FDDetector, make_face_detector
from iris_pipeline.models.s3fd import HEAD_STRIDES, INPUT_MEAN, faces_from_outputs, nms, preprocess


def _official_decode(ocls: torch.Tensor, oreg: torch.Tensor, stride: int, h: int, w: int):
    """One candidate as the official loop decodes it (SSD decode of a prior at that position)."""
    score = float(torch.softmax(ocls, dim=1)[0, 1, h, w])
    loc = oreg[0, :, h, w].double()
    cx, cy, side = stride / 2 + w * stride, stride / 2 + h * stride, stride * 4.0
    bcx, bcy = cx + float(loc[0]) * 0.1 * side, cy + float(loc[1]) * 0.1 * side
    bw, bh = side * math.exp(float(loc[2]) * 0.2), side * math.exp(float(loc[3]) * 0.2)
    return [bcx - bw / 2, bcy - bh / 2, bcx + bw / 2, bcy + bh / 2, score]


def _outputs_with_faces(size: int, faces: list[tuple[int, int, int, float]], seed: int = 0):
    """Network-shaped outputs: background everywhere, strong face logits at (level, y, x)."""
    gen = torch.Generator().manual_seed(seed)
    outputs = []
    for stride in HEAD_STRIDES:
        side = max(1, size // stride)
        cls = torch.zeros(1, 2, side, side)
        cls[:, 0] = 6.0  # background
        outputs += [cls, 0.5 * torch.randn(1, 4, side, side, generator=gen)]
    for level, y, x, logit in faces:
        outputs[2 * level][0, 1, y, x] = logit
    return outputs


def test_decoded_faces_equal_the_official_formulas():
    outputs = _outputs_with_faces(256, [(2, 5, 7, 12.0), (4, 1, 2, 9.0), (0, 40, 10, 7.0)])
    faces = faces_from_outputs(outputs)[0]
    expected = [_official_decode(outputs[2 * lv], outputs[2 * lv + 1], HEAD_STRIDES[lv], y, x)
                for lv, y, x in [(2, 5, 7), (4, 1, 2), (0, 40, 10)]]
    expected = np.array(sorted(expected, key=lambda r: -r[4]))
    assert faces.shape == (3, 5)
    np.testing.assert_allclose(faces, expected, rtol=1e-5, atol=1e-3)


def test_weak_candidates_are_dropped_and_overlaps_suppressed():
    # score softmax(6, 6.2) ~ 0.55 passes; (6, 5) ~ 0.27 is a candidate but not a face
    outputs = _outputs_with_faces(128, [(1, 3, 3, 6.2), (1, 9, 9, 5.0)])
    assert len(faces_from_outputs(outputs)[0]) == 1
    dets = np.array([[10, 10, 50, 50, 0.9], [12, 12, 52, 52, 0.8], [100, 100, 140, 140, 0.7]], dtype=float)
    assert nms(dets, 0.3) == [0, 2]
    assert nms(np.zeros((0, 5)), 0.3) == []


def test_input_is_rgb_minus_the_official_mean():
    rgb = torch.tensor([[[[10, 120, 250]]]], dtype=torch.uint8)
    x = preprocess(rgb)
    assert x.shape == (1, 3, 1, 1)
    assert x.flatten().tolist() == [10 - INPUT_MEAN[0], 120 - INPUT_MEAN[1], 250 - INPUT_MEAN[2]]


class _Spy(torch.nn.Module):
    """Records its input and answers like S3FD with one face at a known place."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.clone())
        outputs = _outputs_with_faces(x.shape[-1], [(2, 2, 3, 10.0)])
        return [o.expand(x.shape[0], -1, -1, -1).clone() for o in outputs]


def test_s3fd_detector_feeds_rgb_frames_and_returns_the_best_box():
    spy = _Spy()
    frames = np.zeros((3, 128, 128, 3), dtype=np.uint8)
    frames[..., 0] = 200  # red in RGB
    boxes = S3FDDetector(spy, batch_size=2).detect(frames)
    assert len(spy.seen) == 2
    assert spy.seen[0].shape == (2, 3, 128, 128)
    assert spy.seen[0][0, :, 0, 0].tolist() == [200 - 104.0, 0 - 117.0, 0 - 123.0]
    assert len(boxes) == 3
    assert boxes[0] == boxes[2]
    x1, y1, x2, y2 = boxes[0]
    assert x1 < 16 * 3 + 8 < x2
    assert y1 < 16 * 2 + 8 < y2  # around the prior centre of level 2, (y=2, x=3)


def test_tiny_s3fd_runs_on_frames():
    detector = S3FDDetector(models.build("s3fd", "tiny"), batch_size=4)
    boxes = detector.detect(np.random.default_rng(0).integers(0, 255, (2, 96, 128, 3), dtype=np.uint8))
    assert len(boxes) == 2


def test_auto_detector_with_a_checkpoint_is_s3fd_keyed_by_the_weights(tmp_path):
    path = tmp_path / "s3fd.pth"
    torch.save(models.build("s3fd", "tiny", seed=1).state_dict(), path)
    first = make_face_detector("auto", path, size="tiny")
    assert isinstance(first, S3FDDetector)
    assert first.cache_id.startswith("s3fd:")
    torch.save(models.build("s3fd", "tiny", seed=2).state_dict(), path)
    assert make_face_detector("auto", path, size="tiny").cache_id != first.cache_id
