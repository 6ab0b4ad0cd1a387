"""FastPitch's English text front end: the `english_basic` symbol set and the English cleaners.

Mirrors `common/text/` of NVIDIA DeepLearningExamples FastPitch 1.1: 148 symbols = pad `_`, `-`,
the punctuation `!'(),.:;? ` (space included), 52 ASCII letters, then the 84 CMUdict ARPAbet
symbols prefixed with `@`. Text is transliterated to ASCII (unidecode), lower-cased, numbers and
currency are spelled out (inflect), abbreviations expanded and whitespace collapsed; characters
outside the symbol set are dropped, as the official `symbols_to_sequence` does.

The released checkpoint was trained with `p_arpabet 1.0` (words found in CMUdict given as
ARPAbet, the rest as letters), so letters are valid input too. We feed letters only: CMUdict is
not shipped and nothing is downloaded at run time. ARPAbet can still be passed explicitly in
curly braces, e.g. `{HH AH0 L OW1}`, as in the official code.

Other languages need their own front end: a symbol set the checkpoint was trained on (the
official `english_mandarin_basic` adds `#`-prefixed pinyin phonemes with tones and Chinese
punctuation, read with jieba/pypinyin), a transliteration and number reader for that language
(unidecode alone turns e.g. German or French into lossy ASCII and inflect only speaks English),
and a checkpoint trained on that language: the released English model has no embeddings for
other phonemes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from iris_pipeline.errors import InputError

PAD = "_"
_SPECIAL = "-"
_PUNCTUATION = "!'(),.:;? "
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# CMUdict's phone set with stress marks, in the official order.
ARPABET = (
    "AA AA0 AA1 AA2 AE AE0 AE1 AE2 AH AH0 AH1 AH2 AO AO0 AO1 AO2 AW AW0 AW1 AW2 AY AY0 AY1 AY2 "
    "B CH D DH EH EH0 EH1 EH2 ER ER0 ER1 ER2 EY EY0 EY1 EY2 F G HH IH IH0 IH1 IH2 IY IY0 IY1 IY2 "
    "JH K L M N NG OW OW0 OW1 OW2 OY OY0 OY1 OY2 P R S SH T TH UH UH0 UH1 UH2 UW UW0 UW1 UW2 "
    "V W Y Z ZH"
).split()

SYMBOLS: tuple[str, ...] = tuple(PAD + _SPECIAL + _PUNCTUATION + _LETTERS) + tuple("@" + s for s in ARPABET)
SYMBOL_TO_ID = {s: i for i, s in enumerate(SYMBOLS)}
PAD_ID = 0
N_SYMBOLS = len(SYMBOLS)  # 148
# Symbols that make a sound; punctuation and spaces only shape prosody.
SPEAKABLE_IDS = frozenset(i for s, i in SYMBOL_TO_ID.items() if s.isalpha() or s.startswith("@"))

# --- cleaners --------------------------------------------------------------------------------------

_WHITESPACE = re.compile(r"\s+")
_ABBREVIATIONS = [
    (re.compile(rf"\b{short}\.", re.IGNORECASE), long)
    for short, long in [
        ("mrs", "misess"), ("ms", "miss"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"),
        ("co", "company"), ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"),
        ("rev", "reverend"), ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"),
        ("capt", "captain"), ("esq", "esquire"), ("ltd", "limited"), ("col", "colonel"),
        ("ft", "fort"), ("sen", "senator"), ("etc", "et cetera"),
    ]
]
_NO_PERIOD = re.compile(r"(No[.])(?=[ ]?[0-9])")
_PERCENT = re.compile(r"([ ]?[%])")
_HALF = re.compile("([0-9]½)|(½)")
_URL = re.compile(r"([a-zA-Z])\.(com|gov|org)")

_COMMA_NUMBER = re.compile(r"([0-9][0-9,]+[0-9])")
_DECIMAL_NUMBER = re.compile(r"([0-9]+\.[0-9]+)")
_CURRENCY = re.compile(r"([$€£₩])([0-9.,]*[0-9]+)(?:[ ]?(trillion|billion|million|thousand|hundred|m|b|t)"
                       r"(?=[^a-zA-Z]|$))?", re.IGNORECASE)
_CURRENCY_NAMES = {"$": "dollar", "£": "pound", "€": "euro", "₩": "won"}
_MAGNITUDE_NAMES = {"m": "million", "b": "billion", "t": "trillion"}
_ORDINAL = re.compile(r"[0-9]+(st|nd|rd|th)")
_MULTIPLY = re.compile(r"(\b[0-9]+)(x)([0-9]+)")
_NUMBER = re.compile(r"[0-9]+'s|[0-9]+s|[0-9]+")


@lru_cache(maxsize=1)
def _inflect():
    import inflect

    return inflect.engine()


def warm_up() -> None:
    """Import the number speller now (inflect takes a while to import) rather than on the first number."""
    _inflect()


def _words(number: int | str, **kwargs) -> str:
    return _inflect().number_to_words(number, **kwargs)


def _spell_hundreds(quantity: str) -> str:
    value = float(quantity)
    if 1000 < value < 10000 and value % 100 == 0 and value % 1000 != 0:
        return _words(int(value // 100)) + " hundred"
    return _words(quantity)


def _spell_currency(m: re.Match) -> str:
    unit = _CURRENCY_NAMES[m.group(1)]
    quantity = m.group(2).replace(",", "")
    magnitude = m.group(3)
    if magnitude is not None:
        magnitude = _MAGNITUDE_NAMES.get(magnitude.lower(), magnitude.lower())
        return f"{_spell_hundreds(quantity)} {magnitude} {unit}s"
    parts = quantity.split(".")
    if len(parts) > 2:
        return f"{quantity} {unit}s"
    whole = int(parts[0]) if parts[0] else 0
    cents = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    whole_text = f"{_spell_hundreds(str(whole))} {unit if whole == 1 else unit + 's'}"
    cents_text = f"{_words(cents)} {'cent' if cents == 1 else 'cents'}"
    if whole and cents:
        return f"{whole_text}, {cents_text}"
    if whole:
        return whole_text
    if cents:
        return cents_text
    return f"zero {unit}s"


def _spell_number(m: re.Match) -> str:
    _, digits, suffix = re.split(r"(\d+(?:'?\d+)?)", m.group(0))
    number = int(digits)
    if 1000 < number < 10000 and number % 100 == 0 and number % 1000 != 0:
        text = _words(number // 100) + " hundred"
    elif 1000 < number < 3000:  # years are read in pairs: "nineteen eighty-four"
        if number == 2000:
            text = "two thousand"
        elif 2000 < number < 2010:
            text = "two thousand " + _words(number % 100)
        elif number % 100 == 0:
            text = _words(number // 100) + " hundred"
        else:
            text = _words(number, andword="", zero="oh", group=2).replace(", ", " ").replace("-", " ")
    else:
        text = _words(number, andword="and").replace("-", " ").replace(",", "")
    if suffix in ("'s", "s"):
        text = text[:-1] + "ies" if text.endswith("y") else text + suffix
    return text


def expand_numbers(text: str) -> str:
    """Spell out numbers, currency, decimals, ordinals and `NxM` as English words."""
    text = _COMMA_NUMBER.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _CURRENCY.sub(_spell_currency, text)
    text = _DECIMAL_NUMBER.sub(lambda m: m.group(1).replace(".", " point "), text)
    text = _ORDINAL.sub(lambda m: _words(m.group(0)), text)
    text = _MULTIPLY.sub(lambda m: f"{m.group(1)} by {m.group(3)}", text)
    return _NUMBER.sub(_spell_number, text)


def expand_abbreviations(text: str) -> str:
    text = _NO_PERIOD.sub(lambda m: "Number" if m.group(0)[0] == "N" else "number", text)
    text = _PERCENT.sub(" percent", text)
    text = _HALF.sub(lambda m: "half" if m.group(1) is None else m.group(1)[0] + " and a half", text)
    text = text.replace("&", " and ").replace("@", " at ")
    text = _URL.sub(lambda m: f"{m.group(1)} dot {m.group(2)}", text)
    for pattern, replacement in _ABBREVIATIONS:
        text = pattern.sub(replacement, text)
    return text


def to_ascii(text: str) -> str:
    from unidecode import unidecode

    return unidecode(text)


def english_cleaners(text: str) -> str:
    """ASCII, lower case, numbers and abbreviations spelled out, whitespace collapsed."""
    text = to_ascii(text).lower()
    text = expand_numbers(text)
    text = expand_abbreviations(text)
    return _WHITESPACE.sub(" ", text)


# --- encoding ----------------------------------------------------------------------------------------

_CURLY = re.compile(r"(.*?)\{(.+?)\}(.*)")


@dataclass(frozen=True)
class EncodedText:
    """Symbol ids of a text and the symbols they stand for (ARPAbet as `@AH0`)."""

    ids: tuple[int, ...]
    symbols: tuple[str, ...]
    cleaned: str


def _chars_to_ids(text: str) -> list[int]:
    return [SYMBOL_TO_ID[c] for c in text if c in SYMBOL_TO_ID]


def encode(text: str, name: str = "text") -> EncodedText:
    """Clean `text` and map it to symbol ids; text with no speakable symbol is an `InputError`."""
    if not isinstance(text, str):
        raise InputError(f"{name}: expected a string, got {type(text).__name__}")
    ids: list[int] = []
    cleaned_parts: list[str] = []
    # Currency first, as the official encoder does: transliteration would turn "€" into "EUR".
    rest = _CURRENCY.sub(_spell_currency, text)
    while rest:
        m = _CURLY.match(rest)
        plain = rest if m is None else m.group(1)
        cleaned = english_cleaners(plain)
        cleaned_parts.append(cleaned)
        ids += _chars_to_ids(cleaned)
        if m is None:
            break
        phones = ["@" + p for p in m.group(2).split()]
        ids += [SYMBOL_TO_ID[p] for p in phones if p in SYMBOL_TO_ID]
        cleaned_parts.append("{" + m.group(2) + "}")
        rest = m.group(3)
    # The official encoder strips the edges of the collapsed text; leading/trailing spaces carry no sound.
    while ids and ids[0] == SYMBOL_TO_ID[" "]:
        ids.pop(0)
    while ids and ids[-1] == SYMBOL_TO_ID[" "]:
        ids.pop()
    if not any(i in SPEAKABLE_IDS for i in ids):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise InputError(f"{name} {shown!r}: has no speakable symbol (no letter or phoneme after cleaning)")
    return EncodedText(tuple(ids), tuple(SYMBOLS[i] for i in ids), "".join(cleaned_parts).strip())
