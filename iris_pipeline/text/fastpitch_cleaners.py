"""`english_cleaners_v2`, the text normalisation FastPitch 1.1's released LJSpeech checkpoint was trained with.

Same steps, in the same order, as NVIDIA DeepLearningExamples' `common/text/cleaners.py`:
transliteration to ASCII with the official table (characters it does not know are dropped), am/pm
times, units and letter-number forms, numbers (currencies, decimals, ordinals, Roman numerals,
multipliers, years), abbreviations, acronyms spelled out (FBI -> f.b.i.), lower case, collapsed
whitespace, slashes as spaces. The official quirks are kept on purpose, because the checkpoint
learned from them: e.g. every number above 1000 that is a multiple of 100 but not of 1000 is read
as hundreds ("12300" -> "one hundred and twenty-three hundred"), and "MIX" reads as a Roman numeral.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

TRANSLITERATION_FILE = Path(__file__).resolve().parents[1] / "data" / "fastpitch_transliteration.json"


@lru_cache(maxsize=1)
def _inflect():
    import inflect

    return inflect.engine()


def _words(number: int | str, **kwargs) -> str:
    return _inflect().number_to_words(number, **kwargs)


# --- transliteration ---------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _transliteration() -> dict[str, str]:
    return json.loads(TRANSLITERATION_FILE.read_text("utf-8"))


def to_ascii(text: str) -> str:
    """The official `unidecoder`: ASCII below 127 kept, the rest looked up, unknown characters dropped.

    Unlike PyPI unidecode, it drops e.g. "…", "—", "½" and CJK, and writes "ü" as "ue".
    """
    table = _transliteration()
    return "".join(c if ord(c) < 127 else table.get(c, "") for c in text)


# --- times ---------------------------------------------------------------------------------------------

_AM_PM = re.compile(r"([0-9]|0[0-9]|1[0-9]|2[0-3]):?([0-5][0-9])?\s*([AaPp][Mm]\b)")


def _spell_am_pm(m: re.Match) -> str:
    hour, minutes, marker = m.group(1), m.group(2), m.group(3)
    text = hour if minutes is None or int(minutes) == 0 else f"{hour} {minutes}"
    return text + (" a.m." if marker[0] in "Aa" else " p.m.")


# --- units, dimensions, letter-number forms -----------------------------------------------------------

_UNIT = re.compile(r"([0-9]+(?:[.,][0-9]+)?)(?:\s?)(tb|gb|mb|kb|ghz|mhz|khz|hz|mm)", re.IGNORECASE)
_UNIT_NAMES = {"tb": "terabyte", "gb": "gigabyte", "mb": "megabyte", "kb": "kilobyte", "ghz": "gigahertz",
               "mhz": "megahertz", "khz": "kilohertz", "hz": "hertz", "mm": "millimeter"}
_NUMBER_PART = r"\d+(?:[,.]\d+)?"
_DIMENSION = re.compile(
    rf"\b({_NUMBER_PART}\s*[xX]\s*{_NUMBER_PART}\s*[xX]\s*{_NUMBER_PART}(?:in|inch|m)?)\b"
    rf"|\b({_NUMBER_PART}\s*[xX]\s*{_NUMBER_PART}(?:in|inch|m)?)\b")
_DIMENSION_UNITS = {"m": "meter", "in": "inch", "inch": "inch"}
_LETTERS_AND_NUMBERS = re.compile(r"((?:[a-zA-Z]+[0-9]|[0-9]+[a-zA-Z])[a-zA-Z0-9']*)", re.IGNORECASE)
_NUMBER_SUFFIXES = ("'s", "s", "th", "nd", "st", "rd")


def _spell_unit(m: re.Match) -> str:
    quantity, unit = m.group(1), _UNIT_NAMES[m.group(2).lower()]
    plural = not unit.endswith("z") and float(quantity.replace(",", "")) > 1
    return f"{quantity} {unit}s" if plural else f"{quantity} {unit}"


def _spell_dimension(m: re.Match) -> str:
    text = "".join(g for g in m.groups() if g is not None)
    text = text.replace(" x ", " by ").replace("x", " by ")
    if text.endswith(tuple(_DIMENSION_UNITS)):
        if text[-2].isdigit():
            text = f"{text[:-1]} {_DIMENSION_UNITS[text[-1:]]}"
        elif text[-3].isdigit():
            text = f"{text[:-2]} {_DIMENSION_UNITS[text[-2:]]}"
    return text


def _digit_groups(digits: str) -> list[str]:
    """How the official code reads a number inside a letter-number word: in pairs, "2 21" for 221."""
    if len(digits) > 2 and digits[-2] == "0":
        return [digits] if digits[-1] == "0" else [digits[:-2], digits[-2], digits[-1]]
    if len(digits) % 2 == 0:
        return [digits[i:i + 2] for i in range(0, len(digits), 2)]
    if len(digits) > 2:
        return [digits[0]] + [digits[i:i + 2] for i in range(1, len(digits), 2)]
    return [digits]


def _split_letters_and_numbers(m: re.Match) -> str:
    parts = re.split(r"(\d+)", m.group(0))
    if parts[-1] == "":
        parts = parts[:-1]
    elif parts[0] == "":
        parts = parts[1:]
    if parts[-1] in _NUMBER_SUFFIXES and parts[-2].isdigit():  # 1920s, AK47's, 20th stay whole
        parts = parts[:-2] + [parts[-2] + parts[-1]]
    out: list[str] = []
    for part in parts:
        out += _digit_groups(part) if part.isdigit() and len(part) < 5 else [part]
    return " ".join(out)


# --- numbers -------------------------------------------------------------------------------------------

_MAGNITUDES = ("trillion", "billion", "million", "thousand", "hundred", "m", "b", "t")
_SHORT_MAGNITUDES = {"m": "million", "b": "billion", "t": "trillion"}
CURRENCY = re.compile(rf"([$€£₩])([0-9.,]*[0-9]+)(?:[ ]?({'|'.join(_MAGNITUDES)})(?=[^a-zA-Z]|$))?",
                      re.IGNORECASE)
_CURRENCY_NAMES = {"$": "dollar", "£": "pound", "€": "euro", "₩": "won"}
_COMMA_NUMBER = re.compile(r"([0-9][0-9,]+[0-9])")
_DECIMAL_NUMBER = re.compile(r"([0-9]+\.[0-9]+)")
_ORDINAL = re.compile(r"[0-9]+(st|nd|rd|th)")
# Two or more symbols: a lone "I" (or "V", "X") is a word, not a numeral.
_ROMAN = re.compile(r"\b(?=[MDCLXVI]+\b)M{0,4}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{2,3})\b")
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
_MULTIPLY = re.compile(r"(\b[0-9]+)(x)([0-9]+)")
_NUMBER = re.compile(r"[0-9]+'s|[0-9]+s|[0-9]+")


def _hundreds(quantity: int | str) -> str:
    value = float(quantity)
    if 1000 < value < 10000 and value % 100 == 0 and value % 1000 != 0:
        return _words(int(value / 100)) + " hundred"
    return _words(quantity)


def spell_currency(m: re.Match) -> str:
    """$3.50 -> "three dollars, fifty cents"; $2.5 billion -> "two point five billion dollars"."""
    unit = _CURRENCY_NAMES[m.group(1)]
    quantity = m.group(2).replace(",", "")
    magnitude = m.group(3)
    if magnitude is not None:
        magnitude = _SHORT_MAGNITUDES.get(magnitude.lower(), magnitude) if len(magnitude) == 1 else magnitude
        return f"{_hundreds(quantity)} {magnitude} {unit}s"
    parts = quantity.split(".")
    if len(parts) > 2:
        return f"{quantity} {unit}s"
    whole = int(parts[0]) if parts[0] else 0
    cents = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    whole_text = f"{_hundreds(whole)} {unit if whole == 1 else unit + 's'}"
    cents_text = f"{_words(cents)} {'cent' if cents == 1 else 'cents'}"
    if whole and cents:
        return f"{whole_text}, {cents_text}"
    if whole or cents:
        return whole_text if whole else cents_text
    return f"zero {unit}s"


def _roman_to_number(m: re.Match) -> str:
    numeral = m.group(0)
    values = [_ROMAN_VALUES[c] for c in numeral]
    # A symbol smaller than the next one subtracts (IV = 4).
    return str(sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values)))


def _spell_number(m: re.Match) -> str:
    _, digits, suffix = re.split(r"(\d+(?:'?\d+)?)", m.group(0))
    number = int(digits)
    if number > 1000 and number % 100 == 0 and number % 1000 != 0:  # the official reads 12300 as hundreds too
        text = _words(number // 100) + " hundred"
    elif 1000 < number < 3000:  # years are read in pairs: "nineteen eighty four"
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
    text = _COMMA_NUMBER.sub(lambda m: m.group(1).replace(",", ""), text)
    text = CURRENCY.sub(spell_currency, text)
    text = _DECIMAL_NUMBER.sub(lambda m: m.group(1).replace(".", " point "), text)
    text = _ORDINAL.sub(lambda m: _words(m.group(0)), text)
    text = _ROMAN.sub(_roman_to_number, text)
    text = _MULTIPLY.sub(lambda m: f"{m.group(1)} by {m.group(3)}", text)
    return _NUMBER.sub(_spell_number, text)


# --- abbreviations and acronyms -----------------------------------------------------------------------

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
_NUMBER_SIGN = re.compile(r"(No[.])(?=[ ]?[0-9])")
_PERCENT = re.compile(r"([ ]?[%])")
_HALF = re.compile("([0-9]½)|(½)")
_URL = re.compile(r"([a-zA-Z])\.(com|gov|org)")
_ACRONYM = re.compile(r"([a-z]*[A-Z][A-Z]+)s?\.?")
_ACRONYM_EXCEPTIONS = {"NVIDIA": "N.VIDIA"}
_EMAIL = re.compile(r"\b(email)\b", re.IGNORECASE)


def expand_abbreviations(text: str) -> str:
    text = _NUMBER_SIGN.sub("Number", text)
    text = _PERCENT.sub(" percent", text)
    text = _HALF.sub(lambda m: "half" if m.group(1) is None else m.group(1)[0] + " and a half", text)
    text = text.replace("&", " and ").replace("@", " at ")
    text = _URL.sub(lambda m: f"{m.group(1)} dot {m.group(2)}", text)
    for pattern, replacement in _ABBREVIATIONS:
        text = pattern.sub(replacement, text)
    return text


def _spell_acronym(m: re.Match) -> str:
    whole, letters = m.group(0), m.group(1)
    text = _ACRONYM_EXCEPTIONS.get(letters, ".".join(letters) + ".")
    if "s" in whole:  # the official test: any lower-case s in the match makes it plural
        text += "'s"
    return text + "." if not text.endswith(".") and whole.endswith(".") else text


def spell_acronyms(text: str) -> str:
    text = _EMAIL.sub("e-mail", text)
    return _ACRONYM.sub(_spell_acronym, text)


# --- the pipeline ------------------------------------------------------------------------------------

_WHITESPACE = re.compile(r"\s+")


def english_cleaners_v2(text: str) -> str:
    """One whitespace-free piece of text -> the normalised text the checkpoint was trained on."""
    text = to_ascii(text)
    text = _AM_PM.sub(_spell_am_pm, text)
    text = _UNIT.sub(_spell_unit, text)
    text = _DIMENSION.sub(_spell_dimension, text)
    text = _LETTERS_AND_NUMBERS.sub(_split_letters_and_numbers, text)
    text = expand_numbers(text)
    text = expand_abbreviations(text)
    text = spell_acronyms(text)
    text = _WHITESPACE.sub(" ", text.lower())
    return re.sub(r"/+", " ", text)


def collapse_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text)


def warm_up() -> None:
    """Load inflect and the transliteration table now rather than on the first sentence."""
    _inflect()
    _transliteration()
