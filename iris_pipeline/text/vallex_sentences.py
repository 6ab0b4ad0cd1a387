"""Sentence splitting for long text, as the official `utils/sentence_cutter.py` does it.

* Chinese: jieba tokens, a sentence ends after a token 。 ！ ？ or …… (exactly as official).
* English: NLTK punkt `sent_tokenize` where nltk and its punkt data are installed (official); without
  them (no run-time download), a rule splitter: a sentence ends at . ! ? (and closing quotes) followed
  by whitespace, except after the abbreviations the English G2P expands (Mr., Dr., ...).
* Japanese: SudachiPy (cut after 補助記号/句点 tokens) where installed (official); otherwise a cut
  after 。 ． ！ ？ ! ?.
"""

from __future__ import annotations

import re

from iris_pipeline.errors import InputError

_ZH_ENDS = {"。", "！", "？", "……"}
_EN_ABBREVIATIONS = {"mrs", "mr", "dr", "st", "co", "jr", "maj", "gen", "drs", "rev", "lt", "hon", "sgt",
                     "capt", "esq", "ltd", "col", "ft", "vs", "etc", "e.g", "i.e"}
_EN_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+")
_JA_BOUNDARY = re.compile(r"(?<=[。．！？!?])")


def _split_chinese(text: str) -> list[str]:
    import jieba

    sentences, current = [], []
    for token in jieba.lcut(text, cut_all=False):
        current.append(token)
        if token in _ZH_ENDS:
            sentences.append("".join(current))
            current = []
    if current:
        sentences.append("".join(current))
    return sentences


def _nltk_english(text: str) -> list[str] | None:
    try:
        import nltk

        return nltk.tokenize.sent_tokenize(text)
    except (ImportError, LookupError):
        return None


def _split_english(text: str) -> list[str]:
    official = _nltk_english(text)
    if official is not None:
        return official
    sentences, start = [], 0
    for match in _EN_BOUNDARY.finditer(text):
        words = text[start:match.start() + 1].split()
        last_word = words[-1].rstrip(".!?\"')]").lower() if words else ""
        if text[match.start()] == "." and last_word in _EN_ABBREVIATIONS:
            continue
        sentences.append(text[start:match.end()].strip())
        start = match.end()
    if text[start:].strip():
        sentences.append(text[start:].strip())
    return sentences


def _split_japanese(text: str) -> list[str]:
    try:
        import sudachipy
    except ImportError:
        return [s for s in _JA_BOUNDARY.split(text) if s]
    sentences, current = [], ""
    for token in sudachipy.Dictionary().create().tokenize(text):
        current += token.surface()
        pos = token.part_of_speech()
        if pos[0] == "補助記号" and pos[1] == "句点":
            sentences.append(current)
            current = ""
    if current:
        sentences.append(current)
    return sentences


def split_sentences(text: str, language: str) -> list[str]:
    """Sentences of `text` in `language` (en, zh, ja), empty ones dropped."""
    splitters = {"en": _split_english, "zh": _split_chinese, "ja": _split_japanese}
    if language not in splitters:
        raise InputError(f"vallex text: cannot split sentences of language {language!r}; use en, zh or ja")
    return [s for s in (p.replace("\n", "").strip(" ") for p in splitters[language](text)) if s]
