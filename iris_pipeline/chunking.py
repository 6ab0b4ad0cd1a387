"""Chunked inference: the chunk plan, audio stitching, and global frame / mel indexing.

Long scripts are voiced chunk by chunk so that memory stays flat in clip length. This module holds
the arithmetic that makes a chunked run equal to an unchunked one; it knows no stage or model.

Definitions (integer arithmetic is exact unless said):

- Expected speech duration of a text (`expected_seconds`): after collapsing whitespace runs to one
  space, every CJK character (Han, kana, Hangul, CJK punctuation) takes `1 / cjk_chars_per_second`
  and every other character (spaces and punctuation included) `1 / chars_per_second`, with the rates
  of the language (`SPEECH_RATES`: English 14 chars/s, Chinese 4.5 Han/s, Japanese 7 chars/s).
- Chunk plan (`plan_chunks`): the whitespace-normalised script is cut at sentence ends (English: the
  sentence starts NLTK's punkt model finds, as VALL-E X's official splitter; so "Dr. Smith" is never
  cut at this level; other languages: . ! ? … 。！？ and closing quotes), then phrase
  marks (, ; : and CJK 、，；：), then spaces, then (CJK only) between characters, so that no chunk's
  expected duration exceeds `chunk_seconds`; a single word longer than that stays whole and is marked
  `oversized`. The chunks' spans tile the normalised script exactly.
- Frame targets (`allocate_units`): a total imposed on the clip (VALL-E X frames, `L * 75` in
  benchmark mode) is split over the chunks in proportion to their expected durations, each chunk at
  least 1, by largest remainders, so the targets sum exactly to the total.
- Audio stitching (`StitchLayout`, `AudioStitcher`): every chunk but the last is generated `overlap`
  samples longer than its nominal span; chunk k's nominal length is `len(chunk_k) - overlap` (the
  last chunk's is its length). The stitched clip is the concatenation of the nominal spans, so its
  length is `sum(len(chunk_k)) - (K - 1) * overlap`, known in advance when chunk lengths are imposed.
  Boundary k's cross-fade zone is the first `z_k = min(overlap, nominal_{k+1})` samples of chunk k+1's
  nominal span; there chunk k's extra tail (faded out with cos) and chunk k+1's head (faded in with
  sin) are summed: equal power, cos^2 + sin^2 = 1, at sample midpoints t = (i + 1/2) / z_k. Every
  sample outside the zones is a copy of exactly one chunk's sample; tail samples beyond `z_k` (only
  when a chunk is shorter than the overlap) are dropped.
- Frames, mel columns and which columns a prefix of the clip fixes: `timebase` (the one owner of
  that arithmetic). `wav2lip_mel_columns` computes only new columns from the audio they need, so
  streaming costs O(L).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import torch

from iris_pipeline.audio import (
    WAV2LIP_MEL,
    linear_magnitude_to_wav2lip_mel,
    resample_soxr_hq,
    wav2lip_mel,
    wav2lip_mel_basis,
)
from iris_pipeline.errors import InputError
from iris_pipeline.text.vallex_sentences import english_sentence_starts
from iris_pipeline.timebase import (
    MEL_RATE,
    MEL_STFT_WINDOW,
    final_resampled_samples,
    first_resampled_sample,
    mel_audio_start,
    mel_columns_ready,
    resampler_input_start,
)

# --- expected speech duration ---------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechRate:
    """Speaking rate of a language: non-CJK characters and CJK characters per second."""

    chars_per_second: float
    cjk_chars_per_second: float

    def __post_init__(self) -> None:
        if not (self.chars_per_second > 0 and self.cjk_chars_per_second > 0):
            raise InputError(f"speech rate: rates must be > 0, got {self}")


# Typical read-speech rates: English ~150 words/min ~ 14 characters/s (spaces included); Mandarin
# ~4-5 syllables (= Han characters)/s; Japanese ~7-8 morae/s, about 7 kana/kanji per second.
SPEECH_RATES: dict[str, SpeechRate] = {
    "en": SpeechRate(chars_per_second=14.0, cjk_chars_per_second=4.5),
    "zh": SpeechRate(chars_per_second=14.0, cjk_chars_per_second=4.5),
    "ja": SpeechRate(chars_per_second=14.0, cjk_chars_per_second=7.0),
}

_CJK_RANGES = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3000, 0x30FF),  # CJK punctuation, Hiragana, Katakana
    (0x3100, 0x31FF),  # Bopomofo, Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF00, 0xFFEF),  # full-width forms (，！？ ...)
    (0x20000, 0x2FA1F),  # CJK extensions B+
)


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def normalize_whitespace(text: str) -> str:
    """Whitespace runs -> one space, ends stripped: the form the planner and estimates work on."""
    return " ".join(text.split())


def speech_rate(language: str, rates: dict[str, SpeechRate] | None = None) -> SpeechRate:
    table = SPEECH_RATES if rates is None else rates
    if language not in table:
        raise InputError(f"language {language!r}: not supported; supported: {', '.join(sorted(table))}")
    return table[language]


def expected_seconds(text: str, language: str, rates: dict[str, SpeechRate] | None = None) -> float:
    """Expected duration of `text` read aloud (see the module docstring for the exact count)."""
    rate = speech_rate(language, rates)
    norm = normalize_whitespace(text)
    n_cjk = sum(1 for ch in norm if is_cjk(ch))
    return (len(norm) - n_cjk) / rate.chars_per_second + n_cjk / rate.cjk_chars_per_second


_BENCHMARK_SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "The quick brown fox jumps over the lazy dog near the quiet river bank.",
        "Every morning she walks to the station, buys a paper, and reads it on the train.",
        "Numbers, names and places are easy to say; long words take a little longer.",
        "We measured the time it takes to render one clip, and then we did it again.",
    ),
    "zh": (
        "今天天气很好，我们一起去公园散步吧。",
        "他每天早上坐地铁上班，路上看一会儿书。",
        "这个模型可以把文字变成自然流畅的语音。",
        "我们测量了生成一段视频所需要的时间。",
    ),
    "ja": (
        "今日はとても良い天気なので、公園を散歩しましょう。",
        "彼は毎朝電車で会社に行き、本を少し読みます。",
        "このモデルは文章を自然な音声に変えることができます。",
        "一つの動画を作るのにかかる時間を測りました。",
    ),
}


def benchmark_script(seconds: float, language: str, rates: dict[str, SpeechRate] | None = None) -> str:
    """A script whose expected duration is as close to `seconds` as whole words (CJK: characters) allow.

    Fixed sentences are repeated in turn; the last one is cut word by word (character by character for
    CJK) at the point closest to the target.
    """
    if not seconds > 0:
        raise InputError(f"benchmark seconds: must be > 0, got {seconds}")
    speech_rate(language, rates)
    pool = _BENCHMARK_SENTENCES.get(language, _BENCHMARK_SENTENCES["en"])
    text = ""
    index = 0
    while expected_seconds(text, language, rates) < seconds:
        text = f"{text} {pool[index % len(pool)]}".strip()
        index += 1
    # candidate cut points: after every space, after every CJK character, and the whole text
    cuts = sorted({i for i, ch in enumerate(text) if ch == " "}
                  | {i + 1 for i, ch in enumerate(text) if is_cjk(ch)} | {len(text)})
    best = min(cuts, key=lambda c: (abs(expected_seconds(text[:c], language, rates) - seconds), -c))
    return normalize_whitespace(text[:best]) or text


# --- chunk plan ------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"""[.!?…]+["'”’)\]]*(?:\s+|$)|[。！？]+[」』”’）]*\s*""")
_PHRASE_END = re.compile(r"""[,;:]+["'”’)\]]*(?:\s+|$)|[、，；：]+\s*""")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class TextChunk:
    """One chunk of the plan: `text` is `script[start:end]` stripped (script = the plan's)."""

    index: int
    text: str
    start: int
    end: int
    expected_seconds: float
    oversized: bool = False  # a single word longer than chunk_seconds that no boundary could cut


