"""GPU timing of the full-size Wav2Lip stage in fp16 (random weights: timing does not depend on them).

Per clip length L: L * 25 frames of a 1280x720 avatar, mel windows of L seconds of speech, one
`Wav2LipStage.run` call (generator batches, paste-back, frames on the host). CUDA events around
the call, device synchronised; median of 30 runs after 3 warm-up runs. Cross-job batches: eight
jobs' short chunks in one `render_frames` call against one call per job, timed the same way. Run
with `pytest -m gpu -s`.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from iris_pipeline.config import Wav2LipConfig
from iris_pipeline.stages.contracts import FramesRequest
from iris_pipeline.stages.wav2lip import Wav2LipStage
from tests.support.gpu_timing import cuda_times_ms

PHOTO = Path(__file__).resolve().parents[1] / "data" / "astronaut_face.jpg"
FPS = 25.0
WARMUP, RUNS = 3, 30


@pytest.fixture(scope="module")
def stage_and_avatar(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wav2lip_gpu")
    canvas = np.full((720, 1280, 3), 40, np.uint8)  # a 720p avatar with the photo's face in it
    photo = cv2.resize(cv2.imread(str(PHOTO)), (512, 512))
    canvas[104:616, 384:896] = photo
    avatar_path = tmp / "avatar_720p.png"
    cv2.imwrite(str(avatar_path), canvas)
    stage = Wav2LipStage(Wav2LipConfig(precision="fp16", options={"cache_dir": str(tmp / "cache")}),
                         size="full", device="cuda")
    stage.prepare()
    return stage, stage.prepare_avatar(avatar_path, fps=FPS)


@pytest.mark.gpu
def test_wav2lip_full_fp16_stage_time(stage_and_avatar, clip_lengths, record_property):
    stage, avatar = stage_and_avatar
    gen = torch.Generator().manual_seed(0)
    for seconds in clip_lengths:
        frames = int(round(seconds * FPS))
        total = 1 + int(seconds * 16000) // 200
        mel = (torch.rand(80, total, generator=gen) * 8 - 4).cuda()
        request = FramesRequest(mel=mel, mel_offset=0, total_mel_frames=total, avatar=avatar, frame_start=0,
                                frame_count=frames, fps=FPS)
        times = cuda_times_ms(lambda request=request: stage.render_frames([request]), warmup=WARMUP, runs=RUNS)
        out = stage.render_frames([request])[0]
        assert out.frames.shape == (frames, 720, 1280, 3)
        median = statistics.median(times)
        record_property(f"wav2lip_ms_median_{seconds:g}s", round(median, 2))
        print(f"wav2lip full fp16 on {torch.cuda.get_device_name()}: L={seconds:g}s ({frames} frames 1280x720) "
              f"median {median:.1f} ms over {RUNS} runs (min {min(times):.1f}, max {max(times):.1f})")


@pytest.mark.gpu
def test_cross_job_batch_is_not_slower_and_matches_each_job_alone(stage_and_avatar, record_property):
    """Eight jobs' short chunks (12 frames each, as a first chunk can be) in one `render_frames` call
    against eight calls of one chunk each: the same frames (fp16 kernels may differ with the batch
    size: a few uint8 levels at most) and no more time than the eight calls together."""
    stage, avatar = stage_and_avatar
    gen = torch.Generator().manual_seed(1)
    total = 1 + 16000 // 200  # one second of speech per job
    requests = [FramesRequest(mel=(torch.rand(80, total, generator=gen) * 8 - 4).cuda(), mel_offset=0,
                              total_mel_frames=total, avatar=avatar, frame_start=0, frame_count=12, fps=FPS)
                for _ in range(8)]
    together = stage.render_frames(requests)
    for i, request in enumerate(requests):
        alone = stage.render_frames([request])[0].frames
        diff = (together[i].frames.int() - alone.int()).abs().max().item()
        assert diff <= 3, f"job {i}: batched frames differ from its own by {diff} levels"
    batched = statistics.median(cuda_times_ms(lambda: stage.render_frames(requests), warmup=WARMUP, runs=RUNS))
    separate = statistics.median(cuda_times_ms(lambda: [stage.render_frames([r]) for r in requests],
                                               warmup=WARMUP, runs=RUNS))
    record_property("wav2lip_cross_job_batch_ms_median", round(batched, 2))
    record_property("wav2lip_one_call_per_job_ms_median", round(separate, 2))
    print(f"wav2lip full fp16 on {torch.cuda.get_device_name()}: 8 jobs x 12 frames in one call {batched:.1f} ms, "
          f"one call per job {separate:.1f} ms (medians of {RUNS})")
    assert batched <= separate, f"one batched call took {batched:.1f} ms, eight calls {separate:.1f} ms"
