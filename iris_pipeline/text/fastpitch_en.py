"""FastPitch's English text front end, exactly as its released LJSpeech checkpoint was trained.

NVIDIA DeepLearningExamples FastPitch 1.1 trained that checkpoint with the `english_basic` symbol
set, the `english_cleaners_v2` normalisation and `p_arpabet 1.0`: every word CMUdict 0.7b
pronounces one way is given as ARPAbet, heteronyms and ambiguous or unknown words stay letters.
`encode` reproduces the official `TextProcessing.encode_text` step by step:

1. currencies are spelled out on the raw text ("€5" before transliteration could make it "E5");
2. each whitespace-separated piece is cleaned on its own (`fastpitch_cleaners`), ARPAbet in curly
   braces (`{HH AH0 L OW1}`) passes through; the pieces are joined by spaces;
3. words become ARPAbet where CMUdict allows (`fastpitch_cmudict`);
4. characters map to symbol ids, characters outside the set are dropped. Leading or trailing spaces
   that cleaning produces ("& more" -> " and more") stay, as in the official output.

148 symbols = pad `_`, `-`, the punctuation `!'(),.:;? ` (space included), 52 ASCII letters, then
the 84 CMUdict ARPAbet symbols prefixed with `@`.

Other languages need their own front end and a checkpoint trained on them: the released English
model has no embeddings for other phonemes (the official `english_mandarin_basic` set, for
instance, adds `#`-prefixed pinyin phonemes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from iris_pipeline.errors import InputError
from iris_pipeline.text import fastpitch_cleaners as cleaners
from iris_pipeline.text.fastpitch_cmudict import ARPABET, entries, heteronyms, word_to_arpabet

PAD = "_"
_SPECIAL = "-"
_PUNCTUATION = "!'(),.:;? "
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SYMBOLS: tuple[str, ...] = tuple(PAD + _SPECIAL + _PUNCTUATION + _LETTERS) + tuple("@" + s for s in ARPABET)
SYMBOL_TO_ID = {s: i for i, s in enumerate(SYMBOLS)}
PAD_ID = 0
N_SYMBOLS = len(SYMBOLS)  # 148
# Symbols that make a sound; punctuation and spaces only shape prosody.
SPEAKABLE_IDS = frozenset(i for s, i in SYMBOL_TO_ID.items() if s.isalpha() or s.startswith("@"))


def warm_up() -> None:
    """Load inflect, the transliteration table and CMUdict now rather than on the first sentence."""
    cleaners.warm_up()
    entries()
    heteronyms()


# --- encoding ----------------------------------------------------------------------------------------

_CURLY = re.compile(r"(.*?)\{(.+?)\}(.*)")
_PIECES = re.compile(r"{[^}]+}|\S+")  # ARPAbet in braces, or a run of non-space characters
_WORDS = re.compile(r"([a-zA-ZÀ-ž]+['][a-zA-ZÀ-ž]{1,2}|[a-zA-ZÀ-ž]+)|([{][^}]+[}]|[^a-zA-ZÀ-ž{}]+)")


@dataclass(frozen=True)
class SpokenWord:
    """A word of the cleaned text and the symbols [start, end) it was encoded as (letters or ARPAbet)."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class EncodedText:
    """Symbol ids of a text, the symbols they stand for (ARPAbet as `@AH0`) and the words they spell."""

    ids: tuple[int, ...]
    symbols: tuple[str, ...]
    cleaned: str  # after english_cleaners_v2, before ARPAbet
    words: tuple[SpokenWord, ...]


def clean(text: str) -> str:
    """Currencies spelled out, then every piece through `english_cleaners_v2`, ARPAbet kept."""
    text = cleaners.CURRENCY.sub(cleaners.spell_currency, text)
    pieces = [p if p.startswith("{") else cleaners.english_cleaners_v2(p) for p in _PIECES.findall(text)]
    return cleaners.collapse_whitespace(" ".join(pieces))


def _to_ids(text: str) -> list[int]:
    """Characters in the symbol set and `{ARPABET}` groups -> ids (the official `text_to_sequence`)."""
    ids: list[int] = []
    while text:
        m = _CURLY.match(text)
        plain = text if m is None else m.group(1)
        ids += [SYMBOL_TO_ID[c] for c in plain if c in SYMBOL_TO_ID]
        if m is None:
            break
        ids += [SYMBOL_TO_ID[p] for p in ("@" + s for s in m.group(2).split()) if p in SYMBOL_TO_ID]
        text = m.group(3)
    return ids


def encode(text: str, name: str = "text") -> EncodedText:
    """Clean `text`, give words CMUdict pronounces one way as ARPAbet, map to symbol ids.

    Text with no speakable symbol is an `InputError`.
    """
    if not isinstance(text, str):
        raise InputError(f"{name}: expected a string, got {type(text).__name__}")
    cleaned = clean(text)
    ids: list[int] = []
    words: list[SpokenWord] = []
    # Token by token (the official joins the tokens, then encodes: same ids, since no token splits
    # a brace group); words and ARPAbet given in braces are kept as spans for subtitles.
    for word, other in _WORDS.findall(cleaned):
        start = len(ids)
        ids += _to_ids(word_to_arpabet(word) if word else other)
        shown = word or (other if other.startswith("{") else "")
        if shown and len(ids) > start:
            words.append(SpokenWord(shown, start, len(ids)))
    if not any(i in SPEAKABLE_IDS for i in ids):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise InputError(f"{name} {shown!r}: has no speakable symbol (no letter or phoneme after cleaning)")
    return EncodedText(tuple(ids), tuple(SYMBOLS[i] for i in ids), cleaned, tuple(words))
