"""Tests for the CSV preparation of WSJ0-Mix, LibriMix and LRS2-Mix
(speechbrain_s4m.data.preparation), on tiny datasets in the real layouts."""

import csv
import json
import os
import re
import shutil

import pytest
import soundfile as sf
from tiny_datasets import make_librimix, make_lrs2mix, make_wsj0mix

from speechbrain_s4m.data.preparation import (  # noqa: E402
    prepare_librimix,
    prepare_lrs2mix,
    prepare_separation_data,
    prepare_wsj0mix,
)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def check_manifests(paths, save_folder, columns, counts, sample_rate):
    splits = ("train", "valid", "test")
    assert paths == {s: os.path.join(str(save_folder), f"{s}.csv") for s in splits}
    for split, count in counts.items():
        header, rows = read_csv(paths[split])
        assert header == columns
        assert len(rows) == count
        assert [r["ID"] for r in rows] == sorted(r["ID"] for r in rows)
        for row in rows:
            for column in columns[2:]:
                path = row[column]
                assert os.path.isabs(path) and os.path.isfile(path)
                assert os.path.basename(path) == row["ID"] + ".wav"  # matched by name
            info = sf.info(row["mix_wav"])
            assert info.samplerate == sample_rate
            assert float(row["duration"]) == pytest.approx(info.frames / info.samplerate)
            assert 0.5 < float(row["duration"]) < 1.5


def set_old_mtimes(save_folder):
    """Make every file in save_folder look a day old, so that a rewrite is visible."""
    stamps = {}
    for name in os.listdir(save_folder):
        path = os.path.join(save_folder, name)
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 86400 * 10**9))
        stamps[name] = os.stat(path).st_mtime_ns
    return stamps


def mtimes(save_folder):
    return {name: os.stat(os.path.join(save_folder, name)).st_mtime_ns for name in os.listdir(save_folder)}


# ------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("sample_rate, mode, num_spks", [(8000, "min", 2), (16000, "max", 3)])
def test_wsj0mix(tmp_path, sample_rate, mode, num_spks):
    root = make_wsj0mix(tmp_path / "wsj0", sample_rate=sample_rate, mode=mode, num_spks=num_spks)
    save = tmp_path / "save"
    paths = prepare_wsj0mix(root, save, sample_rate=sample_rate, mode=mode, num_spks=num_spks)
    columns = ["ID", "duration", "mix_wav"] + [f"s{k + 1}_wav" for k in range(num_spks)]
    check_manifests(paths, save, columns, {"train": 4, "valid": 2, "test": 2}, sample_rate)
    header, rows = read_csv(paths["valid"])
    assert f"/wav{sample_rate // 1000}k/{mode}/cv/mix/" in rows[0]["mix_wav"]
    with open(save / "preparation_options.json", encoding="utf-8") as f:
        record = json.load(f)
    assert record["options"] == {
        "dataset": "wsj0mix",
        "data_folder": os.path.abspath(root),
        "sample_rate": sample_rate,
        "mode": mode,
        "num_spks": num_spks,
    }


def test_wsj0mix_accepts_the_folder_holding_2speakers(tmp_path):
    make_wsj0mix(tmp_path / "wsj0-mix" / "2speakers", n_train=1, n_valid=1, n_test=1)
    paths = prepare_wsj0mix(tmp_path / "wsj0-mix", tmp_path / "save")
    _, rows = read_csv(paths["train"])
    assert rows[0]["mix_wav"].startswith(str(tmp_path / "wsj0-mix" / "2speakers" / "wav8k"))


def test_librimix_clean(tmp_path):
    root = make_librimix(tmp_path / "data", with_noise=False)
    save = tmp_path / "save"
    paths = prepare_librimix(root, save)
    check_manifests(
        paths,
        save,
        ["ID", "duration", "mix_wav", "s1_wav", "s2_wav"],
        {"train": 4, "valid": 2, "test": 2},
        8000,
    )
    _, rows = read_csv(paths["valid"])
    assert "/Libri2Mix/wav8k/min/dev/mix_clean/" in rows[0]["mix_wav"]


