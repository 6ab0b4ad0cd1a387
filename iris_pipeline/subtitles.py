"""Symbol and word timings from aligner durations, and a WebVTT writer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iris_pipeline.atomic import atomic_open
from iris_pipeline.models.fastpitch.mel import FASTPITCH_MEL

FRAME_SECONDS = FASTPITCH_MEL.hop_length / FASTPITCH_MEL.sample_rate  # 256 / 22050


@dataclass(frozen=True)
class SymbolTiming:
    symbol: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class WordTiming:
    word: str
    start_s: float
    end_s: float


def symbol_timings(symbols: Sequence[str], durations: Sequence[int] | np.ndarray,
                   frame_seconds: float = FRAME_SECONDS, end_s: float | None = None) -> list[SymbolTiming]:
    """Start/end of each symbol: frame k covers [k, k+1) * frame_seconds; times are capped at `end_s`."""
    durations = np.asarray(durations, dtype=np.int64)
    if len(symbols) != len(durations):
        raise ValueError(f"{len(symbols)} symbols but {len(durations)} durations")
    ends = np.cumsum(durations) * frame_seconds
    starts = ends - durations * frame_seconds
    if end_s is not None:
        starts, ends = np.minimum(starts, end_s), np.minimum(ends, end_s)
    return [SymbolTiming(s, float(a), float(b)) for s, a, b in zip(symbols, starts, ends, strict=True)]


def _is_word_char(symbol: str) -> bool:
    # letters, apostrophes inside words and ARPAbet phonemes; spaces, punctuation and "-" split words
    return symbol.isalpha() or symbol == "'" or symbol.startswith("@")


def word_timings(timings: Sequence[SymbolTiming]) -> list[WordTiming]:
    """Runs of word symbols -> words (text from the cleaned symbols, ARPAbet shown as `{AH0 ...}`)."""
    words: list[WordTiming] = []
    run: list[SymbolTiming] = []

    def flush() -> None:
        if run:
            phones = [t.symbol[1:] for t in run if t.symbol.startswith("@")]
            letters = "".join(t.symbol for t in run if not t.symbol.startswith("@")).strip("'")
            text = letters + ("{" + " ".join(phones) + "}" if phones else "")
            if text:
                words.append(WordTiming(text, run[0].start_s, run[-1].end_s))
            run.clear()

    for t in timings:
        if _is_word_char(t.symbol):
            run.append(t)
        else:
            flush()
    flush()
    return words


def spans_to_word_timings(timings: Sequence[SymbolTiming], spans: Sequence[tuple[str, int, int]]
                          ) -> list[WordTiming]:
    """Words given as (text, first symbol, end symbol) spans -> their timings (ARPAbet shown as the word)."""
    return [WordTiming(text, timings[start].start_s, timings[end - 1].end_s) for text, start, end in spans]


def _vtt_time(seconds: float) -> str:
    millis = max(0, int(round(seconds * 1000)))
    h, rest = divmod(millis, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def webvtt(words: Sequence[WordTiming], max_words: int = 7, max_seconds: float = 4.0) -> str:
    """WebVTT text: consecutive words grouped into cues of at most `max_words` / `max_seconds`."""
    if max_words < 1:
        raise ValueError("max_words must be >= 1")
    cues: list[list[WordTiming]] = []
    for w in words:
        if cues and len(cues[-1]) < max_words and w.end_s - cues[-1][0].start_s <= max_seconds:
            cues[-1].append(w)
        else:
            cues.append([w])
    lines = ["WEBVTT", ""]
    for n, cue in enumerate(cues, start=1):
        lines += [str(n), f"{_vtt_time(cue[0].start_s)} --> {_vtt_time(cue[-1].end_s)}",
                  " ".join(w.word for w in cue), ""]
    return "\n".join(lines)


def write_webvtt(path: str | Path, words: Sequence[WordTiming], max_words: int = 7,
                 max_seconds: float = 4.0) -> Path:
    """Write `webvtt(words)` to `path` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    text = webvtt(words, max_words=max_words, max_seconds=max_seconds)
    with atomic_open(path, "w", newline="\n") as f:
        f.write(text)
    return path
