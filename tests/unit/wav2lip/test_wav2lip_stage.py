"""Wav2LipStage: official mel windows, inference on crops pasted into frames, options, bad input, mp4."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from iris_pipeline.audio import Waveform, read_audio, wav2lip_mel
from iris_pipeline.config import Wav2LipConfig, parse_pipeline_config
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.stages.contracts import FramesRequest
from iris_pipeline.stages.wav2lip import Wav2LipStage, check_speech_length
from iris_pipeline.timebase import video_frame_count, window_starts
from iris_pipeline.video import read_mp4_info, write_mp4

DATA = Path(__file__).resolve().parents[2] / "data"
PHOTO = DATA / "astronaut_face.jpg"
SPEECH = DATA / "speech_en_16k.wav"


def _official_mel_chunks(total: int, fps: float) -> list[int]:
    """Start columns of the windows inference.py cuts (one per output frame), by its own loop."""
    starts, i, step, multiplier = [], 0, 16, 80.0 / fps
    while True:
        start = int(i * multiplier)
        if start + step > total:
            starts.append(total - step)
            return starts
        starts.append(start)
        i += 1


@settings(max_examples=200, deadline=None)
@given(fps=st.floats(min_value=1.0, max_value=120.0, allow_nan=False), total=st.integers(16, 4000),
       extra=st.integers(0, 50))
def test_window_starts_equal_the_official_formula(fps, total, extra):
    official = _official_mel_chunks(total, fps)
    frames = torch.arange(len(official) + extra)
    ours = window_starts(frames, fps, total).tolist()
    assert ours[: len(official)] == official
    assert all(s == total - 16 for s in ours[len(official):])  # past the end: the last window


@pytest.fixture(scope="module")
def stage(tmp_path_factory) -> Wav2LipStage:
    cache = tmp_path_factory.mktemp("avatars")
    s = Wav2LipStage(Wav2LipConfig(precision="fp32", options={"batch_size": 16, "cache_dir": str(cache)}),
                     size="tiny")
    s.prepare()
    return s


@pytest.fixture(scope="module")
def avatar(stage):
    return stage.prepare_avatar(PHOTO, fps=25.0)


@pytest.fixture(scope="module")
def speech() -> Waveform:
    return read_audio(SPEECH, "speech")


def _run(stage, mel, avatar, start, count, offset=0, total=None, fps=25.0):
    total = mel.shape[1] + offset if total is None else total
    request = FramesRequest(mel=mel, mel_offset=offset, total_mel_frames=total, avatar=avatar, frame_start=start,
                            frame_count=count, fps=fps)
    return stage.render_frames([request])[0].frames


class WindowProbe(torch.nn.Module):
    """Stands in for the generator to check what the stage feeds it: asserts the official input
    layout and paints each crop with a colour that encodes the mel window it was given."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.batches: list[int] = []

    def forward(self, mel, faces):
        assert mel.shape[1:] == (1, 80, 16) and faces.shape[1:] == (6, 96, 96)
        assert faces.shape[0] == mel.shape[0]
        assert torch.all(faces[:, :3, 48:] == 0)  # lower half masked
        assert torch.equal(faces[:, :3, :48], faces[:, 3:, :48])  # upper half = the reference crop
        self.batches.append(mel.shape[0])
        value = mel[:, 0, 0, 0]  # first column of the window encodes its start (see _ramp_mel)
        return value.view(-1, 1, 1, 1).expand(-1, 3, 96, 96).clone()


def _ramp_mel(columns: int) -> torch.Tensor:
    """A mel whose column c holds (c + 0.5) / 255 in every bin, so a pasted pixel (x 255, truncated
    as the official code does) reads back its window start."""
    return ((torch.arange(columns, dtype=torch.float32) + 0.5) / 255.0).expand(80, -1).clone()


@pytest.fixture()
def probed(stage):
    real, probe = stage.model, WindowProbe()
    stage.model = probe
    yield probe
    stage.model = real


def test_each_frame_gets_its_official_window_and_only_the_face_box_changes(stage, avatar, probed):
    total, count, fps = 160, 40, 25.0
    frames = _run(stage, _ramp_mel(total), avatar, 0, count, fps=fps)
    assert frames.shape == (count, 256, 256, 3) and frames.dtype == torch.uint8 and frames.device.type == "cpu"
    assert probed.batches == [16, 16, 8]
    y1, y2, x1, x2 = avatar.boxes[0].tolist()
    starts = window_starts(torch.arange(count), fps, total)
    inside = frames[:, y1:y2, x1:x2]
    assert torch.equal(inside, starts.to(torch.uint8).view(-1, 1, 1, 1).expand_as(inside))
    outside = frames.clone()
    outside[:, y1:y2, x1:x2] = avatar.frames[0, y1:y2, x1:x2]
    assert torch.equal(outside, avatar.frames[0].expand_as(frames))


