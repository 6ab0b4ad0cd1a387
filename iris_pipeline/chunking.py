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
- Video frames (`Timeline`): frame f covers [f / fps, (f + 1) / fps). The Wav2Lip mel of a clip of
  N samples at rate sr has `M = 1 + ceil(N * 16000 / sr) // 200` columns (exactly
  `audio.wav2lip_mel`'s; the resampler's output length is the ceiling), and frame f's 16-column
  window starts at global column `min(floor(80 * f / fps), M - 16)`, the floor taken with the
  official float arithmetic `int(f * (80. / fps))` that Wav2LipStage uses. The clip has the frames
  the official loop renders (= `video.frame_count_for`): those whose window fits in the M columns,
  plus one showing the last 16 columns. Frame f belongs to the chunk whose nominal span
  [s_k, e_k) contains its start time: `f` in `[ceil(s_k * fps / sr), ceil(e_k * fps / sr))`; this
  partitions the frames, none skipped or doubled.
- Streaming mel (`wav2lip_mel_columns`): the leading columns of the full clip's Wav2Lip mel that depend
  only on the first P samples (up to float rounding). A 16 kHz sample of the soxr HQ resampler moves
  by more than 1e-6 only with inputs within `soxr_reach(sr)` 16 kHz samples of it (measured < 180;
  256 kept, more below 16 kHz), so the prefix fixes its outputs up to that reach before its end;
  column c (centred STFT, window 800, hop 200) depends on 16 kHz samples [200 c - 400, 200 c + 400)
  (column 0 also on sample 400 through the reflection at the start) and on the reflection at the end
  when 200 c + 400 > N16. So column c is final once the 16 kHz samples below 200 c + 400 are final.
  `wav2lip_mel_columns` computes only new columns from the audio they need, so streaming costs O(L).
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
    resampled_length,
    wav2lip_mel,
    wav2lip_mel_basis,
    wav2lip_mel_frames,
)
from iris_pipeline.errors import InputError
from iris_pipeline.text.vallex_sentences import english_sentence_starts
from iris_pipeline.video import MEL_WINDOW, fps_fraction, frame_count_for
from iris_pipeline.video import mel_window_start as unclamped_window_start

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


# --- global frame and mel indexing -----------------------------------------------------------------

_MEL_SR = WAV2LIP_MEL.sample_rate
_MEL_HOP = WAV2LIP_MEL.hop_length
_MEL_HALF_WINDOW = WAV2LIP_MEL.n_fft // 2
_MEL_FPS = Fraction(_MEL_SR, _MEL_HOP)  # 80 columns per second
MEL_WINDOW_SECONDS = float(MEL_WINDOW / _MEL_FPS)  # the shortest clip with a frame: 0.2 s


def _fps(value: float | int | Fraction) -> Fraction:
    """The frame rate as `video.fps_fraction` reads it (29.97 -> 2997/100), after checking it."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"fps: must be finite, got {value}")
    if not value > 0:
        raise InputError(f"fps: must be > 0, got {value}")
    return fps_fraction(value)


def video_frame_count(num_samples: int, sample_rate: int, fps: float | Fraction) -> int:
    """Frames of a clip of N samples: as many as the official Wav2Lip loop renders for its mel
    (`video.frame_count_for`, which the mp4 writer checks); fps as `video.fps_fraction` reads it."""
    return frame_count_for(num_samples, sample_rate, float(_fps(fps)))


def mel_window_start(frame: int, fps: float | Fraction, total_mel_frames: int) -> int:
    """Global first column of frame f's 16-column window: min(floor(80 f / fps), M - 16)."""
    if total_mel_frames < MEL_WINDOW:
        raise InputError(f"audio: {total_mel_frames} mel frames, shorter than one {MEL_WINDOW}-frame "
                         f"Wav2Lip window (0.2 s)")
    _fps(fps)
    return min(unclamped_window_start(frame, fps), total_mel_frames - MEL_WINDOW)


@dataclass(frozen=True)
class ChunkFrames:
    """The video frames of one chunk and the global mel columns they need.

    Feed Wav2Lip `mel = full_mel[:, mel_start:mel_end]`, `mel_offset = mel_start`,
    `total_mel_frames = Timeline.mel_frames`, `frame_start`, `frame_count`.
    """

    index: int
    frame_start: int
    frame_count: int
    mel_start: int  # first global column its frames use (a chunk without frames: an empty range)
    mel_end: int  # one past the last global column its frames use

    @property
    def frame_end(self) -> int:
        return self.frame_start + self.frame_count


