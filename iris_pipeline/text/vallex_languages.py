"""Per-language grapheme-to-phoneme of VALL-E X (Plachtaa/VALL-E-X `utils/g2p/{english,mandarin,japanese}.py`).

Each function maps plain text of one language to the IPA-like string the model was trained on:
English `english_to_ipa2` (eng_to_ipa's CMU dictionary), Chinese `chinese_to_ipa` (cn2an, jieba,
pypinyin bopomofo, a fixed bopomofo -> IPA table), Japanese `japanese_to_ipa2` (pyopenjtalk full-context
labels from pyopenjtalk-plus, a dependency whose wheel carries its dictionary; its accent marks differ
from the official naist-jdic on some sentences, see docs/models.md). The tables are the official ones;
the rules are applied in the official order, since later rules rewrite the output of earlier ones.
"""

from __future__ import annotations

import re
from functools import lru_cache

from iris_pipeline.errors import InputError

# ---- English -----------------------------------------------------------------------------------

_ABBREVIATIONS = [(re.compile(rf"\b{short}\.", re.IGNORECASE), long) for short, long in (
    ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"),
    ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"),
    ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"),
    ("esq", "esquire"), ("ltd", "limited"), ("col", "colonel"), ("ft", "fort"),
)]
_COMMA_NUMBER = re.compile(r"([0-9][0-9\,]+[0-9])")
_DECIMAL_NUMBER = re.compile(r"([0-9]+\.[0-9]+)")
_POUNDS = re.compile(r"£([0-9\,]*[0-9]+)")
_DOLLARS = re.compile(r"\$([0-9\.\,]*[0-9]+)")
_ORDINAL = re.compile(r"[0-9]+(st|nd|rd|th)")
_NUMBER = re.compile(r"[0-9]+")
_IPA_TO_IPA2 = ((re.compile("r"), "ɹ"), (re.compile("ʤ"), "dʒ"), (re.compile("ʧ"), "tʃ"))
_DARK_L = re.compile(r"l([^aeiouæɑɔəɛɪʊ ]*(?: |$))")


@lru_cache(maxsize=1)
def _inflect_engine():
    import inflect

    return inflect.engine()


def _dollars(match: re.Match) -> str:
    parts = match.group(1).split(".")
    if len(parts) > 2:
        return match.group(1) + " dollars"
    dollars = int(parts[0]) if parts[0] else 0
    cents = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    dollar_unit = "dollar" if dollars == 1 else "dollars"
    cent_unit = "cent" if cents == 1 else "cents"
    if dollars and cents:
        return f"{dollars} {dollar_unit}, {cents} {cent_unit}"
    if dollars:
        return f"{dollars} {dollar_unit}"
    if cents:
        return f"{cents} {cent_unit}"
    return "zero dollars"