@dataclass(frozen=True)
class ChunkPlan:
    script: str  # the whitespace-normalised script; chunk spans tile it
    language: str
    chunk_seconds: float
    chunks: tuple[TextChunk, ...]

    @property
    def expected_seconds(self) -> float:
        return sum(c.expected_seconds for c in self.chunks)

    @property
    def oversized(self) -> tuple[TextChunk, ...]:
        return tuple(c for c in self.chunks if c.oversized)

    def unit_targets(self, total_units: int, minimums: Sequence[int] | None = None) -> tuple[int, ...]:
        """`total_units` (e.g. VALL-E X frames) split over the chunks by expected duration, each at
        least its minimum; exact sum."""
        return allocate_units([c.expected_seconds for c in self.chunks], total_units, minimums)


def _cut_positions(text: str, start: int, end: int, level: int, language: str) -> list[int]:
    """Positions strictly inside (start, end) where a chunk may end, at one level of the hierarchy."""
    piece = text[start:end]
    if level == 0 and language == "en":  # the sentences VALL-E X's official splitter finds (punkt)
        cuts = [start + i for i in english_sentence_starts(piece)]
    elif level == 0:
        cuts = [start + m.end() for m in _SENTENCE_END.finditer(piece)]
    elif level == 1:
        cuts = [start + m.end() for m in _PHRASE_END.finditer(piece)]
    elif level == 2:
        cuts = [start + m.end() for m in _SPACE.finditer(piece)]
    else:  # between two characters of which one is CJK: never inside a Latin word
        cuts = [start + i for i in range(1, len(piece)) if is_cjk(piece[i - 1]) or is_cjk(piece[i])]
    return [c for c in cuts if start < c < end]


