"""Chunk planner, speech-duration estimate and unit allocation (iris_pipeline.chunking)."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from iris_pipeline.chunking import (
    SPEECH_RATES,
    SpeechRate,
    allocate_units,
    benchmark_script,
    expected_seconds,
    plan_chunks,
)
from iris_pipeline.errors import InputError

FAST = settings(max_examples=80, deadline=None)

_LATIN_WORDS = ["a", "the", "voice", "avatar", "rendering", "pipeline", "Supercalifragilistic",
                "extraordinarily-long-hyphenated-compound-word", "42", "ok"]
_CJK_WORDS = ["你好", "今天", "天气", "很好", "我们", "一起去公园散步", "こんにちは", "カタカナ"]
_PUNCT = ["", "", "", ",", ";", ":", ".", "!", "?", "，", "。", "、", "！"]


@st.composite
def scripts(draw: st.DrawFn) -> str:
    """Mixed scripts: Latin words with spaces, CJK runs without spaces, punctuation, odd whitespace."""
    tokens = draw(st.lists(st.tuples(st.sampled_from(_LATIN_WORDS + _CJK_WORDS), st.sampled_from(_PUNCT),
                                     st.sampled_from([" ", " ", "", "  ", "\n", "\t "])),
                           min_size=1, max_size=60))
    return "".join(w + p + s for w, p, s in tokens)


def _no_space(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_expected_seconds_counts_characters_at_the_language_rate() -> None:
    assert expected_seconds("abcdefghijklmn", "en") == pytest.approx(1.0)  # 14 chars at 14 chars/s
    assert expected_seconds("  hello   world  ", "en") == pytest.approx(len("hello world") / 14.0)
    assert expected_seconds("今天天气很好，我", "zh") == pytest.approx(8 / 4.5)  # full-width comma counts
    rates = {"en": SpeechRate(chars_per_second=10.0, cjk_chars_per_second=2.0)}
    assert expected_seconds("hello 你好", "en", rates) == pytest.approx(6 / 10 + 2 / 2)


def test_unsupported_language_and_empty_text_are_input_errors() -> None:
    with pytest.raises(InputError, match="language 'xx'"):
        expected_seconds("hello", "xx")
    with pytest.raises(InputError, match="text: the script is empty"):
        plan_chunks(" \n\t ", "en")
    with pytest.raises(InputError, match="chunk_seconds"):
        plan_chunks("hello", "en", chunk_seconds=0)


@pytest.mark.parametrize("language", sorted(SPEECH_RATES))
@pytest.mark.parametrize("seconds", [5, 10, 30])
def test_benchmark_script_is_sized_to_the_clip_length(language: str, seconds: float) -> None:
    text = benchmark_script(seconds, language)
    # whole words (English) or characters (CJK) away from the target: well under half a second
    assert abs(expected_seconds(text, language) - seconds) < 0.5


def test_planner_cuts_sentences_first_and_keeps_short_scripts_whole() -> None:
    assert [c.text for c in plan_chunks("One. Two.", "en", 10).chunks] == ["One. Two."]
    text = "First sentence is here. Second one, with a comma, follows. Third."
    plan = plan_chunks(text, "en", chunk_seconds=2.0)  # 28 chars fit
    # the second sentence is too long and is cut at a comma; its pieces stay within their sentence
    assert [c.text for c in plan.chunks] == ["First sentence is here.", "Second one, with a comma,",
                                             "follows.", "Third."]
    plan = plan_chunks("Tiny. Also tiny. And a third tiny one.", "en", chunk_seconds=1.6)  # 22 chars
    assert [c.text for c in plan.chunks] == ["Tiny. Also tiny.", "And a third tiny one."]


def test_english_sentences_are_the_ones_punkt_finds() -> None:
    # "Dr." does not end a sentence (punkt, as VALL-E X's official splitter): a sentence too long for
    # a chunk is cut at its comma, not after the title (a rule splitter gave "Ask Dr.", "Watson, ...")
    plan = plan_chunks("Ask Dr. Watson, the doctor on call. He knows.", "en", chunk_seconds=2.0)
    assert [c.text for c in plan.chunks] == ["Ask Dr. Watson,", "the doctor on call.", "He knows."]


def test_a_word_longer_than_the_chunk_is_kept_whole_and_flagged() -> None:
    plan = plan_chunks("tiny Pneumonoultramicroscopicsilicovolcanoconiosis word", "en", chunk_seconds=1.0)
    assert [(c.text, c.oversized) for c in plan.chunks] == [
        ("tiny", False), ("Pneumonoultramicroscopicsilicovolcanoconiosis", True), ("word", False)]
    assert plan.oversized == (plan.chunks[1],)


def test_cjk_without_spaces_is_cut_between_characters_as_a_last_resort() -> None:
    plan = plan_chunks("一二三四五六七八九十", "zh", chunk_seconds=1.0)  # 4.5 Han/s: 4 per chunk
    assert [c.text for c in plan.chunks] == ["一二三四", "五六七八", "九十"]
    assert not plan.oversized


@FAST
@given(text=scripts(), chunk_seconds=st.floats(0.3, 12.0), language=st.sampled_from(sorted(SPEECH_RATES)))
@example(text="a,a a", chunk_seconds=0.3, language="en")
@example(text="你好。 今天", chunk_seconds=0.3, language="zh")
def test_plan_keeps_text_and_respects_the_chunk_length(text: str, chunk_seconds: float, language: str) -> None:
    plan = plan_chunks(text, language, chunk_seconds)
    # spans tile the normalised script; texts give the script back modulo whitespace
    assert plan.chunks[0].start == 0 and plan.chunks[-1].end == len(plan.script)
    for a, b in zip(plan.chunks[:-1], plan.chunks[1:], strict=True):
        assert a.end == b.start
    assert "".join(plan.script[c.start:c.end] for c in plan.chunks) == plan.script
    assert _no_space("".join(c.text for c in plan.chunks)) == _no_space(text)
    for c in plan.chunks:
        assert c.text and c.text == c.text.strip()
        assert c.expected_seconds == pytest.approx(expected_seconds(c.text, language))
        if c.expected_seconds > chunk_seconds:
            # only an unsplittable word: no space inside, and no CJK character to cut between
            assert c.oversized and " " not in c.text
            assert not any(ord(ch) >= 0x1100 for ch in c.text), c
        else:
            assert not c.oversized


@FAST
@given(weights=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=30), extra=st.integers(0, 5000))
@example(weights=[0.0, 0.0], extra=1)
@example(weights=[1.0, 1.0, 1.0], extra=1)
def test_allocate_units_sums_exactly_and_is_proportional(weights: list[float], extra: int) -> None:
    total = len(weights) + extra
    units = allocate_units(weights, total)
    assert sum(units) == total and all(u >= 1 for u in units)
    if sum(weights) > 0:
        # largest remainders: each share is within one unit of its exact proportional share of the rest
        for u, w in zip(units, weights, strict=True):
            assert abs((u - 1) - extra * w / sum(weights)) < 1 + 1e-9


def test_allocate_units_refuses_too_few_units() -> None:
    with pytest.raises(InputError, match="cannot give each of the 3 chunks"):
        allocate_units([1.0, 2.0, 3.0], 2)


@FAST
@given(text=scripts(), chunk_seconds=st.floats(0.5, 10.0), seconds=st.sampled_from([5, 10, 30, 120]))
def test_frame_targets_sum_to_the_imposed_vallex_frames(text: str, chunk_seconds: float, seconds: int) -> None:
    plan = plan_chunks(text, "en", chunk_seconds)
    if len(plan.chunks) > seconds * 75:
        return
    targets = plan.unit_targets(seconds * 75)  # VALL-E X: exactly L * 75 frames in benchmark mode
    assert len(targets) == len(plan.chunks) and sum(targets) == seconds * 75


@settings(max_examples=60, deadline=None)
@given(words=st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=9), min_size=1, max_size=120),
       chunk_seconds=st.floats(2.0, 12.0), first=st.floats(0.6, 4.0))
def test_a_short_first_chunk_keeps_the_text_and_the_limits(words, chunk_seconds, first):
    text = ". ".join(" ".join(words[i:i + 7]) for i in range(0, len(words), 7)) + "."
    plain = plan_chunks(text, "en", chunk_seconds=chunk_seconds)
    plan = plan_chunks(text, "en", chunk_seconds=chunk_seconds, first_chunk_seconds=first)
    assert "".join(plan.script[c.start:c.end] for c in plan.chunks) == plan.script
    assert [c.start for c in plan.chunks] == sorted(c.start for c in plan.chunks)
    head = plan.chunks[0]
    if not head.oversized and " " in head.text:  # a single word cannot be cut shorter
        assert head.expected_seconds <= first or head.expected_seconds == plain.chunks[0].expected_seconds
    assert all(c.expected_seconds <= chunk_seconds for c in plan.chunks if not c.oversized)
    # only the first chunk of the plain plan is split: the others are the same
    assert [(c.start, c.end) for c in plan.chunks if c.start >= plain.chunks[0].end] == \
        [(c.start, c.end) for c in plain.chunks[1:]]
