"""Fine-tuning data: a folder of (audio, transcript) pairs -> phoneme ids + EnCodec codes.

Layout of the folder (flat, no sub-folders):

    NAME.wav   (or .flac / .ogg)  speech of one utterance, any sample rate, mono or stereo (averaged)
    NAME.txt   its transcript, UTF-8, one utterance per file

The transcript is in the dataset's language (`en`, `zh` or `ja`); a transcript that carries its own
VALL-E X language tags (`[EN]...[EN]`, `[ZH]...[ZH]`, `[JA]...[JA]`) is read as mixed-language text.

Every pair is checked before it is used. A pair is skipped, and reported by NAME with the reason, when
the audio is missing, unreadable, silent or outside the allowed duration, the transcript is missing or
empty, its letters are not in a script of its language, the G2P fails on it, or its length does not fit
the audio's (fewer than `min_frames_per_token` or more than `max_frames_per_token` EnCodec frames per
phoneme id; the official AR stops at 16 frames per text token). Nothing bad is used silently.

Audio is resampled to 24 kHz and encoded once with EnCodec (6 kbps, 8 codebooks); the codes are cached
in a `DiskCache` keyed by the audio file's bytes and the EnCodec weights, so a second run (or a second
epoch) never re-encodes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from iris_pipeline.audio import check_waveform, read_audio
from iris_pipeline.cache import DiskCache, EntrySchema, TensorSpec, content_hash, tensor_hash
from iris_pipeline.dsp import resample
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.models.vallex.config import LANGUAGE_IDS, NUM_AUDIO_TOKENS, NUM_QUANTIZERS
from iris_pipeline.text.vallex_g2p import LANGUAGES, phonemize
from iris_pipeline.timebase import CODEC_HOP, CODEC_RATE

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
TRANSCRIPT_SUFFIX = ".txt"
_TAGGED = re.compile(r"\[(EN|ZH|JA)\](.*?)\[\1\]", re.DOTALL)
_CODES_FORMAT = "vallex-finetune-codes-v1"
# cached codes: int16 [T, 8], every code an EnCodec codebook index
CODES_CACHE_SCHEMA = EntrySchema(
    tensors={"codes": TensorSpec(torch.int16, ("T", NUM_QUANTIZERS))},
    values={"format": str},
    check=lambda entry: None if entry["format"] == _CODES_FORMAT and
    bool(((entry["codes"] >= 0) & (entry["codes"] < NUM_AUDIO_TOKENS)).all())
    else "codes outside the codebook or another format",
)

# Unicode script words (from unicodedata.name) allowed for the letters of each language. Latin is
# allowed in zh and ja because their official G2Ps spell Latin letters.
_SCRIPTS: dict[str, tuple[str, ...]] = {
    "en": ("LATIN",),
    "zh": ("CJK", "LATIN"),
    "ja": ("HIRAGANA", "KATAKANA", "CJK", "LATIN"),
}
_MAX_UNKNOWN_SYMBOL_SHARE = 0.2  # phoneme characters outside the 70-symbol table (id 0)


@dataclass(frozen=True)
class DataLimits:
    """What a usable pair looks like."""

    min_seconds: float = 0.5
    max_seconds: float = 22.0  # the official training utterances were at most 22 s
    min_frames_per_token: float = 1.0
    max_frames_per_token: float = 16.0  # the official AR length cap per text token

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds < self.max_seconds:
            raise ConfigError(f"finetune data: need 0 < min_seconds < max_seconds, got "
                              f"{self.min_seconds} and {self.max_seconds}")
        if not 0 < self.min_frames_per_token < self.max_frames_per_token:
            raise ConfigError(f"finetune data: need 0 < min_frames_per_token < max_frames_per_token, got "
                              f"{self.min_frames_per_token} and {self.max_frames_per_token}")


@dataclass(frozen=True)
class Utterance:
    """One usable pair: phoneme ids with the model language id of each, and EnCodec codes."""

    name: str
    text: torch.Tensor  # LongTensor [S]
    languages: torch.Tensor  # LongTensor [S], LANGUAGE_IDS values
    codes: torch.Tensor  # LongTensor [T, 8]

    @property
    def frames(self) -> int:
        return int(self.codes.shape[0])


@dataclass(frozen=True)
class SkippedPair:
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass
class FinetuneData:
    utterances: list[Utterance] = field(default_factory=list)
    skipped: list[SkippedPair] = field(default_factory=list)
    cache_hits: int = 0
    encoded: int = 0

    @property
    def total_seconds(self) -> float:
        return sum(u.frames for u in self.utterances) * CODEC_HOP / CODEC_RATE


def find_pairs(directory: Path) -> tuple[list[tuple[str, Path, Path]], list[SkippedPair]]:
    """(name, audio, transcript) for every name with both files; names with only one are skipped."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"finetune data {directory}: not a directory")
    audio: dict[str, Path] = {}
    skipped: list[SkippedPair] = []
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
            if path.stem in audio:
                skipped.append(SkippedPair(path.name, f"a second audio file for {path.stem!r} "
                                                      f"(already {audio[path.stem].name}); ignored"))
                continue
            audio[path.stem] = path
    transcripts = {p.stem: p for p in sorted(directory.glob(f"*{TRANSCRIPT_SUFFIX}")) if p.is_file()}
    pairs = []
    for name in sorted(set(audio) | set(transcripts)):
        if name not in transcripts:
            skipped.append(SkippedPair(name, f"no transcript {name}{TRANSCRIPT_SUFFIX} beside {audio[name].name}"))
        elif name not in audio:
            skipped.append(SkippedPair(name, f"transcript {transcripts[name].name} has no audio file "
                                             f"({'/'.join(AUDIO_SUFFIXES)})"))
        else:
            pairs.append((name, audio[name], transcripts[name]))
    return pairs, skipped