_LEVELS = 4


def plan_chunks(text: str, language: str, chunk_seconds: float = 10.0,
                rates: dict[str, SpeechRate] | None = None,
                first_chunk_seconds: float | None = None) -> ChunkPlan:
    """Cut `text` into chunks of at most `chunk_seconds` of expected speech (see module docstring).

    At each level consecutive pieces are packed greedily while they fit; a piece that does not fit
    alone is cut at the next level, and its parts are packed among themselves only (the pieces of a
    cut sentence are not merged with the neighbouring sentences).

    `first_chunk_seconds` (streaming): the first chunk is cut again, by the same rules, to at most
    that long, and the rest of it becomes the second chunk, so the first chunk is out early.
    """
    if not chunk_seconds > 0:
        raise InputError(f"chunk_seconds: must be > 0, got {chunk_seconds}")
    if first_chunk_seconds is not None and not first_chunk_seconds > 0:
        raise InputError(f"first_chunk_seconds: must be > 0, got {first_chunk_seconds}")
    script = normalize_whitespace(text)
    if not script:
        raise InputError("text: the script is empty")
    speech_rate(language, rates)

    def seconds(a: int, b: int) -> float:
        return expected_seconds(script[a:b], language, rates)

    spans: list[tuple[int, int, bool]] = []

    def place(a: int, b: int, level: int, limit: float = chunk_seconds) -> None:
        if seconds(a, b) <= limit:
            spans.append((a, b, False))
            return
        if level == _LEVELS:
            spans.append((a, b, True))
            return
        cuts = _cut_positions(script, a, b, level, language)
        if not cuts:
            place(a, b, level + 1, limit)
            return
        bounds = [a, *cuts, b]
        run_start: int | None = None  # start of the segments packed so far
        run_end = a
        for seg_start, seg_end in zip(bounds[:-1], bounds[1:], strict=True):
            if run_start is not None and seconds(run_start, seg_end) <= limit:
                run_end = seg_end
                continue
            if run_start is not None:
                spans.append((run_start, run_end, False))
                run_start = None
            if seconds(seg_start, seg_end) <= limit:
                run_start, run_end = seg_start, seg_end
            else:
                place(seg_start, seg_end, level + 1, limit)
        if run_start is not None:
            spans.append((run_start, run_end, False))

    place(0, len(script), 0)
    if first_chunk_seconds is not None and first_chunk_seconds < chunk_seconds and not spans[0][2] \
            and seconds(spans[0][0], spans[0][1]) > first_chunk_seconds:
        a, b, _ = spans[0]
        rest = spans[1:]
        spans.clear()
        place(a, b, 0, first_chunk_seconds)
        head = (spans[0][0], spans[0][1], False)  # shorter than chunk_seconds: the whole span was
        spans[:] = [head, *([(head[1], b, False)] if head[1] < b else []), *rest]
    chunks = tuple(
        TextChunk(index=i, text=script[a:b].strip(), start=a, end=b,
                  expected_seconds=seconds(a, b), oversized=over)
        for i, (a, b, over) in enumerate(spans)
    )
    return ChunkPlan(script=script, language=language, chunk_seconds=chunk_seconds, chunks=chunks)


