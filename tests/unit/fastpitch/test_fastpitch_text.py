"""FastPitch's english_basic symbol set and English cleaners."""

from __future__ import annotations

import pytest

from iris_pipeline.errors import InputError
from iris_pipeline.text import fastpitch_en as fp


def test_symbol_set_is_english_basic():
    assert fp.N_SYMBOLS == 148
    assert fp.SYMBOLS[:12] == tuple("_-!'(),.:;? ")
    assert fp.SYMBOLS[12] == "A" and fp.SYMBOLS[63] == "z"
    assert fp.SYMBOLS[64] == "@AA" and fp.SYMBOLS[-1] == "@ZH"
    assert fp.PAD_ID == 0 and len(set(fp.SYMBOLS)) == 148


@pytest.mark.parametrize(("text", "cleaned"), [
    ("Dr. Smith has 2 cats.", "doctor smith has two cats."),
    ("It cost $3.50 in 1984!", "it cost three dollars, fifty cents in nineteen eighty four!"),
    ("Mrs.   Brown,  Ltd.", "misess brown, limited"),
    ("The 21st of 1,000,000", "the twenty-first of one million"),
    ("Café naïve", "cafe naive"),
    ("50% & more", "fifty percent and more"),
])
def test_english_cleaners(text, cleaned):
    assert fp.english_cleaners(text) == cleaned


def test_encode_maps_characters_and_arpabet():
    enc = fp.encode("  Hi, {HH AH0 L OW1}!  ")
    assert enc.symbols == ("h", "i", ",", " ", "@HH", "@AH0", "@L", "@OW1", "!")
    assert [fp.SYMBOLS[i] for i in enc.ids] == list(enc.symbols)


def test_characters_outside_the_set_are_dropped():
    assert fp.encode('say "yes" #1').symbols == tuple("say yes one")


@pytest.mark.parametrize("text", ["", "   ", "?! ... ,", "#*~ []"])
def test_text_without_speakable_symbols_is_refused(text):
    with pytest.raises(InputError, match="has no speakable symbol"):
        fp.encode(text, "text")
