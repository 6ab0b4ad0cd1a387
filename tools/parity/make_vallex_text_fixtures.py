"""Regenerate the VALL-E X sentence-splitting and Japanese parity fixtures from the official code.

Run ONCE, by hand, against a checkout of Plachtaa/VALL-E-X (never by the tests). The CPU tests in
tests/unit/parity/test_vallex_text_parity.py compare the project with what this writes.

Official source used for the committed fixtures:
  Plachtaa/VALL-E-X  commit 3faaf8ccadb154d63b38070caf518ce9309ea0f4
    utils/sentence_cutter.py  split_text_into_sentences (English: nltk sent_tokenize with the punkt
                              data bundled in the repository's nltk_data/; Japanese: SudachiPy)
    utils/g2p/                PhonemeBpeTokenizer(bpe_69.json).tokenize("_[JA]text[JA]"), as
                              utils/generation.py calls it

Environment: a scratch virtual environment with the official requirements, e.g.
  python -m venv /tmp/vx-venv && /tmp/vx-venv/bin/pip install nltk==3.8.1 langid sudachipy \
      sudachidict_core pyopenjtalk-prebuilt tokenizers unidecode jieba pypinyin cn2an eng_to_ipa inflect
(pyopenjtalk-prebuilt is what the official requirements.txt installs: OpenJTalk with the naist-jdic
dictionary in the wheel.)
Usage:
  python tools/parity/make_vallex_text_fixtures.py --vallex-dir CHECKOUT [--out tests/data/parity]

Writes:
  vallex_sentences.json  English (and Japanese) texts -> the official sentence list
  vallex_japanese.json   Japanese sentences -> the official phoneme string and ids
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from importlib import metadata
from pathlib import Path

VALLEX_COMMIT = "3faaf8ccadb154d63b38070caf518ce9309ea0f4"

ENGLISH_TEXTS = [
    "Hello Mr. Smith. How are you? Fine!",
    "Dr. Watson arrived at 5 p.m. yesterday. He was late.",
    "Use tools, e.g. hammers, i.e. heavy ones. Then rest.",
    "Wait... what happened? I don't know... Really.",
    "The U.S. economy grew 3.5% in Jan. 2020. Analysts were surprised.",
    "She said \"Stop!\" Then she left. (It was late.) Mrs. Brown waved.",
    "This is a very long paragraph, so most TTS model is unable to handle it. Hence, we have to split it "
    "into several sentences. With the help of NLTK, we can split it into sentences. However, the "
    "punctuation is not preserved, so we have to add it back. How are we going to do write this code? "
    "Let's see. ",
    "Prof. Lee and St. Mary's Co. Ltd. met on Fig. 3. No. 5 won.",
    "He scored 9.5 vs. 8.7 at approx. 10 a.m. on Mon. Next!",
    "I love A.I. It's great. The U.K. and the E.U. agree.",
    "Mr. and Mrs. Jones live on Elm St. They moved in 1999. Their son, Jr., is 12.",
    "It was 7 a.m. The sun rose. At 6 p.m. it set again.",
    "Ellipses at the end…  Unicode ones too… and then more. Done",
    "First line.\nSecond line without a period\nThird line. Fourth?",
    "Is it Ph.D. or PhD? Either way, Dr. Kim has one. She earned it in the U.S.A. in 2010.",
    "Gen. Grant and Col. Sanders arrived. Sgt. Pepper didn't!",
    "e.g. this starts lower-case. i.e. so does this one. OK.",
    "The price is $4.99... or is it? Nobody knows.",
]

JAPANESE_SPLIT_TEXTS = [
    "これなら、英語と中国語の分句もできる。でも、日本語はどうする？まつわ、ChatGPTに僕と教えてください。ちょーと待ってください。あ、出来た！",
    "今日はいい天気ですね。散歩に行きましょう！",
]

JAPANESE_TEXTS = [
    "こんにちは、世界。",
    "今日はいい天気ですね。",
    "東京タワーの高さは三百三十三メートルです。",
    "私はコーヒーが大好きです！",
    "ちょっと待ってください。",
    "新幹線で大阪に行きました。",
    "百パーセント確かですか？",
    "ええと……分かりません。",
    "日本語の音声合成は難しい。",
    "カタカナのテキスト、ひらがなのテキスト。",
    "学校へ行って、勉強しました。",
    "彼は「はい」と言った。",
]


def _official_modules(vallex_dir: Path):
    sys.path.insert(0, str(vallex_dir))
    # `utils/__init__.py` imports torch for the model code; the text code does not need it.
    utils = types.ModuleType("utils")
    utils.__path__ = [str(vallex_dir / "utils")]
    sys.modules["utils"] = utils
    import nltk

    nltk.data.path = [str(vallex_dir / "nltk_data")]
    from utils.g2p import PhonemeBpeTokenizer
    from utils.sentence_cutter import split_text_into_sentences

    return split_text_into_sentences, PhonemeBpeTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vallex-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests/data/parity")
    args = parser.parse_args()
    vallex_dir = args.vallex_dir.resolve()
    split, tokenizer_class = _official_modules(vallex_dir)
    import langid
    import nltk

    versions = {name: metadata.version(name) for name in
                ("nltk", "langid", "SudachiPy", "SudachiDict-core", "pyopenjtalk-prebuilt", "tokenizers")}
    splits = []
    for language, texts in (("en", ENGLISH_TEXTS), ("ja", JAPANESE_SPLIT_TEXTS)):
        for text in texts:
            # The official picks the splitter by langid; record the splitter's output for the language
            # the text is written in (nltk for English, whatever langid says about a short text).
            detected = langid.classify(text)[0]
            sentences = nltk.tokenize.sent_tokenize(text) if language == "en" else split(text)
            if detected == language:
                assert sentences == split(text)
            splits.append({"text": text, "language": language, "sentences": sentences})
    source = {"VALL-E-X": VALLEX_COMMIT, "versions": versions}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vallex_sentences.json").write_text(
        json.dumps({"source": source, "cases": splits}, ensure_ascii=False, indent=1) + "\n", "utf-8")

    tokenizer = tokenizer_class(tokenizer_path=str(vallex_dir / "utils/g2p/bpe_69.json"))
    from utils.g2p.cleaners import cje_cleaners

    japanese = []
    for text in JAPANESE_TEXTS:
        tagged = f"_[JA]{text}[JA]".strip()  # as utils/generation.py builds it
        ids, languages = tokenizer.tokenize(tagged)
        phonemes = cje_cleaners(tagged)[0].replace(" ", "_")
        japanese.append({"text": text, "phonemes": phonemes, "ids": [int(i) for i in ids],
                         "languages": list(languages)})
    (args.out / "vallex_japanese.json").write_text(
        json.dumps({"source": source, "cases": japanese}, ensure_ascii=False, indent=1) + "\n", "utf-8")
    print(f"wrote {len(splits)} split texts and {len(japanese)} Japanese sentences to {args.out}")


if __name__ == "__main__":
    main()