def allocate_units(weights: Sequence[float], total: int, minimums: Sequence[int] | None = None) -> tuple[int, ...]:
    """Split `total` integer units over `weights`: each its minimum (default 1), the rest by largest
    remainders (ties: first).

    The result sums to `total` exactly; a weight of 0 gets only its minimum.
    """
    count = len(weights)
    if count == 0:
        raise InputError("chunk weights: at least one chunk is needed")
    if any(not (w >= 0 and math.isfinite(w)) for w in weights):
        raise InputError(f"chunk weights: must be finite and >= 0, got {list(weights)}")
    floor_units = [1] * count if minimums is None else [max(1, int(m)) for m in minimums]
    if len(floor_units) != count:
        raise InputError(f"chunk minimums: {len(floor_units)} given for {count} chunks")
    if total < sum(floor_units):
        raise InputError(f"total units: {total} cannot give each of the {count} chunks its minimum "
                         f"({sum(floor_units)} in all)")
    rest = total - sum(floor_units)
    weight_sum = math.fsum(weights)
    if weight_sum == 0:
        shares = [Fraction(rest, count)] * count
    else:
        exact = [Fraction(w) for w in weights]
        exact_sum = sum(exact)
        shares = [rest * w / exact_sum for w in exact]
    floors = [math.floor(s) for s in shares]
    leftover = rest - sum(floors)
    order = sorted(range(count), key=lambda i: (-(shares[i] - floors[i]), i))
    for i in order[:leftover]:
        floors[i] += 1
    return tuple(m + f for m, f in zip(floor_units, floors, strict=True))


# --- audio stitching -------------------------------------------------------------------------------