@dataclass(frozen=True)
class Timeline:
    """Global indexing of a clip of `num_samples` samples at `sample_rate`, shown at `fps`."""

    num_samples: int
    sample_rate: int
    fps: float | Fraction

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise InputError(f"audio: clip has {self.num_samples} samples; at least 1 is needed")
        if self.sample_rate < 1:
            raise InputError(f"sample_rate: must be >= 1, got {self.sample_rate}")
        _fps(self.fps)

    @property
    def fps_exact(self) -> Fraction:
        return _fps(self.fps)

    @property
    def num_frames(self) -> int:
        return video_frame_count(self.num_samples, self.sample_rate, self.fps)

    @property
    def mel_frames(self) -> int:
        return wav2lip_mel_frames(self.num_samples, self.sample_rate)

    def frame_seconds(self, frame: int) -> tuple[Fraction, Fraction]:
        return frame / self.fps_exact, (frame + 1) / self.fps_exact

    def mel_window_start(self, frame: int) -> int:
        return mel_window_start(frame, self.fps, self.mel_frames)

    def first_frame_at_or_after(self, sample: int) -> int:
        """Smallest f with f / fps >= sample / sr, clipped to the clip's frame count."""
        return min(math.ceil(sample * self.fps_exact / self.sample_rate), self.num_frames)

    def chunk_frames(self, nominal_lengths: Sequence[int]) -> tuple[ChunkFrames, ...]:
        """Frames per chunk for chunks with these nominal sample spans (they must tile the clip)."""
        if sum(nominal_lengths) != self.num_samples or any(n < 0 for n in nominal_lengths):
            raise InputError(f"chunk lengths: {list(nominal_lengths)} do not tile the {self.num_samples}-sample clip")
        result = []
        start_sample = 0
        frame_start = 0
        mel_cursor = 0
        for k, n in enumerate(nominal_lengths):
            end_sample = start_sample + n
            last = k == len(nominal_lengths) - 1
            frame_end = self.num_frames if last else self.first_frame_at_or_after(end_sample)
            if frame_end > frame_start:
                mel_start = self.mel_window_start(frame_start)
                mel_end = self.mel_window_start(frame_end - 1) + MEL_WINDOW
                mel_cursor = mel_start
            else:
                mel_start = mel_end = mel_cursor
            result.append(ChunkFrames(k, frame_start, frame_end - frame_start, mel_start, mel_end))
            start_sample, frame_start = end_sample, frame_end
        return tuple(result)

    def frames_ready(self, ready_columns: int) -> int:
        """How many leading frames have their whole mel window among the first `ready_columns` columns.

        Below M columns the clamp at M - 16 never matters (a clamped window ends at M), so this needs
        no knowledge of where the clip ends.
        """
        if ready_columns >= self.mel_frames:
            return self.num_frames
        return self._frames_below(ready_columns)

    def _frames_below(self, ready_columns: int) -> int:
        # frames with start(f) + 16 <= ready; exactly: 80 f / fps < ready - 15. The window start is
        # the official float formula, so correct the exact estimate by stepping (starts are monotonic).
        def fits(f: int) -> bool:
            return unclamped_window_start(f, self.fps) + MEL_WINDOW <= ready_columns

        limit = ready_columns - MEL_WINDOW + 1
        count = min(max(0, math.ceil(limit * Fraction(float(self.fps)) / _MEL_FPS)), self.num_frames)
        while count > 0 and not fits(count - 1):
            count -= 1
        while count < self.num_frames and fits(count):
            count += 1
        return count


# --- streaming Wav2Lip mel ------------------------------------------------------------------------

