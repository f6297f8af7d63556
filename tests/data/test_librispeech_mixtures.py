"""Tests for the fixed Libri2Mix-style set builder (s4m-make-librimix)."""

import filecmp
from pathlib import Path

import pytest
import soundfile as sf
from tiny_datasets import make_librispeech_folder, shared_librispeech

from speechbrain_s4m.data.librispeech_mixtures import main, make_librimix_from_librispeech
from speechbrain_s4m.data.preparation import prepare_librimix


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory):
    """A LibriSpeech-layout folder with SPEAKERS.TXT: 8 speakers, 4 F and 4 M."""
    root = tmp_path_factory.mktemp("librispeech")
    folder = make_librispeech_folder(root, n_speakers=8, n_utts=3)
    lines = [";ID  |SEX| SUBSET | MINUTES | NAME"] + [
        f"{19 + k} | {'FM'[k % 2]} | train-clean-5 | 1.0 | reader {k}" for k in range(8)
    ]
    Path(root, "SPEAKERS.TXT").write_text("\n".join(lines) + "\n")
    return folder


def build(librispeech, out, **options):
    settings = dict(num_train=3, num_valid=2, num_test=4, test_speakers=2, valid_speakers=2)
    settings.update(options)
    return make_librimix_from_librispeech(librispeech, str(out), **settings)


def test_layout_speakers_and_levels(librispeech, tmp_path):
    splits = build(librispeech, tmp_path / "set")
    assert not set(splits["test"]) & set(splits["train"]) and not set(splits["valid"]) & set(splits["train"])
    assert (tmp_path / "set" / "train_speakers.txt").read_text().split() == splits["train"]
    test = tmp_path / "set" / "Libri2Mix" / "wav8k" / "min" / "test"
    mixtures = sorted((test / "mix_clean").glob("*.wav"))
    assert len(mixtures) == 4
    for mixture in mixtures:
        for sub in ("s1", "s2"):
            source, rate = sf.read(str(test / sub / mixture.name))
            assert rate == 8000
            level = 10 * __import__("math").log10((source**2).mean())
            assert -33.5 <= level <= -24.5
        speakers = [part.split("-")[0] for part in mixture.stem.split("_")[1:]]
        assert set(speakers) <= set(splits["test"]) and len(set(speakers)) == 2
    paths = prepare_librimix(str(tmp_path / "set"), str(tmp_path / "csv"))
    assert sum(1 for _ in open(paths["test"])) == 5


def test_same_seed_same_set_and_reuse(librispeech, tmp_path):
    build(librispeech, tmp_path / "a")
    build(librispeech, tmp_path / "b")
    comparison = filecmp.dircmp(tmp_path / "a" / "Libri2Mix", tmp_path / "b" / "Libri2Mix")
    files = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*.wav"))
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert len(match) == len(files) == 3 * (3 + 2 + 4) and not mismatch and not errors
    assert comparison.left_only == comparison.right_only == []
    stamp = (tmp_path / "a" / "train_speakers.txt").stat().st_mtime_ns
    build(librispeech, tmp_path / "a")  # same options: reused
    assert (tmp_path / "a" / "train_speakers.txt").stat().st_mtime_ns == stamp


def test_other_options_do_not_overwrite_without_force(librispeech, tmp_path, capsys):
    build(librispeech, tmp_path / "set")
    with pytest.raises(FileExistsError, match="--force"):
        build(librispeech, tmp_path / "set", seed=1)
    assert main([librispeech, str(tmp_path / "set"), "--seed", "1"]) == 2
    assert "--force" in capsys.readouterr().err
    build(librispeech, tmp_path / "set", seed=1, force=True)


def test_missing_speaker_list_is_a_clear_error(tmp_path):
    folder = make_librispeech_folder(tmp_path, n_speakers=4, n_utts=1)
    with pytest.raises(FileNotFoundError, match="SPEAKERS.TXT"):
        build(folder, tmp_path / "set")


def test_real_mini_librispeech_holds_out_two_female_and_two_male(tmp_path):
    folder = shared_librispeech()
    if folder is None:
        pytest.skip("../shared/data/mini-librispeech-8k is not present")
    splits = make_librimix_from_librispeech(
        folder, str(tmp_path / "set"), num_train=1, num_valid=1, num_test=2, segment_seconds=1.0
    )
    from speechbrain_s4m.data.librispeech_mixtures import read_genders

    genders = read_genders(folder)
    assert sorted(genders[s] for s in splits["test"]) == ["F", "F", "M", "M"]
    assert sorted(genders[s] for s in splits["valid"]) == ["F", "M"]
    assert len(splits["train"]) == 22
