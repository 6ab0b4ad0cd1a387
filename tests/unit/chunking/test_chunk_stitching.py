"""Audio stitching with equal-power cross-fades of exact, known length (iris_pipeline.chunking)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from iris_pipeline.chunking import (
    AudioStitcher,
    StitchLayout,
    crossfade_samples,
    equal_power_fades,
)
from iris_pipeline.errors import InputError
from tests.support.chunking import stitch_audio

FAST = settings(max_examples=80, deadline=None)


def _chunks(nominal: list[int], overlap: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    layout = StitchLayout.from_nominal(nominal, overlap)
    return [torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1 for n in layout.chunk_lengths]


def test_crossfade_samples_rounds_to_the_codec_frame() -> None:
    assert crossfade_samples(20, 24000) == 480
    assert crossfade_samples(20, 24000, granularity=320) == 640  # two whole EnCodec frames
    assert crossfade_samples(0, 48000, granularity=320) == 0
    with pytest.raises(InputError, match="crossfade"):
        crossfade_samples(-1, 24000)


def test_fades_are_equal_power_and_monotonic() -> None:
    fade_out, fade_in = equal_power_fades(37, torch.float64)
    assert torch.allclose(fade_out ** 2 + fade_in ** 2, torch.ones(37, dtype=torch.float64))
    assert (fade_in.diff() > 0).all() and (fade_out.diff() < 0).all()
    assert torch.allclose(fade_out, fade_in.flip(0))


def test_stitch_of_constant_chunks_is_equal_power_in_the_zone() -> None:
    a, b = torch.ones(10, dtype=torch.float64), torch.ones(7, dtype=torch.float64)
    out = stitch_audio([a, b], overlap=4)
    assert out.shape[0] == 6 + 7
    fade_out, fade_in = equal_power_fades(4, torch.float64)
    assert torch.equal(out[:6], a[:6]) and torch.equal(out[10:], b[4:])
    assert torch.allclose(out[6:10], fade_out + fade_in)


@FAST
@given(nominal=st.lists(st.integers(0, 400), min_size=1, max_size=8), overlap=st.integers(0, 120),
       seed=st.integers(0, 2**16))
@example(nominal=[5, 0, 3], overlap=4, seed=0)  # a chunk shorter than the overlap: zone clipped
@example(nominal=[0], overlap=7, seed=0)
def test_stitch_length_is_exact_and_fades_stay_in_their_zones(nominal: list[int], overlap: int, seed: int) -> None:
    chunks = _chunks(nominal, overlap, seed)
    layout = StitchLayout(tuple(c.shape[0] for c in chunks), overlap)
    out = stitch_audio(chunks, overlap)

    # exact length, known in advance from the nominal spans
    assert layout.nominal_lengths == tuple(nominal)
    assert out.shape[0] == layout.total_length == sum(nominal)
    assert layout.total_length == sum(c.shape[0] for c in chunks) - (len(chunks) - 1) * overlap

    in_zone = torch.zeros(out.shape[0], dtype=torch.bool)
    for k, (zone_start, zone_len) in enumerate(layout.zones):
        start, end = layout.span(k + 1)
        assert start <= zone_start and zone_start + zone_len <= end  # zone inside chunk k+1's span
        assert zone_len == min(overlap, nominal[k + 1])
        in_zone[zone_start:zone_start + zone_len] = True
        tail = chunks[k][nominal[k]:nominal[k] + zone_len]
        head = chunks[k + 1][:zone_len]
        fade_out, fade_in = equal_power_fades(zone_len, torch.float64)
        assert torch.allclose(out[zone_start:zone_start + zone_len], tail * fade_out + head * fade_in)
    # outside the zones every sample is an exact copy of its chunk's sample
    for k in range(len(chunks)):
        start, end = layout.span(k)
        outside = ~in_zone[start:end]
        assert torch.equal(out[start:end][outside], chunks[k][: end - start][outside])


@FAST
@given(nominal=st.lists(st.integers(0, 300), min_size=1, max_size=6), overlap=st.integers(0, 80),
       seed=st.integers(0, 2**16))
def test_streaming_stitcher_emits_the_same_samples_as_soon_as_they_are_final(
        nominal: list[int], overlap: int, seed: int) -> None:
    chunks = _chunks(nominal, overlap, seed)
    layout = StitchLayout(tuple(c.shape[0] for c in chunks), overlap)
    stitcher = AudioStitcher(overlap)
    parts = []
    for k, chunk in enumerate(chunks):
        parts.append(stitcher.push(chunk, last=k == len(chunks) - 1))
        assert stitcher.emitted == layout.span(k)[1]  # everything up to chunk k's nominal end
    assert torch.equal(torch.cat(parts), stitch_audio(chunks, overlap))


def test_stitch_errors_name_the_chunk() -> None:
    with pytest.raises(InputError, match="audio chunk 1: 3 samples, shorter than the 4-sample overlap"):
        stitch_audio([torch.zeros(9), torch.zeros(3), torch.zeros(5)], overlap=4)
    with pytest.raises(InputError, match="audio chunk 0: expected 1-D"):
        stitch_audio([torch.zeros(2, 9)], overlap=0)
    stitcher = AudioStitcher(0)
    stitcher.push(torch.zeros(3), last=True)
    with pytest.raises(InputError, match="after the last chunk"):
        stitcher.push(torch.zeros(3))


def test_equal_power_keeps_uncorrelated_noise_level_through_the_zone() -> None:
    gen = torch.Generator().manual_seed(0)
    n, overlap = 200_000, 100_000
    a = torch.randn(n + overlap, generator=gen, dtype=torch.float64)
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    out = stitch_audio([a, b], overlap)
    zone = out[n:n + overlap]
    assert math.isclose(float(zone.pow(2).mean()), 1.0, rel_tol=0.02)