def _check_script(text: str, language: str) -> None:
    allowed = _SCRIPTS[language]
    for ch in text:
        if not unicodedata.category(ch).startswith("L"):
            continue
        script = unicodedata.name(ch, "")
        if not any(word in script for word in allowed):
            raise InputError(f"letter {ch!r} ({script or 'unnamed'}) is not written in a script of language "
                             f"{language!r}")


def read_transcript(path: Path, language: str) -> tuple[list[int], list[int]]:
    """Phoneme ids and model language ids of a transcript file; InputError (one line) when unusable."""
    try:
        text = path.read_text("utf-8").strip()
    except UnicodeDecodeError:
        raise InputError("transcript is not UTF-8 text") from None
    if not text:
        raise InputError("transcript is empty")
    tagged = _TAGGED.findall(text)
    for tag, body in tagged or [(language, text)]:
        _check_script(body, tag.lower())
    try:
        phonemes = phonemize(text.replace("\n", " "), "mix" if tagged else language)
    except InputError:
        raise
    except Exception as exc:  # a G2P library choking on odd text: this pair is unusable, not the run
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(f"the G2P failed on the transcript ({type(exc).__name__}: {first})") from exc
    unknown = sum(1 for i in phonemes.ids if i == 0)
    if unknown > _MAX_UNKNOWN_SYMBOL_SHARE * len(phonemes.ids):
        raise InputError(f"{unknown} of {len(phonemes.ids)} phoneme symbols are outside the VALL-E X "
                         "symbol table")
    return phonemes.ids, [LANGUAGE_IDS[lang] for lang in phonemes.languages]


def encodec_fingerprint(encodec: torch.nn.Module) -> str:
    """Hash of the EnCodec weights: cached codes are only valid for the codec that made them."""
    parts = [f"{name}:{tensor_hash(t)}" for name, t in encodec.state_dict().items()]
    return content_hash(*parts)


class CodeEncoder:
    """Audio file -> EnCodec codes [T, 8] (24 kHz, 6 kbps), read from / written to a disk cache."""

    def __init__(self, encodec: torch.nn.Module, cache: DiskCache | None = None,
                 device: str | torch.device = "cpu"):
        self.encodec = encodec
        self.cache = cache
        self.device = torch.device(device)
        self.fingerprint = encodec_fingerprint(encodec)

    def key(self, audio: Path) -> str:
        return content_hash(_CODES_FORMAT, self.fingerprint, audio)

    def cached(self, audio: Path) -> torch.Tensor | None:
        if self.cache is None:
            return None
        entry = self.cache.get(self.key(audio), CODES_CACHE_SCHEMA)
        if entry is None:
            return None
        return entry["codes"].long()

    @torch.no_grad()
    def encode(self, samples: torch.Tensor, sample_rate: int) -> torch.Tensor:
        wav = resample(samples.float(), sample_rate, CODEC_RATE) if sample_rate != CODEC_RATE else samples
        wav = wav.float().to(self.device).view(1, 1, -1)
        codes = self.encodec.encode(wav)[0].transpose(0, 1).long().cpu()  # [T, n_q]
        if codes.shape[1] != NUM_QUANTIZERS:
            raise ConfigError(f"finetune: EnCodec gave {codes.shape[1]} codebooks, VALL-E X needs "
                              f"{NUM_QUANTIZERS} (6 kbps)")
        return codes

    def store(self, audio: Path, codes: torch.Tensor) -> None:
        if self.cache is not None:
            # int16 holds codes 0..1023 at a quarter of the size
            self.cache.put(self.key(audio), {"codes": codes.to(torch.int16), "format": _CODES_FORMAT})


