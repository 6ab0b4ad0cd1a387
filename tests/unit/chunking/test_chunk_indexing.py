"""Global frame / mel indexing and the streaming Wav2Lip mel: a chunked run equals an unchunked one.

The references here are written independently of iris_pipeline.chunking (integer arithmetic on the
definitions in docs/figures.md and `chunking`'s docstring) or are the real thing (`audio.wav2lip_mel` of the whole stitched clip).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from iris_pipeline.audio import wav2lip_mel
from iris_pipeline.chunking import (
    AudioStitcher,
    StitchLayout,
    crossfade_samples,
    plan_chunks,
    wav2lip_mel_columns,
)
from iris_pipeline.errors import InputError
from iris_pipeline.timebase import (
    MEL_WINDOW,
    Timeline,
    clamped_window_start,
    mel_column_count,
    mel_columns_ready,
    prefix_samples_for_columns,
    video_frame_count,
    window_starts,
)
from tests.support.chunking import stitch_audio, wav2lip_mel_prefix

_WORDS = ["the", "avatar", "speaks,", "slowly;", "and", "then", "stops.", "Why?", "rendering", "a",
          "clip", "of", "speech", "今天天气很好。", "你好，"]

# Rates that are whole hundreds keep the polyphase ratio 16000/sr small (an arbitrary rate such as
# 16001 Hz gives a 320 000-tap filter: correct, but too slow for a property test).
sample_rates = st.one_of(st.sampled_from([16000, 22050, 24000, 32000, 44100, 48000]),
                         st.integers(160, 480).map(lambda k: k * 100))
frame_rates = st.one_of(st.integers(20, 60), st.sampled_from([Fraction(24000, 1001), Fraction(30000, 1001),
                                                              Fraction(60000, 1001), 29.97, 23.976]))


def fps_q(fps: float | Fraction) -> Fraction:
    return Fraction(fps).limit_denominator(1001)  # how timebase.fps_fraction reads a frame rate


def ref_frame_count(n: int, sr: int, fps: float | Fraction) -> int:
    """Wav2Lip's inference.py: a frame per window int(i * 80./fps) that fits in the mel, then one more."""
    m, i = ref_mel_frames(n, sr), 0
    while int(i * (80. / float(fps_q(fps)))) + MEL_WINDOW <= m:
        i += 1
    return i + 1


def ref_mel_frames(n: int, sr: int) -> int:
    n16 = n if sr == 16000 else -(-n * 16000 // sr)
    return 1 + n16 // 200


def ref_window(f: int, fps: float | Fraction, m: int) -> int:
    """Wav2Lip's inference.py: start_idx = int(i * mel_idx_multiplier), multiplier 80./fps, clamped."""
    return min(int(f * (80. / float(fps))), m - MEL_WINDOW)


def _noise(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, generator=gen) * 2 - 1) * 0.3


@pytest.mark.parametrize("fps", [20, 24, 25, 30, 39, 50, 60, 29.97, 24000 / 1001, Fraction(30000, 1001)])
def test_window_start_is_the_one_wav2lip_stage_uses(fps: float | Fraction) -> None:
    frames = torch.arange(0, 5000)
    starts = [clamped_window_start(f, fps, 10**6) for f in range(5000)]
    assert starts == window_starts(frames, float(fps), 10**6).tolist()
    assert starts == [ref_window(f, fps, 10**6) for f in range(5000)]
    # the official float formula is within one of the exact floor (fps 39, frame 117: 239, exact 240)
    assert all(abs(math.floor(80 * Fraction(f) / Fraction(fps)) - s) <= 1 for f, s in enumerate(starts))