def test_a_chunked_run_equals_the_whole_run(stage, avatar, probed):
    total = 200
    mel = _ramp_mel(total)
    whole = _run(stage, mel, avatar, 0, 45)
    # chunk 2 holds only the mel columns its frames need, addressed by the global offset
    first = _run(stage, mel[:, :100], avatar, 0, 17, total=total)
    offset = int(window_starts(torch.tensor([17]), 25.0, total))
    second = _run(stage, mel[:, offset:], avatar, 17, 28, offset=offset, total=total)
    assert torch.equal(torch.cat([first, second]), whole)


def test_several_requests_give_one_result_each_in_order(stage, avatar, probed):
    mel = _ramp_mel(200)
    requests = [FramesRequest(mel=mel, mel_offset=0, total_mel_frames=200, avatar=avatar, frame_start=start,
                              frame_count=count, fps=25.0) for start, count in ((20, 7), (0, 3), (5, 0))]
    results = stage.render_frames(requests)
    assert [r.frames.shape[0] for r in results] == [7, 3, 0]
    for request, result in zip(requests, results, strict=True):
        assert torch.equal(result.frames, _run(stage, mel, avatar, request.frame_start, request.frame_count))


def test_rendering_before_prepare_is_refused(avatar):
    idle = Wav2LipStage(Wav2LipConfig(precision="fp32"), size="tiny")
    request = FramesRequest(mel=_ramp_mel(32), mel_offset=0, total_mel_frames=32, avatar=avatar, frame_start=0,
                            frame_count=1, fps=25.0)
    with pytest.raises(RuntimeError, match=r"wav2lip\.render_frames\(\) called before prepare\(\)"):
        idle.render_frames([request])
