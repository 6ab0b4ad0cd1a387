"""LipsyncStream: a job's chunks in, the Wav2Lip frame requests out, equal to the unchunked clip's."""

from __future__ import annotations

import pytest
import torch

from iris_pipeline.audio import wav2lip_mel
from iris_pipeline.errors import InputError
from iris_pipeline.lipsync import LipsyncStream
from iris_pipeline.timebase import MEL_WINDOW, Timeline, clamped_window_start, mel_column_count
from tests.support.chunking import stitch_audio

RATE = 24000
FPS = 25.0
OVERLAP = 960  # 40 ms


def speech_chunks(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    """Generated chunks: every one but the last carries the overlap tail."""
    generator = torch.Generator().manual_seed(seed)
    return [0.2 * torch.randn(n + (OVERLAP if k < len(lengths) - 1 else 0), generator=generator)
            for k, n in enumerate(lengths)]


def stream(features: str, total_samples: int | None = None) -> LipsyncStream:
    return LipsyncStream(avatar="avatar", fps=FPS, features=features, overlap_samples=OVERLAP, sample_rate=RATE,
                         total_samples=total_samples)


def push_all(s: LipsyncStream, chunks: list[torch.Tensor], chunk_mel=None) -> list:
    out = []
    for k, chunk in enumerate(chunks):
        stitched = s.stitch(chunk, last=k == len(chunks) - 1)
        out.append(s.push(stitched, None if chunk_mel is None else chunk_mel(stitched)))
    return out


def check_frames_tile_the_clip(results: list, samples: int) -> None:
    """Frame ranges follow each other without gap or double, up to the clip's frame count, and each
    request holds the mel columns its frames' windows read."""
    timeline = Timeline(samples, RATE, FPS)
    frame = 0
    for result in results:
        request = result.frames
        assert request.frame_start == frame, (request.frame_start, frame)
        frame += request.frame_count
        for f in range(request.frame_start, request.frame_start + request.frame_count):
            local = clamped_window_start(f, FPS, request.total_mel_frames) - request.mel_offset
            assert 0 <= local <= request.mel.shape[1] - MEL_WINDOW, (f, local, request.mel.shape)
    assert frame == timeline.num_frames
    assert results[-1].frames.total_mel_frames == timeline.mel_frames


@pytest.mark.parametrize("imposed", [False, True], ids=["free", "imposed"])
def test_speech_mode_gives_the_whole_clips_mel_and_every_frame_once(imposed):
    lengths = [17000, 30001, 9000, 22000]
    chunks = speech_chunks(lengths)
    whole = stitch_audio(chunks, OVERLAP)
    s = stream("speech", total_samples=whole.shape[0] if imposed else None)
    results = push_all(s, chunks)
    # the stitched bodies are the stitched clip, in order
    assert torch.equal(torch.cat([r.speech.samples for r in results]), whole)
    assert [r.speech.start for r in results] == [0, *torch.tensor(lengths).cumsum(0)[:-1].tolist()]
    assert [r.speech.last for r in results] == [False, False, False, True]
    check_frames_tile_the_clip(results, whole.shape[0])
    mel = wav2lip_mel(whole, RATE)
    for result in results:
        request = result.frames
        expected = mel[:, request.mel_offset:request.mel_offset + request.mel.shape[1]]
        torch.testing.assert_close(request.mel, expected, atol=1e-4, rtol=0)
    assert s.finished


def test_fastpitch_mode_places_each_chunk_mel_on_the_clip_grid():
    lengths = [20000, 25000, 13000]
    chunks = speech_chunks(lengths, seed=1)
    whole = stitch_audio(chunks, OVERLAP)

    def chunk_mel(stitched):  # a mel whose every column holds the clip time of its chunk column
        columns = 1 + round(stitched.samples.shape[0] / RATE * 80)
        times = stitched.start / RATE + torch.arange(columns) / 80
        return times.expand(80, -1).clone()

    results = push_all(stream("fastpitch"), chunks, chunk_mel)
    check_frames_tile_the_clip(results, whole.shape[0])
    for result in results:  # global column c (time c / 80) took the chunk column nearest in time
        request = result.frames
        if request.frame_count:
            times = (request.mel_offset + torch.arange(request.mel.shape[1])) / 80
            assert (request.mel[0] - times).abs().max() <= 2 / 80  # nearest column; the end repeats one


def test_a_clip_shorter_than_one_window_is_one_clear_line():
    s = stream("speech")
    with pytest.raises(InputError, match=r"^speech: 0\.100 s is shorter than one Wav2Lip window"):
        s.push(s.stitch(0.1 * torch.ones(2400), last=True))
    assert mel_column_count(2400, RATE) < MEL_WINDOW


def test_misuse_is_refused():
    s = stream("fastpitch")
    with pytest.raises(ValueError, match="needs the chunk mel"):
        s.push(s.stitch(torch.ones(24000), last=True))
    other = stream("speech")
    stitched = other.stitch(torch.ones(24000 + OVERLAP), last=False)
    with pytest.raises(RuntimeError, match="stitch\\(\\) twice"):
        other.stitch(torch.ones(24000), last=True)
    with pytest.raises(ValueError, match="computes its own mel"):
        other.push(stitched, torch.zeros(80, 81))
    with pytest.raises(RuntimeError, match="takes the chunk that stitch\\(\\) returned last"):
        other.push(stream("speech").stitch(torch.ones(24000), last=True))
    with pytest.raises(ValueError, match="lip-sync features"):
        stream("video")


@pytest.mark.parametrize("features", ["speech", "fastpitch"])
def test_what_the_stream_holds_stays_bounded_in_clip_length(features):
    """Only the mel columns and audio that frames still to come need: about one chunk's worth."""
    chunk = RATE  # 1 s chunks, 30 of them
    chunks = speech_chunks([chunk] * 30, seed=2)
    s = stream(features)
    held = []
    for k, samples in enumerate(chunks):
        stitched = s.stitch(samples, last=k == len(chunks) - 1)
        mel = torch.zeros(80, 1 + round(stitched.samples.shape[0] / RATE * 80)) if features == "fastpitch" else None
        s.push(stitched, mel)
        held.append((s.held_columns, s.held_samples))
    assert max(columns for columns, _ in held) <= 2 * 80 + MEL_WINDOW, held  # the clip has 2400
    assert max(samples for _, samples in held) <= 2 * chunk, held