def test_indexing_edge_cases() -> None:
    assert video_frame_count(1, 16000, 25) == 1  # shorter than one window: one frame
    assert video_frame_count(16000, 16000, 25) == 22  # 81 columns: int(3.2 i) <= 65 for i <= 20, + 1
    assert video_frame_count(16001, 16000, 25) == 22  # still 81 columns
    assert video_frame_count(15999, 16000, 25) == 22  # 80 columns: i <= 20 still fits
    for n, sr, fps in [(1, 16000, 25), (16001, 16000, 25), (48000 * 7 + 5, 48000, 29.97), (24000, 24000, 24000 / 1001)]:
        assert video_frame_count(n, sr, fps) == ref_frame_count(n, sr, fps)
    assert mel_column_count(16000, 16000) == 81
    # 23999 samples at 24 kHz -> ceil(15999.33) = 16000 at 16 kHz (rounding would give 80 columns)
    assert mel_column_count(23999, 24000) == 81
    with pytest.raises(InputError, match="shorter than one 16-frame Wav2Lip window"):
        clamped_window_start(0, 25, 15)
    with pytest.raises(InputError, match="fps"):
        Timeline(1000, 16000, 0)
    with pytest.raises(InputError, match="do not tile"):
        Timeline(1000, 16000, 25).chunk_frames([400, 500])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3000, 40000), sr=sample_rates)  # torch needs > 400 samples at 16 kHz to reflect-pad
def test_mel_frame_count_is_that_of_audio_wav2lip_mel(n: int, sr: int) -> None:
    assert mel_column_count(n, sr) == wav2lip_mel(_noise(n, 0), sr).shape[1] == ref_mel_frames(n, sr)


@settings(max_examples=100, deadline=None)
@given(words=st.lists(st.sampled_from(_WORDS), min_size=1, max_size=120), chunk_seconds=st.floats(0.5, 12.0),
       seconds=st.floats(0.25, 130.0), fps=frame_rates, sr=sample_rates, crossfade_ms=st.floats(0.0, 60.0))
@example(words=["a"], chunk_seconds=0.5, seconds=0.25, fps=60, sr=16000, crossfade_ms=60.0)
@example(words=["stops."] * 40, chunk_seconds=0.5, seconds=0.25, fps=29.97, sr=44100, crossfade_ms=0.0)
def test_chunked_run_has_the_unchunked_samples_frames_and_windows(
        words: list[str], chunk_seconds: float, seconds: float, fps: float | Fraction, sr: int,
        crossfade_ms: float) -> None:
    plan = plan_chunks(" ".join(words), "en", chunk_seconds)
    n = round(seconds * sr)
    nominal = plan.unit_targets(n)  # benchmark mode: total length imposed, spread by expected duration
    overlap = crossfade_samples(crossfade_ms, sr)
    layout = StitchLayout.from_nominal(nominal, overlap)

    # audio: exactly the unchunked number of samples, known before any chunk is generated
    assert layout.total_length == n

    timeline = Timeline(n, sr, fps)
    m = ref_mel_frames(n, sr)
    assert timeline.num_frames == ref_frame_count(n, sr, fps)
    assert timeline.mel_frames == m
    parts = timeline.chunk_frames(nominal)

    # frames: a partition of 0..F-1 in order, nothing skipped or duplicated at a boundary
    assert parts[0].frame_start == 0 and parts[-1].frame_end == timeline.num_frames
    for a, b in zip(parts[:-1], parts[1:], strict=True):
        assert a.frame_end == b.frame_start
    assert sum(p.frame_count for p in parts) == timeline.num_frames

    q = fps_q(fps)
    for k, part in enumerate(parts):
        start, end = layout.span(k)
        assert 0 <= part.mel_start <= part.mel_end <= max(m, 0)
        for f in range(part.frame_start, part.frame_end):
            # frame f belongs to the chunk whose nominal span holds its start time (the last takes the rest)
            assert Fraction(start, sr) <= f / q and (f / q < Fraction(end, sr) or k == len(parts) - 1)
            if m >= MEL_WINDOW:
                # its window, read from the chunk's mel slice, is the unchunked window
                local = timeline.mel_window_start(f) - part.mel_start
                assert 0 <= local and local + MEL_WINDOW <= part.mel_end - part.mel_start
                assert part.mel_start + local == ref_window(f, fps, m)


