"""Synthetic fine-tuning data: good (audio, transcript) pairs and one pair for each kind of bad one."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

GOOD_TEXTS = ("hello world.", "the cat sat on the mat.", "good morning to you.", "this is a test.",
              "we like to sing.", "a quick brown fox.")

# name -> a word of the reason it must be reported with
BAD_PAIRS = {
    "broken": "not a readable audio file",
    "empty": "transcript is empty",
    "korean": "not written in a script of language 'en'",
    "mismatch": "does not fit the audio",
    "notext": "no transcript",
    "orphan": "has no audio file",
    "short": "shorter than the minimum",
    "silent": "silent",
    "toolong": "longer than the maximum",
}
MAX_SECONDS = 3.0  # the tests' DataLimits.max_seconds


def speechlike(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """Noise through a moving resonance with a syllable-rate envelope: codes vary in every codebook."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    carrier = np.sin(2 * np.pi * (120 + 60 * seed) * t + 3 * np.sin(2 * np.pi * 2.5 * t))
    noise = rng.standard_normal(n)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * (3 + seed % 3) * t) ** 2
    return (0.3 * envelope * (carrier + 0.3 * noise)).astype(np.float32)


def write_dataset(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(GOOD_TEXTS):
        rate = 16000 if i % 2 else 24000  # resampled to 24 kHz on the way
        sf.write(directory / f"utt{i}.wav", speechlike(1.0 + 0.2 * i, rate, i), rate)
        (directory / f"utt{i}.txt").write_text(text)
    one_second = speechlike(1.0, 24000, 7)
    (directory / "broken.wav").write_bytes(b"RIFF but not really a wav file")
    (directory / "broken.txt").write_text("hello there.")
    for name in ("notext", "empty", "korean", "mismatch"):
        sf.write(directory / f"{name}.wav", one_second, 24000)
    (directory / "empty.txt").write_text("  \n")
    (directory / "korean.txt").write_text("안녕하세요 여러분")
    (directory / "mismatch.txt").write_text("this transcript is far too long for one second of audio, it goes on "
                                            "and on about many other things.")
    (directory / "orphan.txt").write_text("no audio for me.")
    sf.write(directory / "short.wav", one_second[:2400], 24000)
    (directory / "short.txt").write_text("hi.")
    sf.write(directory / "silent.wav", np.zeros(24000, np.float32), 24000)
    (directory / "silent.txt").write_text("nothing at all.")
    sf.write(directory / "toolong.wav", speechlike(MAX_SECONDS + 1.0, 24000, 8), 24000)
    (directory / "toolong.txt").write_text("a long recording of many words, " * 2)
    return directory


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("finetune_data"))


@pytest.fixture(scope="session")
def tiny_encodec():
    from iris_pipeline import models

    return models.build("encodec_24khz", "tiny", seed=0).eval()


@pytest.fixture(scope="session")
def limits():
    from iris_pipeline.training.dataset import DataLimits

    return DataLimits(min_seconds=0.5, max_seconds=MAX_SECONDS)


@contextlib.contextmanager
def single_thread():
    """These tiny models run fastest on one thread; several threads on a shared CPU mostly wait."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def finetune_data(data_dir, tiny_encodec, limits, tmp_path_factory):
    from iris_pipeline.cache import DiskCache
    from iris_pipeline.training.dataset import CodeEncoder, load_dataset

    cache = DiskCache(tmp_path_factory.mktemp("codes_cache"), max_entries=1000)
    with single_thread():
        return load_dataset(data_dir, CodeEncoder(tiny_encodec, cache), "en", limits)


@pytest.fixture(scope="session")
def bad_pairs() -> dict[str, str]:
    return dict(BAD_PAIRS)


@pytest.fixture(scope="session")
def good_texts() -> tuple[str, ...]:
    return GOOD_TEXTS


@pytest.fixture(scope="session")
def make_speech():
    return speechlike


@pytest.fixture(autouse=True)
def one_cpu_thread():
    with single_thread():
        yield
