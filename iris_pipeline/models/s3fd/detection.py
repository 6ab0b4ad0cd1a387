"""Turning S3FD outputs into face boxes, as the official detector does.

Per head (stride s = 4 ... 128) every position whose softmaxed face score exceeds 0.05 is a
candidate; its prior is centred at (s/2 + x*s, s/2 + y*s) with side 4s, and the SSD decoding with
variances (0.1, 0.2) gives the box. Candidates go through NMS (IoU 0.3, the "+1 pixel" area
convention of the official code) and those scoring above 0.5 are faces, best first.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from iris_pipeline.models.s3fd.network import HEAD_STRIDES

# Subtracted per channel from the RGB frame. These are the Caffe (BGR) means, but the official
# pipeline (face-alignment's detector, and Wav2Lip's bundled copy of it) flips OpenCV's BGR frames to
# RGB before subtracting them, so the released weights were run on RGB minus (104, 117, 123).
INPUT_MEAN = (104.0, 117.0, 123.0)
CANDIDATE_SCORE = 0.05
NMS_IOU = 0.3
FACE_SCORE = 0.5
VARIANCES = (0.1, 0.2)


def preprocess(images_rgb: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8/float [B, H, W, 3] RGB -> [B, 3, H, W] minus `INPUT_MEAN`, in `dtype`."""
    mean = torch.tensor(INPUT_MEAN, device=images_rgb.device, dtype=torch.float32)
    x = images_rgb.float() - mean
    return x.permute(0, 3, 1, 2).contiguous().to(dtype)


def decode_candidates(outputs: list[torch.Tensor], threshold: float = CANDIDATE_SCORE) -> list[np.ndarray]:
    """Network outputs -> per image an array [K, 5] of (x1, y1, x2, y2, score) candidates."""
    batch = outputs[0].shape[0]
    found: list[list[np.ndarray]] = [[] for _ in range(batch)]
    for level, stride in enumerate(HEAD_STRIDES):
        cls, reg = outputs[2 * level].float(), outputs[2 * level + 1].float()
        scores = F.softmax(cls, dim=1)[:, 1]  # [B, H, W]
        b, y, x = torch.nonzero(scores > threshold, as_tuple=True)
        if b.numel() == 0:
            continue
        loc = reg[b, :, y, x]  # [K, 4]
        anchor = 4.0 * stride
        cx = stride / 2.0 + x.float() * stride + loc[:, 0] * VARIANCES[0] * anchor
        cy = stride / 2.0 + y.float() * stride + loc[:, 1] * VARIANCES[0] * anchor
        w = anchor * torch.exp(loc[:, 2] * VARIANCES[1])
        h = anchor * torch.exp(loc[:, 3] * VARIANCES[1])
        x1, y1 = cx - w / 2, cy - h / 2
        boxes = torch.stack([x1, y1, x1 + w, y1 + h, scores[b, y, x]], dim=1).cpu().double().numpy()
        b_np = b.cpu().numpy()
        for i in np.unique(b_np):
            found[int(i)].append(boxes[b_np == i])
    return [np.concatenate(f) if f else np.zeros((0, 5)) for f in found]


def nms(dets: np.ndarray, iou_threshold: float = NMS_IOU) -> list[int]:
    """Greedy NMS over (x1, y1, x2, y2, score) rows; indices kept, best score first."""
    if len(dets) == 0:
        return []
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[overlap <= iou_threshold]
    return keep


def faces_from_outputs(outputs: list[torch.Tensor]) -> list[np.ndarray]:
    """Per image, the faces [K, 5] (score > 0.5 after NMS), best first."""
    result = []
    for candidates in decode_candidates(outputs):
        kept = candidates[nms(candidates)]
        result.append(kept[kept[:, 4] > FACE_SCORE])
    return result


@torch.no_grad()
def detect_faces(net: torch.nn.Module, images_rgb: torch.Tensor) -> list[np.ndarray]:
    """Run `net` on uint8 [B, H, W, 3] RGB images; per image the faces [K, 5], best first."""
    param = next(net.parameters())
    x = preprocess(images_rgb.to(param.device), dtype=param.dtype)
    return faces_from_outputs(net(x))


def best_face_box(faces: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2) integer box of the best face, clipped at 0 as the official code does."""
    if len(faces) == 0:
        return None
    x1, y1, x2, y2 = (int(v) for v in np.clip(faces[0, :4], 0, None))
    return x1, y1, x2, y2