@settings(max_examples=30, deadline=None)
@given(seconds=st.floats(0.3, 1.6), sr=sample_rates, fps=frame_rates, crossfade_ms=st.floats(0.0, 40.0),
       cuts=st.lists(st.floats(0.0, 1.0), max_size=4), know_total=st.booleans(), seed=st.integers(0, 2**16))
@example(seconds=0.3, sr=16000, fps=60, crossfade_ms=40.0, cuts=[0.0, 0.0, 1.0], know_total=False, seed=0)
@example(seconds=0.5, sr=44100, fps=29.97, crossfade_ms=20.0, cuts=[0.999], know_total=True, seed=1)
@example(seconds=1.0, sr=16000, fps=20, crossfade_ms=0.0, cuts=[0.5], know_total=False, seed=0)  # shrunk
def test_streamed_frames_get_the_unchunked_mel_values(
        seconds: float, sr: int, fps: float | Fraction, crossfade_ms: float, cuts: list[float],
        know_total: bool, seed: int) -> None:
    n = round(seconds * sr)
    bounds = sorted({0, n, *(round(c * n) for c in cuts)})
    nominal = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    overlap = crossfade_samples(crossfade_ms, sr)
    layout = StitchLayout.from_nominal(nominal, overlap)
    chunks = [_noise(length, seed + k) for k, length in enumerate(layout.chunk_lengths)]
    whole = stitch_audio(chunks, overlap)
    full_mel = wav2lip_mel(whole, sr)  # the unchunked run's mel
    timeline = Timeline(n, sr, fps)
    assert full_mel.shape[1] == timeline.mel_frames
    parts = timeline.chunk_frames(nominal)

    stitcher = AudioStitcher(overlap)
    emitted: list[torch.Tensor] = []
    done = 0  # frames produced so far, in order
    columns: list[torch.Tensor] = []  # the mel as a streaming caller builds it, new columns only
    for k, chunk in enumerate(chunks):
        last = k == len(chunks) - 1
        emitted.append(stitcher.push(chunk, last=last))
        prefix = torch.cat(emitted)
        total = n if (know_total or last) else None
        mel = wav2lip_mel_prefix(prefix, sr, total)
        ready = mel.shape[1]
        assert ready == mel_columns_ready(prefix.shape[0], sr, total)
        # the ready columns are the whole clip's columns
        assert torch.allclose(mel, full_mel[:, :ready], atol=2e-5, rtol=0)
        have = sum(c.shape[1] for c in columns)
        columns.append(wav2lip_mel_columns(prefix, sr, have, total))
        assert have + columns[-1].shape[1] == ready
        now = timeline.frames_ready(ready)
        assert now >= done
        for f in range(done, now):
            w = timeline.mel_window_start(f)
            assert w + MEL_WINDOW <= ready
            assert torch.allclose(mel[:, w:w + MEL_WINDOW], full_mel[:, w:w + MEL_WINDOW], atol=2e-5, rtol=0)
        done = now
        # every chunk whose mel range is covered by the emitted audio has all its frames out
        for part in parts:
            if part.frame_count and prefix_samples_for_columns(part.mel_end, sr, n) <= prefix.shape[0]:
                assert done >= part.frame_end
    assert done == timeline.num_frames  # every frame exactly once
    assert torch.allclose(torch.cat(columns, dim=1), full_mel, atol=2e-5, rtol=0)


