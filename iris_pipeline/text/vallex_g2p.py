"""VALL-E X text front end: language-tagged text -> phoneme ids of the official 70-symbol table.

As the official `PhonemeBpeTokenizer` with `bpe_69.json` and the `cje_cleaners` do it:
1. the text is wrapped in its language tag ([EN]..[EN], [ZH]..[ZH], [JA]..[JA]); `language="mix"`
   expects the caller to tag segments (text outside tags is dropped, as officially);
2. each tagged segment is phonemized by its language's G2P, a space appended, trailing whitespace
   removed and a "." appended unless it ends in . , ! ? - … ~;
3. spaces become "_" and every character becomes its id in the table (unknown characters -> 0);
   one language entry is kept per character.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from iris_pipeline.errors import InputError
from iris_pipeline.text.vallex_languages import G2P

LANGUAGES = ("en", "zh", "ja")
TAGS = {"en": "[EN]", "zh": "[ZH]", "ja": "[JA]"}
_SEGMENT = re.compile(r"\[(EN|ZH|JA)\](.*?)\[\1\]")
_FINAL_PUNCTUATION = re.compile(r"([^\.,!\?\-…~])$")
SYMBOLS_FILE = Path(__file__).resolve().parents[1] / "data" / "vallex_symbols.json"


@lru_cache(maxsize=1)
def symbol_table() -> dict[str, int]:
    """The official symbol -> id table (`utils/g2p/bpe_69.json`, 70 entries)."""
    data = json.loads(SYMBOLS_FILE.read_text("utf-8"))
    return {symbol: i for i, symbol in enumerate(data["symbols"])}


@dataclass(frozen=True)
class Phonemes:
    text: str  # phoneme string, spaces already "_"
    ids: list[int]
    languages: list[str]  # one of LANGUAGES per id


def _clean_segment(language: str, body: str) -> str:
    phonemes = G2P[language](body) + " "
    phonemes = re.sub(r"\s+$", "", phonemes)
    return _FINAL_PUNCTUATION.sub(r"\1.", phonemes)


def tag(text: str, language: str) -> str:
    """The official input preparation: newlines removed, outer spaces stripped, wrapped in the tag."""
    if language not in LANGUAGES and language != "mix":
        raise InputError(f"vallex text: language {language!r} is not supported; use one of "
                         f"{', '.join(LANGUAGES)} or mix (text with [EN]/[ZH]/[JA] tags)")
    text = text.replace("\n", "").strip(" ")
    return text if language == "mix" else TAGS[language] + text + TAGS[language]


def phonemize_tagged(tagged: str) -> Phonemes:
    """Phonemes of every tagged segment, in order, and their ids."""
    table = symbol_table()
    out, languages = "", []
    for match in _SEGMENT.finditer(tagged):
        language = match.group(1).lower()
        segment = _clean_segment(language, match.group(2))
        out += segment
        languages += [language] * len(segment)
    # Other whitespace would make the official tokenizer drop characters (its counts then disagree).
    out = re.sub(r"\s", "_", out)
    ids = [table.get(ch, 0) for ch in out]
    if not ids:
        raise InputError("vallex text: no phonemes: the text is empty (or has no [EN]/[ZH]/[JA] segment)")
    return Phonemes(out, ids, languages)


def phonemize(text: str, language: str) -> Phonemes:
    """Text of `language` (en, zh, ja, or mix with tags) -> official phoneme ids."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("vallex text: the text is empty")
    return phonemize_tagged(tag(text, language))