def crossfade_samples(crossfade_ms: float, sample_rate: int, granularity: int = 1) -> int:
    """Cross-fade length in samples: round(ms * sr / 1000), rounded up to a multiple of `granularity`
    (e.g. 320 so that the overlap is a whole number of EnCodec frames)."""
    if crossfade_ms < 0 or granularity < 1:
        raise InputError(f"crossfade: needs ms >= 0 and granularity >= 1, got {crossfade_ms} ms, {granularity}")
    n = round(crossfade_ms * sample_rate / 1000)
    return -(-n // granularity) * granularity


@dataclass(frozen=True)
class StitchLayout:
    """Where each generated chunk lands in the stitched clip (see the module docstring)."""

    chunk_lengths: tuple[int, ...]  # samples of each generated chunk waveform
    overlap: int  # extra samples generated at the end of every chunk but the last
    nominal_lengths: tuple[int, ...] = field(init=False)
    starts: tuple[int, ...] = field(init=False)  # global start of each chunk's nominal span
    zones: tuple[tuple[int, int], ...] = field(init=False)  # (global start, length) per boundary

    def __post_init__(self) -> None:
        lengths, overlap = tuple(int(n) for n in self.chunk_lengths), int(self.overlap)
        if not lengths:
            raise InputError("chunks: at least one audio chunk is needed")
        if overlap < 0:
            raise InputError(f"overlap: must be >= 0 samples, got {overlap}")
        for k, n in enumerate(lengths[:-1]):
            if n < overlap:
                raise InputError(f"audio chunk {k}: {n} samples, shorter than the {overlap}-sample overlap")
        if lengths[-1] < 0:
            raise InputError(f"audio chunk {len(lengths) - 1}: negative length {lengths[-1]}")
        nominal = tuple(n - overlap for n in lengths[:-1]) + (lengths[-1],)
        starts = tuple(sum(nominal[:k]) for k in range(len(nominal)))
        zones = tuple((starts[k + 1], min(overlap, nominal[k + 1])) for k in range(len(nominal) - 1))
        object.__setattr__(self, "chunk_lengths", lengths)
        object.__setattr__(self, "overlap", overlap)
        object.__setattr__(self, "nominal_lengths", nominal)
        object.__setattr__(self, "starts", starts)
        object.__setattr__(self, "zones", zones)

    @classmethod
    def from_nominal(cls, nominal_lengths: Sequence[int], overlap: int) -> StitchLayout:
        """The layout whose chunks have these nominal lengths (each but the last generated + overlap)."""
        lengths = [int(n) + int(overlap) for n in nominal_lengths[:-1]] + [int(nominal_lengths[-1])]
        return cls(tuple(lengths), overlap)

    @property
    def total_length(self) -> int:
        return sum(self.nominal_lengths)

    def span(self, k: int) -> tuple[int, int]:
        """Global [start, end) of chunk k's nominal span."""
        return self.starts[k], self.starts[k] + self.nominal_lengths[k]


def equal_power_fades(length: int, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(fade_out, fade_in) = (cos, sin) of (pi/2) * (i + 1/2) / length: squares sum to 1."""
    t = (torch.arange(length, dtype=torch.float64) + 0.5) / max(length, 1)
    angle = t * (math.pi / 2)
    return torch.cos(angle).to(dtype=dtype, device=device), torch.sin(angle).to(dtype=dtype, device=device)


def _check_chunk_tensors(chunks: Sequence[torch.Tensor]) -> None:
    for k, c in enumerate(chunks):
        if c.ndim != 1:
            raise InputError(f"audio chunk {k}: expected 1-D samples, got shape {tuple(c.shape)}")


class AudioStitcher:
    """Stitching as chunks arrive: push chunks in order, get back the samples that became final.

    After chunk k (not last) the output up to its nominal end is final; its overlap tail is held for
    the next chunk's cross-fade. Only that tail is kept, so memory does not grow with the clip.
    """

    def __init__(self, overlap: int) -> None:
        if overlap < 0:
            raise InputError(f"overlap: must be >= 0 samples, got {overlap}")
        self.overlap = int(overlap)
        self._tail: torch.Tensor | None = None
        self._count = 0
        self._done = False
        self.emitted = 0  # samples handed out so far

    def push(self, chunk: torch.Tensor, last: bool = False) -> torch.Tensor:
        if self._done:
            raise InputError("audio chunk: pushed after the last chunk")
        _check_chunk_tensors([chunk])
        n, k = chunk.shape[0], self._count
        if not last and n < self.overlap:
            raise InputError(f"audio chunk {k}: {n} samples, shorter than the {self.overlap}-sample overlap")
        body = chunk if last else chunk[: n - self.overlap]
        if self._tail is not None:
            zone = min(self.overlap, body.shape[0])
            fade_out, fade_in = equal_power_fades(zone, chunk.dtype, chunk.device)
            mixed = self._tail[:zone] * fade_out + body[:zone] * fade_in
            body = torch.cat([mixed, body[zone:]])
        self._tail = None if last else chunk[n - self.overlap:].clone()
        self._count += 1
        self._done = last
        self.emitted += body.shape[0]
        return body


# --- streaming Wav2Lip mel ------------------------------------------------------------------------



def wav2lip_mel_columns(prefix: torch.Tensor, sample_rate: int, start_column: int,
                        total_samples: int | None = None, prefix_start: int = 0) -> torch.Tensor:
    """Columns [start_column, R) of the whole clip's `audio.wav2lip_mel`, R = `mel_columns_ready(prefix_start + len(prefix), ...)`.

    Reads only the audio those columns depend on (the resampler's and the STFT's reach before
    `start_column`), so a streaming caller pays for each column once, not for the whole prefix again.
    `prefix` may hold the clip's samples from `prefix_start` on only (a streaming caller keeps no
    more than `mel_audio_start(start_column)` onwards), so memory does not grow with the clip.
    """
    if prefix.ndim != 1:
        raise InputError(f"audio prefix: expected 1-D samples, got shape {tuple(prefix.shape)}")
    n = prefix_start + prefix.shape[0]
    if total_samples is not None and n > total_samples:
        raise InputError(f"audio prefix: {n} samples, longer than the clip's {total_samples}")
    whole = total_samples is not None and n == total_samples
    end_column = mel_columns_ready(n, sample_rate, total_samples)
    start_column = max(0, start_column)
    if start_column >= end_column:
        return torch.zeros(WAV2LIP_MEL.n_mels, 0, dtype=torch.float32, device=prefix.device)
    if prefix_start > mel_audio_start(start_column, sample_rate):
        raise InputError(f"audio prefix: starts at sample {prefix_start}, column {start_column} needs "
                         f"the audio from sample {mel_audio_start(start_column, sample_rate)}")
    final16 = final_resampled_samples(n, sample_rate, total_samples)
    first16 = first_resampled_sample(start_column)
    if first16 < 0:  # the first columns see the reflection at the start: compute from the beginning
        x16 = resample_soxr_hq(prefix, sample_rate, MEL_RATE)
        return wav2lip_mel(x16[:final16], MEL_RATE)[:, start_column:end_column]
    x16 = resampled_range(prefix, sample_rate, first16, final16, prefix_start)
    params = WAV2LIP_MEL
    emphasised = x16[1:] - params.preemphasis * x16[:-1]
    if whole:  # the clip's end is here: the centred STFT's reflection at the end
        emphasised = torch.nn.functional.pad(emphasised[None, None], (0, MEL_STFT_WINDOW // 2), mode="reflect")[0, 0]
    window = torch.hann_window(params.win_length, periodic=True, device=x16.device)
    spec = torch.stft(emphasised, n_fft=params.n_fft, hop_length=params.hop_length,
                      win_length=params.win_length, window=window, center=False, return_complex=True)
    mel = wav2lip_mel_basis(params).to(x16.device) @ spec.abs()[:, : end_column - start_column]
    return linear_magnitude_to_wav2lip_mel(mel, params)


def resampled_range(prefix: torch.Tensor, sample_rate: int, first16: int, end16: int,
                    prefix_start: int = 0) -> torch.Tensor:
    """16 kHz samples [first16, end16) of the whole clip's `audio.resample_soxr_hq`, from its prefix
    (whose first sample is the clip's sample `prefix_start`).

    Resamples only the input those samples need; `end16` must not exceed `final_resampled_samples`
    of the prefix (later samples still depend on audio that has not arrived). Equal to the whole
    clip's samples up to float rounding (soxr filters in blocks).
    """
    if sample_rate == MEL_RATE:
        return prefix[first16 - prefix_start:end16 - prefix_start].float()
    ratio = Fraction(MEL_RATE, sample_rate)
    up, down = ratio.numerator, ratio.denominator
    start = resampler_input_start(first16, sample_rate)
    q = start // down
    local = resample_soxr_hq(prefix[start - prefix_start:], sample_rate, MEL_RATE)
    return local[first16 - q * up: end16 - q * up]