def test_librimix_noisy_3spk_16k_train360(tmp_path):
    root = make_librimix(
        tmp_path / "data",
        sample_rate=16000,
        mode="max",
        num_spks=3,
        train_subset="train-360",
        n_train=3,
    )
    save = tmp_path / "save"
    paths = prepare_librimix(
        root,
        save,
        sample_rate=16000,
        mode="max",
        num_spks=3,
        train_subset="train-360",
        mixture_type="mix_both",
    )
    columns = ["ID", "duration", "mix_wav", "s1_wav", "s2_wav", "s3_wav", "noise_wav"]
    check_manifests(paths, save, columns, {"train": 3, "valid": 2, "test": 2}, 16000)
    _, rows = read_csv(paths["train"])
    assert "/Libri3Mix/wav16k/max/train-360/mix_both/" in rows[0]["mix_wav"]
    assert "/train-360/noise/" in rows[0]["noise_wav"]


def test_librimix_parent_or_child_folder(tmp_path):
    root = make_librimix(tmp_path / "data", with_noise=False, n_train=1, n_valid=1, n_test=1)
    save = tmp_path / "save"
    from_parent = prepare_librimix(root, save)
    stamps = set_old_mtimes(save)
    from_child = prepare_librimix(os.path.join(root, "Libri2Mix"), save)
    assert from_child == from_parent
    assert mtimes(save) == stamps  # same resolved folder and options: skipped
    with open(save / "preparation_options.json", encoding="utf-8") as f:
        assert json.load(f)["options"]["data_folder"] == os.path.join(os.path.abspath(root), "Libri2Mix")


def test_lrs2mix(tmp_path):
    root = make_lrs2mix(tmp_path / "lrs2")
    save = tmp_path / "save"
    paths = prepare_lrs2mix(root, save)
    check_manifests(
        paths,
        save,
        ["ID", "duration", "mix_wav", "s1_wav", "s2_wav"],
        {"train": 4, "valid": 2, "test": 2},
        16000,
    )


def test_dispatcher(tmp_path):
    root = make_lrs2mix(tmp_path / "lrs2", n_train=1, n_valid=1, n_test=1)
    paths = prepare_separation_data("lrs2mix", root, tmp_path / "save", num_spks=2)
    assert os.path.isfile(paths["test"])
    expected = "dataset: expected one of 'wsj0mix', 'librimix', 'lrs2mix'"
    with pytest.raises(ValueError, match=expected):
        prepare_separation_data("whamr", root, tmp_path / "save")
    with pytest.raises(ValueError, match="lrs2mix: unknown option 'sample_rate'"):
        prepare_separation_data("lrs2mix", root, tmp_path / "save", sample_rate=16000)


def test_csv_loads_in_speechbrain(tmp_path):
    import speechbrain as sb

    root = make_wsj0mix(tmp_path / "wsj0", n_train=2, n_valid=1, n_test=1)
    paths = prepare_wsj0mix(root, tmp_path / "save")
    dataset = sb.dataio.dataset.DynamicItemDataset.from_csv(paths["train"])
    assert len(dataset) == 2
    first = dataset.data[dataset.data_ids[0]]
    signal = sb.dataio.dataio.read_audio(first["s2_wav"])
    assert signal.shape[0] == round(first["duration"] * 8000)


# ---------------------------------------------------------------- skip / re-prepare


def test_second_call_skips_and_changed_options_reprepare(tmp_path):
    root = make_librimix(tmp_path / "data", n_train=2, n_valid=1, n_test=1)
    save = tmp_path / "save"
    first = prepare_librimix(root, save)
    stamps = set_old_mtimes(save)
    assert prepare_librimix(root, save) == first
    assert mtimes(save) == stamps  # nothing touched

    prepare_librimix(root, save, mixture_type="mix_both")  # other options: rewritten
    assert all(mtimes(save)[name] > stamps[name] for name in stamps)
    header, rows = read_csv(first["train"])
    assert header[-1] == "noise_wav" and "/mix_both/" in rows[0]["mix_wav"]
    with open(save / "preparation_options.json", encoding="utf-8") as f:
        assert json.load(f)["options"]["mixture_type"] == "mix_both"