def soxr_reach(sample_rate: int) -> int:
    """16 kHz samples on each side of an output sample of `audio.resample_soxr_hq` whose input still
    moves it: measured below 180 for 8-96 kHz (changes under 1e-6 beyond), kept with a margin."""
    return 256 * max(1, -(-_MEL_SR // sample_rate))


def final_resampled_samples(prefix_samples: int, sample_rate: int, total_samples: int | None = None) -> int:
    """Leading 16 kHz samples of the whole clip's resampled audio fixed by its first `prefix_samples`."""
    if total_samples is not None and prefix_samples >= total_samples:
        return resampled_length(total_samples, sample_rate)
    if sample_rate == _MEL_SR:
        return prefix_samples
    return max(0, resampled_length(prefix_samples, sample_rate) - soxr_reach(sample_rate))


def mel_columns_ready(prefix_samples: int, sample_rate: int, total_samples: int | None = None) -> int:
    """Leading columns of the whole clip's `audio.wav2lip_mel` that depend only on its first samples."""
    if total_samples is not None and prefix_samples >= total_samples:
        return wav2lip_mel_frames(total_samples, sample_rate)
    final16 = final_resampled_samples(prefix_samples, sample_rate, total_samples)
    if final16 <= _MEL_HALF_WINDOW:  # column 0 reads sample 400 through the reflection at the start
        return 0
    ready = (final16 - _MEL_HALF_WINDOW) // _MEL_HOP + 1
    if total_samples is not None:
        ready = min(ready, wav2lip_mel_frames(total_samples, sample_rate))
    return ready


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
    first16 = _first_resampled_sample(start_column)
    if first16 < 0:  # the first columns see the reflection at the start: compute from the beginning
        x16 = resample_soxr_hq(prefix, sample_rate, _MEL_SR)
        return wav2lip_mel(x16[:final16], _MEL_SR)[:, start_column:end_column]
    x16 = resampled_range(prefix, sample_rate, first16, final16, prefix_start)
    params = WAV2LIP_MEL
    emphasised = x16[1:] - params.preemphasis * x16[:-1]
    if whole:  # the clip's end is here: the centred STFT's reflection at the end
        emphasised = torch.nn.functional.pad(emphasised[None, None], (0, _MEL_HALF_WINDOW), mode="reflect")[0, 0]
    window = torch.hann_window(params.win_length, periodic=True, device=x16.device)
    spec = torch.stft(emphasised, n_fft=params.n_fft, hop_length=params.hop_length,
                      win_length=params.win_length, window=window, center=False, return_complex=True)
    mel = wav2lip_mel_basis(params).to(x16.device) @ spec.abs()[:, : end_column - start_column]
    return linear_magnitude_to_wav2lip_mel(mel, params)


def _first_resampled_sample(start_column: int) -> int:
    """The first 16 kHz sample column `start_column` reads (one more for the pre-emphasis); < 0 when
    the column sees the reflection at the clip's start."""
    return _MEL_HOP * start_column - _MEL_HALF_WINDOW - 1


def _resampler_input_start(first16: int, sample_rate: int) -> int:
    """The input sample from which `resampled_range` resamples to get 16 kHz sample `first16` as the
    whole clip's: a multiple of `down` (so output phases line up: global j = local j + q * up) early
    enough that `first16` is out of reach of the silence soxr assumes before that start."""
    if sample_rate == _MEL_SR:
        return first16
    ratio = Fraction(_MEL_SR, sample_rate)
    return max(0, (first16 - soxr_reach(sample_rate)) // ratio.numerator) * ratio.denominator


def mel_audio_start(start_column: int, sample_rate: int) -> int:
    """The first sample of the clip that mel columns from `start_column` on depend on."""
    first16 = _first_resampled_sample(max(0, start_column))
    return 0 if first16 < 0 else _resampler_input_start(first16, sample_rate)


def resampled_range(prefix: torch.Tensor, sample_rate: int, first16: int, end16: int,
                    prefix_start: int = 0) -> torch.Tensor:
    """16 kHz samples [first16, end16) of the whole clip's `audio.resample_soxr_hq`, from its prefix
    (whose first sample is the clip's sample `prefix_start`).

    Resamples only the input those samples need; `end16` must not exceed `final_resampled_samples`
    of the prefix (later samples still depend on audio that has not arrived). Equal to the whole
    clip's samples up to float rounding (soxr filters in blocks).
    """
    if sample_rate == _MEL_SR:
        return prefix[first16 - prefix_start:end16 - prefix_start].float()
    ratio = Fraction(_MEL_SR, sample_rate)
    up, down = ratio.numerator, ratio.denominator
    start = _resampler_input_start(first16, sample_rate)
    q = start // down
    local = resample_soxr_hq(prefix[start - prefix_start:], sample_rate, _MEL_SR)
    return local[first16 - q * up: end16 - q * up]