def load_pair(name: str, audio: Path, transcript: Path, language: str, encoder: CodeEncoder,
              limits: DataLimits) -> tuple[Utterance, bool]:
    """The checked utterance and whether its codes came from the cache; InputError when unusable."""
    ids, languages = read_transcript(transcript, language)
    codes = encoder.cached(audio)
    from_cache = codes is not None
    if codes is None:
        wave = read_audio(audio, name)
        check_waveform(wave, "audio", limits.min_seconds, limits.max_seconds)
        codes = encoder.encode(wave.samples, wave.sample_rate)
        encoder.store(audio, codes)
    seconds = codes.shape[0] * CODEC_HOP / CODEC_RATE
    if not limits.min_seconds <= seconds <= limits.max_seconds + CODEC_HOP / CODEC_RATE:
        raise InputError(f"audio is {seconds:.2f} s long, outside [{limits.min_seconds:g}, "
                         f"{limits.max_seconds:g}] s")
    ratio = codes.shape[0] / len(ids)
    if not limits.min_frames_per_token <= ratio <= limits.max_frames_per_token:
        raise InputError(f"transcript does not fit the audio: {codes.shape[0]} frames for {len(ids)} phoneme "
                         f"symbols ({ratio:.1f} per symbol, allowed {limits.min_frames_per_token:g}-"
                         f"{limits.max_frames_per_token:g})")
    utterance = Utterance(name, torch.tensor(ids, dtype=torch.long), torch.tensor(languages, dtype=torch.long),
                          codes.contiguous())
    return utterance, from_cache


def load_dataset(directory: str | Path, encoder: CodeEncoder, language: str = "en",
                 limits: DataLimits | None = None) -> FinetuneData:
    """Every usable pair of `directory`; the others in `skipped` with their reason."""
    if language not in LANGUAGES:
        raise InputError(f"finetune data: language {language!r} is not supported; use one of "
                         f"{', '.join(LANGUAGES)} (or tag transcripts with [EN]/[ZH]/[JA])")
    limits = limits or DataLimits()
    pairs, skipped = find_pairs(Path(directory))
    data = FinetuneData(skipped=skipped)
    for name, audio, transcript in pairs:
        try:
            utterance, from_cache = load_pair(name, audio, transcript, language, encoder, limits)
        except InputError as exc:
            # read_audio/check_waveform name the file themselves; keep one "NAME: reason" form
            reason = str(exc)
            for prefix in (f"{name} {audio}: ", f"{name}: ", "audio: ", "vallex text: "):
                reason = reason.removeprefix(prefix)
            data.skipped.append(SkippedPair(name, reason))
            continue
        data.utterances.append(utterance)
        data.cache_hits += int(from_cache)
        data.encoded += int(not from_cache)
    data.skipped.sort(key=lambda s: s.name)
    return data


# ---- batches -----------------------------------------------------------------------------------

@dataclass
class TrainingBatch:
    """Right-padded batch. Padding is 0 everywhere; the lengths say what is real."""

    text: torch.Tensor  # LongTensor [B, S]
    languages: torch.Tensor  # LongTensor [B, S]
    text_lens: torch.Tensor  # LongTensor [B]
    codes: torch.Tensor  # LongTensor [B, T, 8]
    code_lens: torch.Tensor  # LongTensor [B]
    names: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return int(self.text.shape[0])

    @property
    def text_mask(self) -> torch.Tensor:
        """[B, S], True at real phonemes."""
        return torch.arange(self.text.shape[1], device=self.text.device) < self.text_lens.unsqueeze(1)

    @property
    def code_mask(self) -> torch.Tensor:
        """[B, T], True at real frames."""
        return torch.arange(self.codes.shape[1], device=self.codes.device) < self.code_lens.unsqueeze(1)

    @property
    def frames(self) -> int:
        return int(self.code_lens.sum())

    def to(self, device: str | torch.device) -> TrainingBatch:
        return TrainingBatch(self.text.to(device), self.languages.to(device), self.text_lens.to(device),
                             self.codes.to(device), self.code_lens.to(device), self.names)


def collate(utterances: Sequence[Utterance]) -> TrainingBatch:
    if not utterances:
        raise InputError("finetune: cannot make a batch of no utterances")
    b = len(utterances)
    s = max(int(u.text.shape[0]) for u in utterances)
    t = max(u.frames for u in utterances)
    text = torch.zeros(b, s, dtype=torch.long)
    languages = torch.zeros(b, s, dtype=torch.long)
    codes = torch.zeros(b, t, NUM_QUANTIZERS, dtype=torch.long)
    for i, u in enumerate(utterances):
        text[i, : u.text.shape[0]] = u.text
        languages[i, : u.text.shape[0]] = u.languages
        codes[i, : u.frames] = u.codes
    text_lens = torch.tensor([int(u.text.shape[0]) for u in utterances], dtype=torch.long)
    code_lens = torch.tensor([u.frames for u in utterances], dtype=torch.long)
    return TrainingBatch(text, languages, text_lens, codes, code_lens, tuple(u.name for u in utterances))


def batches(utterances: Sequence[Utterance], batch_size: int, seed: int = 0) -> Iterator[TrainingBatch]:
    """Endless batches: each epoch a seeded shuffle, cut into batches of `batch_size` (last one smaller)."""
    if not utterances:
        raise InputError("finetune: no usable utterances to train on")
    if batch_size < 1:
        raise ConfigError(f"finetune: batch size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(utterances), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            yield collate([utterances[i] for i in order[start:start + batch_size]])
