from __future__ import annotations

import math
import shutil

import pytest
import soundfile as sf
import torch

from iris_pipeline.cache import DiskCache
from iris_pipeline.errors import ConfigError, InputError
from iris_pipeline.models.vallex.config import LANGUAGE_IDS
from iris_pipeline.text.vallex_g2p import phonemize
from iris_pipeline.training.dataset import (
    CodeEncoder,
    DataLimits,
    batches,
    collate,
    load_dataset,
    read_transcript,
)


def test_good_pairs_are_loaded_with_their_phonemes_and_codes(finetune_data, data_dir, good_texts):
    names = [u.name for u in finetune_data.utterances]
    assert names == [f"utt{i}" for i in range(len(good_texts))]
    for i, u in enumerate(finetune_data.utterances):
        assert u.text.tolist() == phonemize(good_texts[i], "en").ids
        assert u.languages.tolist() == [LANGUAGE_IDS["en"]] * len(u.text)
        info = sf.info(str(data_dir / f"utt{i}.wav"))
        samples_24k = round(info.frames * 24000 / info.samplerate)
        assert u.codes.shape == (math.ceil(samples_24k / 320), 8)
        assert u.codes.dtype == torch.long
        assert 0 <= int(u.codes.min())
        assert int(u.codes.max()) < 1024


def test_every_bad_pair_is_reported_by_name_with_its_reason(finetune_data, bad_pairs):
    reported = {s.name: s.reason for s in finetune_data.skipped}
    assert set(reported) == set(bad_pairs)
    for name, words in bad_pairs.items():
        assert words in reported[name], (name, reported[name])
        assert "\n" not in reported[name]
    assert not {u.name for u in finetune_data.utterances} & set(bad_pairs)


def test_codes_are_cached_and_reencoded_when_the_audio_changes(data_dir, tiny_encodec, limits, tmp_path,
                                                               make_speech):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("utt0", "utt1"):
        for suffix in (".wav", ".txt"):
            shutil.copy(data_dir / f"{name}{suffix}", folder / f"{name}{suffix}")
    encoder = CodeEncoder(tiny_encodec, DiskCache(tmp_path / "cache", max_entries=100))
    first = load_dataset(folder, encoder, "en", limits)
    second = load_dataset(folder, encoder, "en", limits)
    assert (first.encoded, first.cache_hits) == (2, 0)
    assert (second.encoded, second.cache_hits) == (0, 2)
    for a, b in zip(first.utterances, second.utterances, strict=True):
        assert torch.equal(a.codes, b.codes)
    sf.write(folder / "utt0.wav", make_speech(1.0, 24000, 42), 24000)
    third = load_dataset(folder, encoder, "en", limits)
    assert (third.encoded, third.cache_hits) == (1, 1)  # new bytes, new key: encoded again


@pytest.mark.parametrize("damage", [
    lambda p: {**p, "codes": p["codes"] + 2000},
    lambda p: {**p, "codes": p["codes"][:, :4]},
    lambda p: {**p, "codes": p["codes"].float()},
    lambda p: {**p, "format": "another-format"},
], ids=["outside-codebook", "four-codebooks", "float", "format"])
def test_a_wrong_cached_code_entry_is_encoded_again(data_dir, tiny_encodec, limits, tmp_path, capsys, damage):
    from iris_pipeline.cache import ENTRY_FORMAT, payload_checksum

    folder = tmp_path / "data"
    folder.mkdir()
    for suffix in (".wav", ".txt"):
        shutil.copy(data_dir / f"utt0{suffix}", folder / f"utt0{suffix}")
    cache = DiskCache(tmp_path / "cache", max_entries=100)
    encoder = CodeEncoder(tiny_encodec, cache)
    first = load_dataset(folder, encoder, "en", limits)
    key = encoder.key(folder / "utt0.wav")
    path = cache.directory / f"{key}.pt"
    payload = damage(torch.load(path, weights_only=True)["payload"])
    torch.save({"format": ENTRY_FORMAT, "key": key, "checksum": payload_checksum(payload), "payload": payload}, path)
    capsys.readouterr()
    again = load_dataset(folder, encoder, "en", limits)
    lines = capsys.readouterr().err.strip().splitlines()
    assert (again.encoded, again.cache_hits) == (1, 0), lines
    assert len(lines) == 1, lines
    assert key in lines[0], lines
    assert torch.equal(first.utterances[0].codes, again.utterances[0].codes)


def test_tagged_transcript_is_read_as_mixed_language(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_text("[EN]hello.[EN][ZH]你好。[ZH]")
    ids, languages = read_transcript(path, "en")
    assert len(ids) == len(languages)
    assert set(languages) == {LANGUAGE_IDS["en"], LANGUAGE_IDS["zh"]}
    path.write_text("[EN]你好[EN]")
    with pytest.raises(InputError, match="not written in a script of language 'en'"):
        read_transcript(path, "en")


def test_missing_folder_unknown_language_and_bad_limits_are_refused(tmp_path, tiny_encodec):
    encoder = CodeEncoder(tiny_encodec)
    with pytest.raises(InputError, match="not a directory"):
        load_dataset(tmp_path / "nowhere", encoder)
    with pytest.raises(InputError, match="language 'de' is not supported"):
        load_dataset(tmp_path, encoder, "de")
    with pytest.raises(ConfigError, match="min_seconds < max_seconds"):
        DataLimits(min_seconds=5, max_seconds=1)


def test_collate_pads_with_zeros_and_masks_say_what_is_real(finetune_data):
    utterances = finetune_data.utterances[:3]
    batch = collate(utterances)
    assert batch.text.shape == (3, max(len(u.text) for u in utterances))
    assert batch.codes.shape == (3, max(u.frames for u in utterances), 8)
    for i, u in enumerate(utterances):
        n, t = len(u.text), u.frames
        assert torch.equal(batch.text[i, :n], u.text)
        assert int(batch.text[i, n:].abs().sum()) == 0
        assert torch.equal(batch.codes[i, :t], u.codes)
        assert int(batch.codes[i, t:].abs().sum()) == 0
        assert batch.text_mask[i].sum() == n
        assert batch.code_mask[i].sum() == t
        assert bool(batch.code_mask[i, :t].all())
        assert not bool(batch.code_mask[i, t:].any())
    assert batch.frames == sum(u.frames for u in utterances)
    assert batch.names == tuple(u.name for u in utterances)


def test_batches_cover_every_utterance_each_epoch_in_a_seeded_order(finetune_data):
    utterances = finetune_data.utterances
    stream = batches(utterances, batch_size=4, seed=3)
    epoch = [next(stream) for _ in range(2)]  # 6 utterances: 4 + 2
    assert sorted(n for b in epoch for n in b.names) == sorted(u.name for u in utterances)
    again = batches(utterances, batch_size=4, seed=3)
    assert [b.names for b in epoch] == [next(again).names for _ in range(2)]


def test_a_g2p_crash_is_reported_as_an_unusable_transcript(tmp_path, monkeypatch):
    import iris_pipeline.training.dataset as dataset

    def crash(text, language):
        raise ValueError("boom")

    monkeypatch.setattr(dataset, "phonemize", crash)
    path = tmp_path / "a.txt"
    path.write_text("hello.")
    with pytest.raises(InputError, match=r"G2P failed on the transcript \(ValueError: boom\)"):
        read_transcript(path, "en")
