"""VALL-E X text front end: official symbol ids for fixed sentences, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iris_pipeline.errors import InputError
from iris_pipeline.text.vallex_g2p import phonemize, symbol_table
from iris_pipeline.text.vallex_languages import japanese_available
from iris_pipeline.text.vallex_sentences import split_sentences

# Ids read off the official table (utils/g2p/bpe_69.json), one per phoneme character.
OFFICIAL = {"_": 16, ".": 10, ",": 8, "*": 7, "`": 17, "a": 18, "d": 20, "h": 24, "i": 25, "l": 28,
            "n": 30, "o": 31, "s": 33, "t": 34, "w": 37, "x": 38, "y": 39, "z": 40, "ð": 44, "ɑ": 46,
            "ə": 48, "ɛ": 49, "ɪ": 51, "ɫ": 52, "ɹ": 55, "ʃ": 57, "ʊ": 58, "ˈ": 62, "⁼": 66, "↑": 67,
            "→": 68, "↓": 69}


def test_symbol_table_is_the_official_one():
    table = symbol_table()
    assert len(table) == 70
    assert [table[s] for s in ("[UNK]", "!", "N", "_", "`", "a", "z", "~", "æ", "ʰ", "θ", "…", "↓")] == \
        [0, 5, 13, 16, 17, 18, 40, 41, 42, 61, 64, 65, 69]
    for symbol, index in OFFICIAL.items():
        assert table[symbol] == index


def test_english_sentence():
    # eng_to_ipa: "hɛˈloʊ wərld"; dark l before "d"; r -> ɹ; final "."
    p = phonemize("Hello world", "en")
    assert p.text == "hɛˈloʊ_wəɹɫd."
    assert p.ids == [24, 49, 62, 28, 31, 58, 16, 37, 48, 55, 52, 20, 10]
    assert p.languages == ["en"] * 13


def test_english_abbreviation_and_existing_final_punctuation():
    p = phonemize("This is Mr. Smith,", "en")
    assert p.text == "ðɪs_ɪz_ˈmɪstəɹ_smɪθ,"
    assert p.ids[:4] == [44, 51, 33, 16] and p.ids[-1] == 8


def test_unknown_characters_map_to_unk():
    # an out-of-dictionary word comes back raw with "*"; q and c are not in the table -> id 0
    p = phonemize("Zyqc", "en")
    assert p.text == "zyqc*."
    assert p.ids == [40, 39, 0, 0, 7, 10]


def test_chinese_sentence():
    # 你好 -> ㄋㄧˇ ㄏㄠˇ -> n i ↓↑ x ɑʊ ↓↑ ; "。" appended as "."
    p = phonemize("你好", "zh")
    assert p.text == "ni↓↑xɑʊ↓↑."
    assert p.ids == [30, 25, 69, 67, 38, 46, 58, 69, 67, 10]
    assert set(p.languages) == {"zh"}


def test_chinese_retroflex_and_numbers():
    # 是 -> ㄕˋ -> s` + apical ɹ` + ↓ ; 3 -> 三 -> s a n →
    assert phonemize("是", "zh").text == "s`ɹ`↓."
    assert phonemize("3", "zh").text == "san→."


def test_mixed_text_keeps_a_language_per_symbol():
    p = phonemize("[EN]Hi[EN][ZH]你好[ZH]", "mix")
    assert p.text == "haɪ.ni↓↑xɑʊ↓↑."
    assert p.languages == ["en"] * 4 + ["zh"] * 10


@pytest.mark.parametrize("language", ["fr", "english", "", "auto"])
def test_unsupported_language_is_one_clear_line(language):
    with pytest.raises(InputError) as info:
        phonemize("Hello", language)
    message = str(info.value)
    assert "\n" not in message and repr(language) in message and "not supported" in message


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_text_is_a_clear_error(text):
    with pytest.raises(InputError, match="empty"):
        phonemize(text, "en")


def test_mix_without_tags_gives_no_phonemes():
    with pytest.raises(InputError, match="no phonemes"):
        phonemize("plain text without tags", "mix")


def test_japanese_without_pyopenjtalk_is_a_clear_error(monkeypatch):
    """Set-up installs pyopenjtalk-plus; a machine without it (the import fails) gets one clear line."""
    import sys

    monkeypatch.setitem(sys.modules, "pyopenjtalk", None)  # makes `import pyopenjtalk` raise ImportError
    assert not japanese_available()
    with pytest.raises(InputError, match="pyopenjtalk"):
        phonemize("こんにちは", "ja")


def test_japanese_comes_with_set_up():
    assert japanese_available(), "set-up installs pyopenjtalk-plus, whose wheel carries the dictionary"


def test_sentence_splitting():
    assert split_sentences("现在我们试一下。因为很不幸！嗯......好", "zh") == ["现在我们试一下。", "因为很不幸！", "嗯......好"]
    assert split_sentences("Hello Mr. Smith. How are you? Fine!", "en") == \
        ["Hello Mr. Smith.", "How are you?", "Fine!"]
    with pytest.raises(InputError):
        split_sentences("x", "fr")


OFFICIAL_OUTPUTS = json.loads((Path(__file__).parent / "official_phonemes.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("row", OFFICIAL_OUTPUTS["sentences"], ids=lambda row: row["text"][:24])
def test_matches_the_official_cleaner_output(row):
    """Phonemes and ids the official `cje_cleaners` + `bpe_69.json` gave for these sentences."""
    p = phonemize(row["text"], row["language"])
    assert p.text == row["phonemes"]
    assert p.ids == row["ids"]