@settings(max_examples=100, deadline=None)
@given(prefix=st.integers(0, 200_000), extra=st.integers(1, 100_000), sr=sample_rates)
def test_mel_lookahead_is_bounded(prefix: int, extra: int, sr: int) -> None:
    total = prefix + extra
    ready = mel_columns_ready(prefix, sr, total)
    n16 = prefix * 16000 // sr
    # at most ~half an STFT window plus the resampler's reach (soxr: 256 samples kept) behind the audio
    assert ready >= (n16 - 400 - (256 if sr != 16000 else 0) - 2) // 200
    assert ready <= max(0, (n16 - 400) // 200 + 1)
    assert mel_columns_ready(total, sr, total) == mel_column_count(total, sr)
    cols = max(ready, 1)
    need = prefix_samples_for_columns(cols, sr, total)
    assert mel_columns_ready(need, sr, total) >= cols
    assert need == 0 or mel_columns_ready(need - 1, sr, total) < cols


@pytest.mark.parametrize("seconds", [5, 10, 30, 120])
def test_vallex_benchmark_chunks_give_exactly_l_times_75_frames(seconds: int) -> None:
    """L s of speech: L * 75 codec frames, L * 24000 samples, and the official Wav2Lip frame count
    (the last 0.2 s of mel share the last video frame: 25 L - 3 frames at 25 fps)."""
    from iris_pipeline.chunking import benchmark_script

    plan = plan_chunks(benchmark_script(seconds, "en"), "en", chunk_seconds=10.0)
    frames = plan.unit_targets(seconds * 75)
    overlap = crossfade_samples(20.0, 24000, granularity=320)
    layout = StitchLayout.from_nominal([f * 320 for f in frames], overlap)
    assert layout.total_length == seconds * 24000  # 75 frames/s x 320 samples/frame
    assert all(length % 320 == 0 for length in layout.chunk_lengths)  # whole EnCodec frames per chunk
    timeline = Timeline(layout.total_length, 24000, 25)
    assert timeline.num_frames == ref_frame_count(seconds * 24000, 24000, 25) == seconds * 25 - 3
    parts = timeline.chunk_frames(list(layout.nominal_lengths))
    assert sum(p.frame_count for p in parts) == timeline.num_frames


@settings(max_examples=50, deadline=None)
@given(seconds=st.floats(0.05, 0.5), cut=st.floats(0.0, 1.0), sr=sample_rates, seed=st.integers(0, 2**16))
@example(seconds=0.5, cut=1.0, sr=22050, seed=0)  # shrunk: a margin 3 samples too short failed here
def test_resampled_prefix_is_final_where_it_says(seconds: float, cut: float, sr: int, seed: int) -> None:
    from iris_pipeline.audio import resample_soxr_hq
    from iris_pipeline.timebase import final_resampled_samples

    n = max(2, round(seconds * sr))
    p = round(cut * (n - 1))
    x = _noise(n, seed)
    final16 = final_resampled_samples(p, sr, n)
    full16 = resample_soxr_hq(x, sr, 16000)
    part16 = resample_soxr_hq(x[:p], sr, 16000) if p else x[:0]
    assert final16 <= part16.shape[0]
    # soxr filters in blocks: equal up to float rounding where final
    assert torch.allclose(part16[:final16], full16[:final16], atol=1e-6, rtol=0)


@settings(max_examples=50, deadline=None)
@given(seconds=st.floats(0.1, 0.6), cut=st.floats(0.0, 1.0), start=st.floats(0.0, 1.0), sr=sample_rates,
       seed=st.integers(0, 2**16))
@example(seconds=0.5, cut=1.0, start=0.5, sr=24000, seed=0)  # shrunk: input start without the filter's reach
def test_resampled_range_reads_only_what_it_needs_and_matches_the_full_resample(
        seconds: float, cut: float, start: float, sr: int, seed: int) -> None:
    from iris_pipeline.audio import resample_soxr_hq
    from iris_pipeline.chunking import resampled_range
    from iris_pipeline.timebase import final_resampled_samples

    n = round(seconds * sr)
    p = max(1, round(cut * n))
    x = _noise(n, seed)
    end16 = final_resampled_samples(p, sr, n)
    first16 = round(start * end16)
    full16 = resample_soxr_hq(x, sr, 16000)
    assert torch.allclose(resampled_range(x[:p], sr, first16, end16), full16[first16:end16], atol=1e-6, rtol=0)
