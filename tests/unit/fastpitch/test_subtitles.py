"""Symbol and word timings from durations, and the WebVTT writer."""

from __future__ import annotations

import pytest

from iris_pipeline.subtitles import (
    FRAME_SECONDS,
    SymbolTiming,
    WordTiming,
    symbol_timings,
    webvtt,
    word_timings,
    write_webvtt,
)


def test_symbol_timings_follow_cumulative_durations():
    timings = symbol_timings(list("hi there"), [2, 3, 1, 4, 2, 2, 1, 5])
    assert timings[0] == SymbolTiming("h", 0.0, 2 * FRAME_SECONDS)
    assert timings[1].start_s == pytest.approx(2 * FRAME_SECONDS)
    assert timings[-1].end_s == pytest.approx(20 * FRAME_SECONDS)
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in zip(timings, timings[1:], strict=False))


def test_timings_are_capped_at_the_audio_end():
    timings = symbol_timings(list("ab"), [10, 10], end_s=15 * FRAME_SECONDS)
    assert timings[-1].end_s == pytest.approx(15 * FRAME_SECONDS)


def test_words_span_their_letters_and_skip_punctuation():
    timings = symbol_timings(list("don't, go!"), [1] * 10)
    words = word_timings(timings)
    assert [w.word for w in words] == ["don't", "go"]
    assert words[0].start_s == 0.0
    assert words[0].end_s == pytest.approx(5 * FRAME_SECONDS)
    assert words[1].start_s == pytest.approx(7 * FRAME_SECONDS)


def test_arpabet_words_are_shown_in_braces():
    timings = symbol_timings(["@HH", "@AY1", " ", "y", "o"], [1] * 5)
    assert [w.word for w in word_timings(timings)] == ["{HH AY1}", "yo"]


def test_webvtt_format():
    words = [WordTiming("hello", 0.0, 0.5), WordTiming("there", 0.5, 1.25), WordTiming("friend", 3661.0, 3661.5)]
    text = webvtt(words, max_words=2)
    assert text == (
        "WEBVTT\n\n"
        "1\n00:00:00.000 --> 00:00:01.250\nhello there\n\n"
        "2\n01:01:01.000 --> 01:01:01.500\nfriend\n"
    )


def test_write_webvtt_is_atomic_and_complete(tmp_path):
    path = write_webvtt(tmp_path / "clip.vtt", [WordTiming("hi", 0.1, 0.3)])
    assert path.read_text().startswith("WEBVTT\n\n1\n00:00:00.100 --> 00:00:00.300\nhi\n")
    assert [p.name for p in tmp_path.iterdir()] == ["clip.vtt"]  # no temporary file left behind