def _mirrored_video(avatar):
    """Another avatar: three frames of the photo avatar, mirrored and shifted in brightness, so its
    crops and pixels differ from the photo's."""
    frames = torch.stack([avatar.frames[0].flip(1) // (k + 1) for k in range(3)])
    crops = torch.stack([avatar.crops[0].flip(1) // (k + 1) for k in range(3)])
    return dataclasses.replace(avatar, frames=frames, crops=crops, boxes=avatar.boxes[:1].expand(3, -1).clone(),
                               still=False, key="mirrored")


def _request(mel, avatar, start, count, offset=0, total=None, fps=25.0):
    return FramesRequest(mel=mel[:, offset:], mel_offset=offset, total_mel_frames=mel.shape[1] if total is None else total,
                         avatar=avatar, frame_start=start, frame_count=count, fps=fps)


def _jobs(avatar):
    """Requests of three jobs: other avatars, mels, frame ranges (one starts mid-clip), fps."""
    g = torch.Generator().manual_seed(3)
    mels = [torch.rand(80, n, generator=g) * 4 - 2 for n in (120, 200, 90)]
    offset = int(window_starts(torch.tensor([17]), 25.0, 200))
    return [_request(mels[0], avatar, 0, 21), _request(mels[1], _mirrored_video(avatar), 17, 23, offset=offset),
            _request(mels[2], avatar, 0, 9, fps=30.0)]


def test_requests_of_several_jobs_render_as_each_alone(stage, avatar):
    requests = _jobs(avatar)
    together = stage.render_frames(requests)  # batch 16: batches straddle the requests
    alone = [stage.render_frames([r])[0] for r in requests]
    assert len(together) == len(requests)
    for i, (a, b) in enumerate(zip(together, alone, strict=True)):
        assert torch.equal(a.frames, b.frames), f"request {i} differs when batched with the others"


def test_frames_of_several_requests_fill_each_generator_batch(stage, avatar, probed):
    total = 200
    mel = _ramp_mel(total)
    offset = int(window_starts(torch.tensor([30]), 25.0, total))
    requests = [_request(mel, avatar, 0, 10), _request(mel, avatar, 30, 10, offset=offset), _request(mel, avatar, 5, 10)]
    results = stage.render_frames(requests)
    assert probed.batches == [16, 14]
    y1, y2, x1, x2 = avatar.boxes[0].tolist()
    for request, result in zip(requests, results, strict=True):  # each frame read its own request's window
        starts = window_starts(torch.arange(request.frame_start, request.frame_start + 10), 25.0, total)
        inside = result.frames[:, y1:y2, x1:x2]
        assert torch.equal(inside, starts.to(torch.uint8).view(-1, 1, 1, 1).expand_as(inside))


def test_one_bad_request_stops_the_batch_before_any_work(stage, avatar, probed):
    good = _request(_ramp_mel(200), avatar, 0, 10)
    with pytest.raises(ValueError, match="does not cover"):
        stage.render_frames([good, _request(torch.zeros(80, 30), avatar, 10, 5, total=200)])
    assert probed.batches == []
    assert stage.render_frames([]) == []


def test_a_mel_chunk_that_misses_a_window_is_a_bug_not_a_silent_shift(stage, avatar):
    with pytest.raises(ValueError, match="does not cover"):
        _run(stage, torch.zeros(80, 30), avatar, 10, 5, offset=0, total=200)


@pytest.mark.parametrize("options, key", [({"batch_size": 0}, "batch_size"), ({"face_detector": "dlib"}, "face_detector"),
                                          ({"pads": [1, 2]}, "pads"), ({"colour": 1}, "colour")])
def test_bad_options_name_the_key(options, key):
    with pytest.raises(ConfigError, match=rf"^config: wav2lip\.options\.{key}: "):
        parse_pipeline_config({"wav2lip": {"options": options}})


def test_s3fd_without_its_checkpoint_is_a_config_error(tmp_path):
    stage = Wav2LipStage(Wav2LipConfig(options={"face_detector": "s3fd", "cache_dir": str(tmp_path)}), size="tiny")
    with pytest.raises(ConfigError, match="s3fd_checkpoint"):
        stage.prepare_avatar(PHOTO)


def test_audio_shorter_than_one_video_frame_is_refused(stage, avatar, tmp_path):
    tiny = torch.sin(torch.arange(480) / 5.0)  # 0.03 s at 16 kHz
    mel = wav2lip_mel(tiny, 16000)
    with pytest.raises(InputError, match=r"^speech: about 0\.031 s of audio \(3 mel frames\) is shorter than one video frame \(1/25 s\)$"):
        _run(stage, mel, avatar, 0, 1)
    with pytest.raises(InputError, match=r"needs at least 16"):
        check_speech_length(10, 25.0)  # 0.11 s: longer than a frame, shorter than one mel window
    with pytest.raises(InputError, match="shorter than one video frame"):
        write_mp4(tmp_path / "never.mp4", np.zeros((1, 8, 8, 3), np.uint8), 25.0, Waveform(tiny[:400], 16000))
    assert list(tmp_path.iterdir()) == []


def test_mp4_of_a_tiny_run_has_the_speech_frame_count_fps_and_audio(stage, avatar, speech, tmp_path):
    fps = 25.0
    speech = Waveform(speech.samples[: int(0.61 * speech.sample_rate)], speech.sample_rate)  # keep it fast
    mel = wav2lip_mel(speech.samples, speech.sample_rate)
    count = video_frame_count(speech.samples.numel(), speech.sample_rate, fps)
    assert count == 12  # the official count: 49 mel columns, int(3.2 i) <= 33 for i <= 10, plus one
    frames = _run(stage, mel, avatar, 0, count)
    out = write_mp4(tmp_path / "clip.mp4", frames, fps, speech)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # the temporary file was renamed
    info = read_mp4_info(out)
    assert info.frame_count == count
    assert info.fps == fps
    assert (info.width, info.height) == (256, 256)
    assert info.video_codec in ("h264", "mpeg4")
    assert info.audio_codec == "aac" and info.audio_sample_rate == speech.sample_rate
    # The track's declared duration is the speech's to the millisecond (the mp4 edit list is in
    # the movie timescale, 1/1000 s); decoding yields whole 1024-sample AAC frames, so at most one more.
    assert info.audio_seconds == pytest.approx(speech.seconds, abs=1e-3)
    assert speech.samples.numel() <= info.audio_samples < speech.samples.numel() + 1024
    # as in the official clips, the video stops within the last mel window (0.2 s) plus one frame
    assert 0 <= speech.seconds - count / fps < 0.2 + 1.0 / fps


def test_mp4_refuses_a_frame_count_other_than_the_speech(tmp_path, speech):
    with pytest.raises(ValueError, match="needs 74"):  # 3.091 s: 248 mel columns -> 73 + 1 frames
        write_mp4(tmp_path / "bad.mp4", np.zeros((10, 16, 16, 3), np.uint8), 25.0, speech)
    assert list(tmp_path.iterdir()) == []