def test_missing_csv_reprepares(tmp_path):
    root = make_wsj0mix(tmp_path / "wsj0", n_train=1, n_valid=1, n_test=1)
    save = tmp_path / "save"
    paths = prepare_wsj0mix(root, save)
    os.remove(paths["valid"])
    prepare_wsj0mix(root, save)
    assert os.path.isfile(paths["valid"])


# -------------------------------------------------------------------------- errors


def test_missing_data_folder(tmp_path):
    missing = tmp_path / "nowhere"
    for prepare in (prepare_wsj0mix, prepare_librimix, prepare_lrs2mix):
        with pytest.raises(FileNotFoundError, match=re.escape(f"data_folder not found: {missing}")):
            prepare(missing, tmp_path / "save")
    assert not (tmp_path / "save").exists()


def test_missing_subfolders_are_all_named(tmp_path):
    root = make_wsj0mix(tmp_path / "wsj0", n_train=1, n_valid=1, n_test=1)
    base = os.path.join(root, "wav8k", "min")
    shutil.rmtree(os.path.join(base, "cv", "s2"))
    shutil.rmtree(os.path.join(base, "tt", "mix"))
    with pytest.raises(FileNotFoundError) as error:
        prepare_wsj0mix(root, tmp_path / "save")
    message = str(error.value)
    assert os.path.join(base, "cv", "s2") in message
    assert os.path.join(base, "tt", "mix") in message
    assert f"{base}/{{tr,cv,tt}}/{{mix,s1,s2}}/*.wav" in message
    assert not (tmp_path / "save").exists()


def test_librimix_without_libri2mix_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="Libri2Mix"):
        prepare_librimix(tmp_path / "empty", tmp_path / "save")


def test_librimix_noise_folder_required_for_mix_both(tmp_path):
    root = make_librimix(tmp_path / "data", with_noise=False, n_train=1, n_valid=1, n_test=1)
    with pytest.raises(FileNotFoundError, match=r"train-100/mix_both"):
        prepare_librimix(root, tmp_path / "save", mixture_type="mix_both")


def test_wrong_sample_rate(tmp_path):
    root = make_wsj0mix(tmp_path / "wsj0", sample_rate=16000, n_train=1, n_valid=1, n_test=1)
    os.rename(os.path.join(root, "wav16k"), os.path.join(root, "wav8k"))  # mislabelled
    with pytest.raises(ValueError) as error:
        prepare_wsj0mix(root, tmp_path / "save", sample_rate=8000)
    message = str(error.value)
    mix_folder = os.path.join(root, "wav8k", "min", "tr", "mix")
    assert os.path.join(mix_folder, os.listdir(mix_folder)[0]) in message
    assert "16000 Hz" in message and "expected 8000 Hz" in message
    assert not (tmp_path / "save").exists()


def test_empty_split(tmp_path):
    root = make_lrs2mix(tmp_path / "lrs2", n_train=1, n_valid=1, n_test=1)
    mix_folder = os.path.join(root, "tt", "mix")
    for name in os.listdir(mix_folder):
        os.remove(os.path.join(mix_folder, name))
    with pytest.raises(FileNotFoundError, match=re.escape(f"No mixtures in {mix_folder}")):
        prepare_lrs2mix(root, tmp_path / "save")


def test_missing_source_file(tmp_path):
    root = make_lrs2mix(tmp_path / "lrs2", n_train=2, n_valid=1, n_test=1)
    s2_folder = os.path.join(root, "tr", "s2")
    victim = os.path.join(s2_folder, sorted(os.listdir(s2_folder))[1])
    os.remove(victim)
    with pytest.raises(FileNotFoundError, match=re.escape(f"expected {victim}")):
        prepare_lrs2mix(root, tmp_path / "save")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"sample_rate": 44100}, "sample_rate: expected one of 8000, 16000, got 44100"),
        ({"mode": "mean"}, "mode: expected one of 'min', 'max', got 'mean'"),
        ({"num_spks": 4}, "num_spks: expected one of 2, 3, got 4"),
        ({"train_subset": "train-500"}, "train_subset: expected one of 'train-100', 'train-360'"),
    ],
)
def test_bad_option_values(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        prepare_librimix(tmp_path, tmp_path / "save", **options)