def _number(match: re.Match) -> str:
    words = _inflect_engine().number_to_words
    num = int(match.group(0))
    if 1000 < num < 3000:  # years are read in pairs
        if num == 2000:
            return "two thousand"
        if 2000 < num < 2010:
            return "two thousand " + words(num % 100)
        if num % 100 == 0:
            return words(num // 100) + " hundred"
        return words(num, andword="", zero="oh", group=2).replace(", ", " ")
    return words(num, andword="")


def normalize_english_numbers(text: str) -> str:
    text = _COMMA_NUMBER.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _POUNDS.sub(r"\1 pounds", text)
    text = _DOLLARS.sub(_dollars, text)
    text = _DECIMAL_NUMBER.sub(lambda m: m.group(1).replace(".", " point "), text)
    text = _ORDINAL.sub(lambda m: _inflect_engine().number_to_words(m.group(0)), text)
    return _NUMBER.sub(_number, text)


def english_to_ipa2(text: str) -> str:
    import eng_to_ipa
    from unidecode import unidecode

    text = unidecode(text).lower()
    for pattern, replacement in _ABBREVIATIONS:
        text = pattern.sub(replacement, text)
    text = normalize_english_numbers(text)
    phonemes = re.sub(r"\s+", " ", eng_to_ipa.convert(text))
    phonemes = _DARK_L.sub(lambda m: "ɫ" + m.group(1), phonemes)
    for pattern, replacement in _IPA_TO_IPA2:
        phonemes = pattern.sub(replacement, phonemes)
    return phonemes.replace("...", "…")


# ---- Chinese -----------------------------------------------------------------------------------

_LATIN_TO_BOPOMOFO = [(re.compile(letter, re.IGNORECASE), bopomofo) for letter, bopomofo in (
    ("a", "ㄟˉ"), ("b", "ㄅㄧˋ"), ("c", "ㄙㄧˉ"), ("d", "ㄉㄧˋ"), ("e", "ㄧˋ"), ("f", "ㄝˊㄈㄨˋ"),
    ("g", "ㄐㄧˋ"), ("h", "ㄝˇㄑㄩˋ"), ("i", "ㄞˋ"), ("j", "ㄐㄟˋ"), ("k", "ㄎㄟˋ"), ("l", "ㄝˊㄛˋ"),
    ("m", "ㄝˊㄇㄨˋ"), ("n", "ㄣˉ"), ("o", "ㄡˉ"), ("p", "ㄆㄧˉ"), ("q", "ㄎㄧㄡˉ"), ("r", "ㄚˋ"),
    ("s", "ㄝˊㄙˋ"), ("t", "ㄊㄧˋ"), ("u", "ㄧㄡˉ"), ("v", "ㄨㄧˉ"), ("w", "ㄉㄚˋㄅㄨˋㄌㄧㄡˋ"),
    ("x", "ㄝˉㄎㄨˋㄙˋ"), ("y", "ㄨㄞˋ"), ("z", "ㄗㄟˋ"),
)]

# Order matters: two-symbol finals before their parts.
_BOPOMOFO_TO_IPA = [(re.compile(bopomofo), ipa) for bopomofo, ipa in (
    ("ㄅㄛ", "p⁼wo"), ("ㄆㄛ", "pʰwo"), ("ㄇㄛ", "mwo"), ("ㄈㄛ", "fwo"),
    ("ㄅ", "p⁼"), ("ㄆ", "pʰ"), ("ㄇ", "m"), ("ㄈ", "f"), ("ㄉ", "t⁼"), ("ㄊ", "tʰ"), ("ㄋ", "n"),
    ("ㄌ", "l"), ("ㄍ", "k⁼"), ("ㄎ", "kʰ"), ("ㄏ", "x"), ("ㄐ", "tʃ⁼"), ("ㄑ", "tʃʰ"), ("ㄒ", "ʃ"),
    ("ㄓ", "ts`⁼"), ("ㄔ", "ts`ʰ"), ("ㄕ", "s`"), ("ㄖ", "ɹ`"), ("ㄗ", "ts⁼"), ("ㄘ", "tsʰ"), ("ㄙ", "s"),
    ("ㄚ", "a"), ("ㄛ", "o"), ("ㄜ", "ə"), ("ㄝ", "ɛ"), ("ㄞ", "aɪ"), ("ㄟ", "eɪ"), ("ㄠ", "ɑʊ"),
    ("ㄡ", "oʊ"), ("ㄧㄢ", "jɛn"), ("ㄩㄢ", "ɥæn"), ("ㄢ", "an"), ("ㄧㄣ", "in"), ("ㄩㄣ", "ɥn"),
    ("ㄣ", "ən"), ("ㄤ", "ɑŋ"), ("ㄧㄥ", "iŋ"), ("ㄨㄥ", "ʊŋ"), ("ㄩㄥ", "jʊŋ"), ("ㄥ", "əŋ"),
    ("ㄦ", "əɻ"), ("ㄧ", "i"), ("ㄨ", "u"), ("ㄩ", "ɥ"),
    ("ˉ", "→"), ("ˊ", "↑"), ("ˇ", "↓↑"), ("ˋ", "↓"), ("˙", ""),
    ("，", ","), ("。", "."), ("！", "!"), ("？", "?"), ("—", "-"),
)]
_HAN = re.compile("[\u4e00-\u9fff]")


def number_to_chinese(text: str) -> str:
    import cn2an

    for number in re.findall(r"\d+(?:\.?\d+)?", text):
        text = text.replace(number, cn2an.an2cn(number), 1)
    return text


def chinese_to_bopomofo(text: str) -> str:
    import jieba
    from pypinyin import BOPOMOFO, lazy_pinyin

    text = text.replace("、", "，").replace("；", "，").replace("：", "，")
    out = ""
    for word in jieba.lcut(text, cut_all=False):
        if not _HAN.search(word):
            out += word
            continue
        # pypinyin leaves the first tone unmarked; the table needs it explicit
        syllables = [re.sub(r"([\u3105-\u3129])$", r"\1ˉ", s) for s in lazy_pinyin(word, BOPOMOFO)]
        if out != "":
            out += " "
        out += "".join(syllables)
    return out


def chinese_to_ipa(text: str) -> str:
    text = chinese_to_bopomofo(number_to_chinese(text))
    for pattern, replacement in _LATIN_TO_BOPOMOFO:
        text = pattern.sub(replacement, text)
    for pattern, replacement in _BOPOMOFO_TO_IPA:
        text = pattern.sub(replacement, text)
    text = re.sub("i([aoe])", r"j\1", text)
    text = re.sub("u([aoəe])", r"w\1", text)
    text = re.sub("([sɹ]`[⁼ʰ]?)([→↓↑ ]+|$)", r"\1ɹ`\2", text).replace("ɻ", "ɹ`")
    return re.sub("([s][⁼ʰ]?)([→↓↑ ]+|$)", r"\1ɹ\2", text)


# ---- Japanese (pyopenjtalk-plus: OpenJTalk with its dictionary in the wheel) ------------------------

_JA_CHARS = re.compile(
    r"[A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d]")
_JA_MARKS = re.compile(
    r"[^A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d]")
_ROMAJI_TO_IPA2 = [(re.compile(a), b) for a, b in (
    ("u", "ɯ"), ("ʧ", "tʃ"), ("j", "dʑ"), ("y", "j"), ("ni", "n^i"), ("nj", "n^"), ("hi", "çi"),
    ("hj", "ç"), ("f", "ɸ"), ("I", "i*"), ("U", "ɯ*"), ("r", "ɾ"),
)]
_SOKUON = [(re.compile(a), b) for a, b in (
    (r"Q([↑↓]*[kg])", r"k#\1"), (r"Q([↑↓]*[tdjʧ])", r"t#\1"), (r"Q([↑↓]*[sʃ])", r"s\1"),
    (r"Q([↑↓]*[pb])", r"p#\1"),
)]
_HATSUON = [(re.compile(a), b) for a, b in (
    (r"N([↑↓]*[pbm])", r"m\1"), (r"N([↑↓]*[ʧʥj])", r"n^\1"), (r"N([↑↓]*[tdn])", r"n\1"),
    (r"N([↑↓]*[kg])", r"ŋ\1"),
)]


def japanese_available() -> bool:
    """True when pyopenjtalk is installed WITH its dictionary (it would otherwise download one)."""
    try:
        import pyopenjtalk
    except ImportError:
        return False
    directory = getattr(pyopenjtalk, "OPEN_JTALK_DICT_DIR", b"")
    directory = directory.decode() if isinstance(directory, bytes) else str(directory)
    import os

    return bool(directory) and os.path.isdir(directory)


def _japanese_to_romaji_with_accent(text: str) -> str:
    import pyopenjtalk
    from unidecode import unidecode

    text = text.replace("％", "パーセント")
    sentences = _JA_MARKS.split(text)
    marks = _JA_MARKS.findall(text)
    out = ""
    for i, sentence in enumerate(sentences):
        if _JA_CHARS.match(sentence):
            if out != "":
                out += " "
            labels = pyopenjtalk.extract_fullcontext(sentence)
            for n, label in enumerate(labels):
                phoneme = re.search(r"\-([^\+]*)\+", label).group(1)
                if phoneme in ("sil", "pau"):
                    continue
                out += phoneme.replace("ch", "ʧ").replace("sh", "ʃ").replace("cl", "Q")
                a1 = int(re.search(r"/A:(\-?[0-9]+)\+", label).group(1))
                a2 = int(re.search(r"\+(\d+)\+", label).group(1))
                a3 = int(re.search(r"\+(\d+)/", label).group(1))
                following = re.search(r"\-([^\+]*)\+", labels[n + 1]).group(1)
                a2_next = -1 if following in ("sil", "pau") else int(
                    re.search(r"\+(\d+)\+", labels[n + 1]).group(1))
                if a3 == 1 and a2_next == 1:
                    out += " "  # accent phrase boundary
                elif a1 == 0 and a2_next == a2 + 1:
                    out += "↓"  # falling
                elif a2 == 1 and a2_next == 2:
                    out += "↑"  # rising
        if i < len(marks):
            out += unidecode(marks[i]).replace(" ", "")
    return out


def japanese_to_ipa2(text: str) -> str:
    if not japanese_available():
        raise InputError("vallex text: Japanese needs the pyopenjtalk package with its dictionary "
                         "installed (it is not; no run-time download is done)")
    text = _japanese_to_romaji_with_accent(text).replace("...", "…")
    for pattern, replacement in _SOKUON + _HATSUON + _ROMAJI_TO_IPA2:
        text = pattern.sub(replacement, text)
    return text


G2P = {"en": english_to_ipa2, "zh": chinese_to_ipa, "ja": japanese_to_ipa2}
