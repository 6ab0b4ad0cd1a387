"""Regenerate the FastPitch text / prior / MAS parity fixtures from the official implementation.

Run ONCE, by hand, against a checkout of NVIDIA DeepLearningExamples (never by the tests). The
fixtures record what the official code computes; the CPU tests in tests/unit/parity/ compare the
project with them.

Official sources used for the committed fixtures:
  NVIDIA/DeepLearningExamples  commit 729963dd47e7c8bd462ad10bfac7a7b0b604e6dd
                               (PyTorch/SpeechSynthesis/FastPitch, FastPitch 1.1)
  Alexir/CMUdict               commit 042e84a2afdae37ab91723dd552dc52aa5616a28 (file cmudict-0.7b,
                               the file the official scripts/download_cmudict.sh fetches)

Environment: a scratch virtual environment with the official code's dependencies, e.g.
  python -m venv /tmp/fp-venv && /tmp/fp-venv/bin/pip install torch numpy scipy inflect librosa numba
Usage:
  python tools/parity/make_fastpitch_text_fixtures.py --fastpitch-dir CHECKOUT/PyTorch/SpeechSynthesis/FastPitch \
      --cmudict CHECKOUT_CMUDICT/cmudict-0.7b [--out tests/data/parity]

Writes:
  fastpitch_text_ids.json  sentences -> official token ids (english_cleaners_v2, english_basic symbols,
                           p_arpabet 1.0, CMUdict 0.7b with the official heteronym list)
  fastpitch_prior.npz      BetaBinomialInterpolator()(mel_len, text_len) for a few sizes
  fastpitch_mas.npz        soft-attention maps with ties / underflow and the official durations
                           (torch.log in float32, then mas_width1, as FastPitch.binarize_attention)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

DLE_COMMIT = "729963dd47e7c8bd462ad10bfac7a7b0b604e6dd"
CMUDICT_COMMIT = "042e84a2afdae37ab91723dd552dc52aa5616a28"

# Numbers, times, currencies, acronyms, Roman numerals, abbreviations, heteronyms, unicode punctuation,
# letter-number forms, multipliers, units, edge spaces and explicit ARPAbet.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Dr. Smith met Mr. Jones at 10:30 a.m. on St. Patrick's Day.",
    "It costs $3.50, or £2 and €1,000,000.",
    "The company earned $2.5 billion in 2019, and $100m more in 2021.",
    "Meet me at 7pm, not 7:45 AM, and never at 12:00pm or 0:15am.",
    "The FBI and the CIA briefed the USA's GPU team.",
    "NVIDIA released a new GPU; the CEOs of BMW and the BBC agreed.",
    "Louis XIV and Henry VIII ruled; World War II ended; Chapter IV, verse XI.",
    "She lives at 221B Baker Street.",
    "My phone has 4GB of RAM, a 2.4GHz CPU and a 1TB disk.",
    "The new model is 2.5x faster and 10x cheaper.",
    "The room is 10x12 feet, the box 3 x 4 x 5m.",
    "I read the book yesterday, and I will read it again.",
    "They refuse to collect the refuse.",
    "He wound the bandage around the wound.",
    "A lead pipe will lead the way; the bass player caught a bass.",
    "Wait\u2026 what \u2014 really? \u00bd of it?",
    "\u201cSmart quotes\u201d and \u2018single ones\u2019 \u2013 dashes.",
    "Caf\u00e9, na\u00efve, fa\u00e7ade and Zo\u00eb's r\u00e9sum\u00e9.",
    "In the 1990s, the 80's, and the 1st, 2nd, 3rd and 21st centuries.",
    "Call No. 5 for 100% of the 3\u00bd cups.",
    "Visit nvidia.com or whitehouse.gov & email us @ home.",
    "Gen. Lee, Capt. Hook, Sgt. Pepper, Lt. Dan, etc.",
    "The years 1066, 1984, 2000, 2007, 1900 and 3000.",
    "He owes 1,234,567 dollars and 0.75 cents.",
    "$0.99 and $1.01 and $1 and $12.",
    "Pi is 3.14159 and e is 2.71828.",
    "& friends, meet me @home",
    "50% off",
    "AK47's and the 747s and COVID-19 in 3D and 4K.",
    "{HH AH0 L OW1} world, says the {W ER1 L D}.",
    "Mrs. Robinson's Co. Ltd. vs. the Hon. Sen. Smith Esq. and Jr.",
    "I'm sure it's the dogs' bones, isn't it?",
    "Tokyo \u6771\u4eac and Z\u00fcrich.",
    "Speeds of 10 km/h and/or 5 m/s.",
    "Don't stop... Believe!!! (Really?)",
    "The I.B.M. deal and the U.S. economy.",
    "Rocky II; I am here; X marks the spot; MIX and CIVIC.",
    "An email from the UK's NBA fans about TVs and PCs.",
    "At 9:05 PM the price hit \u00a3350 thousand.",
]

PRIOR_SIZES = [(50, 10), (123, 37), (97, 21), (20, 19), (7, 3), (160, 33)]


def _import_official(fastpitch_dir: Path):
    sys.path.insert(0, str(fastpitch_dir))
    from common.text import cmudict
    from common.text.text_processing import get_text_processing
    from fastpitch.alignment import mas_width1
    from fastpitch.data_function import BetaBinomialInterpolator

    return cmudict, get_text_processing, BetaBinomialInterpolator, mas_width1


def text_fixture(get_text_processing, cmudict, cmudict_path: Path, heteronyms: Path) -> dict:
    cmudict.initialize(str(cmudict_path), str(heteronyms))
    tp = get_text_processing("english_basic", ["english_cleaners_v2"], 1.0)
    cases = []
    for sentence in SENTENCES:
        ids, cleaned, arpabet = tp.encode_text(sentence, return_all=True)
        cases.append({"text": sentence, "ids": [int(i) for i in ids], "cleaned": cleaned, "arpabet": arpabet})
    return {"source": {"DeepLearningExamples": DLE_COMMIT, "cmudict-0.7b": CMUDICT_COMMIT,
                       "symbol_set": "english_basic", "cleaners": "english_cleaners_v2", "p_arpabet": 1.0},
            "cases": cases}


def _softmax(x: np.ndarray) -> np.ndarray:
    import torch

    return torch.softmax(torch.from_numpy(x.astype(np.float32)), dim=1).numpy()


def mas_maps(seed: int = 0) -> dict[str, np.ndarray]:
    """Soft attention maps [T, N] (probabilities over symbols) of the kinds that tie or underflow."""
    rng = np.random.default_rng(seed)
    maps = {}
    maps["uniform"] = np.full((12, 5), 0.2, dtype=np.float32)
    # Repeated identical symbols: identical columns, so every choice between them ties.
    scores = rng.normal(size=(40, 6)).astype(np.float32)
    scores[:, 3] = scores[:, 2]
    scores[:, 4] = scores[:, 2]
    maps["repeated_symbols"] = _softmax(scores)
    # Coarse integer scores: many exact ties.
    maps["integer_scores"] = _softmax(rng.integers(-2, 3, size=(30, 9)).astype(np.float32))
    # Far-apart scores: the softmax underflows to exact zeros, whose log is -inf.
    maps["underflow"] = _softmax(rng.normal(scale=80.0, size=(35, 8)).astype(np.float32))
    maps["underflow_wide"] = _softmax(rng.normal(scale=200.0, size=(60, 20)).astype(np.float32))
    maps["continuous"] = _softmax(rng.normal(size=(50, 12)).astype(np.float32))
    maps["exact_frames"] = _softmax(rng.normal(size=(7, 7)).astype(np.float32))
    return maps


def mas_fixture(mas_width1) -> dict[str, np.ndarray]:
    import torch

    out = {}
    for name, attn in mas_maps().items():
        # As FastPitch.binarize_attention: torch.log of the soft attention in float32, then mas_width1.
        log_attn = torch.log(torch.from_numpy(attn)).to(torch.float32).numpy()
        hard = mas_width1(log_attn)
        out[f"{name}/attn"] = attn
        out[f"{name}/durations"] = hard.sum(axis=0).astype(np.int64)
    return out


def prior_fixture(interpolator_class) -> dict[str, np.ndarray]:
    interpolator = interpolator_class()
    out = {}
    for mel_len, text_len in PRIOR_SIZES:
        # As TTSDataset.get_prior: BetaBinomialInterpolator()(mel_len, text_len) -> [mel_len, text_len].
        out[f"{mel_len}x{text_len}"] = np.asarray(interpolator(mel_len, text_len), dtype=np.float64)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fastpitch-dir", type=Path, required=True)
    parser.add_argument("--cmudict", type=Path, required=True, help="cmudict-0.7b")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests/data/parity")
    args = parser.parse_args()
    cmudict, get_text_processing, interpolator_class, mas_width1 = _import_official(args.fastpitch_dir.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    text = text_fixture(get_text_processing, cmudict, args.cmudict, args.fastpitch_dir / "cmudict/heteronyms")
    (args.out / "fastpitch_text_ids.json").write_text(json.dumps(text, indent=1, ensure_ascii=False) + "\n", "utf-8")
    np.savez_compressed(args.out / "fastpitch_prior.npz", **prior_fixture(interpolator_class))
    np.savez_compressed(args.out / "fastpitch_mas.npz", **mas_fixture(mas_width1))
    print(f"wrote {len(text['cases'])} sentences, {len(PRIOR_SIZES)} priors, {len(mas_maps())} MAS maps to {args.out}")


if __name__ == "__main__":
    main()
