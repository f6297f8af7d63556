"""Tests for on-the-fly mixing (speechbrain_s4m.data.dynamic_mixing) and the audio
helpers it reads with (speechbrain_s4m.data.audio)."""

import os
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny_datasets import (
    make_librispeech_folder,
    make_wsj0_speaker_folder,
    shared_librispeech,
)

from speechbrain_s4m.data.audio import read_audio, read_segment, resample  # noqa: E402
from speechbrain_s4m.data.dynamic_mixing import DynamicMixingDataset, rms_db  # noqa: E402


@pytest.fixture(scope="module")
def wsj0_folder(tmp_path_factory):
    return make_wsj0_speaker_folder(tmp_path_factory.mktemp("wsj0"), n_speakers=4, n_utts=3)


@pytest.fixture(scope="module")
def libri_folder(tmp_path_factory):
    return make_librispeech_folder(tmp_path_factory.mktemp("libri"), n_speakers=5, n_utts=3)


def keys(num_spks):
    return ["id", "mix_sig"] + [f"s{k + 1}_sig" for k in range(num_spks)]


# -------------------------------------------------------------------------- items


@pytest.mark.parametrize("num_spks", [2, 3])
def test_shapes_and_mixture(wsj0_folder, num_spks):
    dataset = DynamicMixingDataset(wsj0_folder, layout="wsj0", num_spks=num_spks, num_examples=5, segment_seconds=0.5)
    assert len(dataset) == 5
    for index in range(len(dataset)):
        item = dataset[index]
        assert sorted(item) == sorted(keys(num_spks))
        assert isinstance(item["id"], str)
        for key in keys(num_spks)[1:]:
            assert item[key].shape == (4000,) and item[key].dtype == torch.float32
        total = sum(item[f"s{k + 1}_sig"] for k in range(num_spks))
        assert torch.allclose(item["mix_sig"], total, atol=1e-6)
        assert all(float(item[k].abs().max()) > 0 for k in keys(num_spks)[1:])
    with pytest.raises(IndexError):
        dataset[5]


def test_min_mode_and_whole_length(wsj0_folder):
    # The utterances last 1 to 1.5 s: a longer segment is cut to the shorter utterance.
    dataset = DynamicMixingDataset(wsj0_folder, num_examples=6, segment_seconds=10.0)
    whole = DynamicMixingDataset(wsj0_folder, num_examples=6, segment_seconds=None)
    for index in range(6):
        plan = dataset.plan(index)
        lengths = [sf.info(f).frames for f in plan.files]
        assert plan.length == min(lengths)
        assert dataset[index]["mix_sig"].shape == (min(lengths),)
        assert torch.equal(whole[index]["mix_sig"], dataset[index]["mix_sig"])
        assert all(0 <= s <= n - plan.length for s, n in zip(plan.starts, lengths))


def test_determinism(wsj0_folder):
    a = DynamicMixingDataset(wsj0_folder, num_examples=4, segment_seconds=0.5, seed=7)
    b = DynamicMixingDataset(wsj0_folder, num_examples=4, segment_seconds=0.5, seed=7)
    for index in (3, 0, 2):  # any order
        item_a, item_b = a[index], b[index]
        assert item_a["id"] == item_b["id"]
        for key in keys(2)[1:]:
            assert torch.equal(item_a[key], item_b[key])
    assert torch.equal(a[1]["mix_sig"], a[1]["mix_sig"])  # same item twice
    first = [a[i]["mix_sig"] for i in range(4)]

    a.set_epoch(1)
    second = [a[i]["mix_sig"] for i in range(4)]
    assert all(not torch.equal(x, y) for x, y in zip(first, second))
    a.set_epoch(0)
    assert all(torch.equal(x, a[i]["mix_sig"]) for i, x in enumerate(first))

    other_seed = DynamicMixingDataset(wsj0_folder, num_examples=4, segment_seconds=0.5, seed=8)
    assert not all(torch.equal(x, other_seed[i]["mix_sig"]) for i, x in enumerate(first))


def test_distinct_speakers(wsj0_folder):
    dataset = DynamicMixingDataset(wsj0_folder, num_spks=3, num_examples=30)
    for index in range(len(dataset)):
        plan = dataset.plan(index)
        assert len(set(plan.speakers)) == 3
        for speaker, path in zip(plan.speakers, plan.files):
            assert os.path.basename(os.path.dirname(path)) == speaker
    assert dataset.speakers == ["001", "002", "003", "004"]


def test_librispeech_levels(libri_folder):
    dataset = DynamicMixingDataset(libri_folder, layout="librispeech", num_examples=12, segment_seconds=0.75)
    assert len(dataset.speakers) == 5
    for index in range(len(dataset)):
        item, plan = dataset[index], dataset.plan(index)
        levels = np.array([rms_db(item[f"s{k + 1}_sig"]) for k in range(2)])
        assert np.all((-33 <= np.array(plan.levels_db)) & (np.array(plan.levels_db) <= -25))
        # Exactly the drawn levels, or all shifted down together to avoid clipping.
        shift = levels - np.array(plan.levels_db)
        assert shift.max() - shift.min() < 0.05 and shift.max() < 0.05
        peak = max(float(item[k].abs().max()) for k in keys(2)[1:])
        if abs(shift[0]) > 0.05:
            assert peak == pytest.approx(0.9, abs=1e-4)


def test_wsj0_relative_snr(wsj0_folder):
    dataset = DynamicMixingDataset(wsj0_folder, num_examples=20, segment_seconds=0.5)
    snrs = []
    for index in range(len(dataset)):
        item = dataset[index]
        snr = rms_db(item["s1_sig"]) - rms_db(item["s2_sig"])
        assert abs(snr) <= 2.5 + 0.05
        snrs.append(snr)
    assert np.std(snrs) > 0.3  # really random


def test_no_clipping(wsj0_folder):
    loud = DynamicMixingDataset(
        wsj0_folder, num_spks=3, num_examples=8, segment_seconds=0.5, level_range_db=(-3.0, 0.0)
    )
    for index in range(len(loud)):
        item = loud[index]
        peak = max(float(item[k].abs().max()) for k in keys(3)[1:])
        assert peak <= 0.9 + 1e-6
        assert peak == pytest.approx(0.9, abs=1e-4)  # these had to be scaled down
        total = item["s1_sig"] + item["s2_sig"] + item["s3_sig"]
        assert torch.allclose(item["mix_sig"], total, atol=1e-6)


def test_speakers_filter(wsj0_folder):
    dataset = DynamicMixingDataset(wsj0_folder, num_examples=10, speakers=["004", "002"])
    assert dataset.speakers == ["002", "004"]
    for index in range(len(dataset)):
        assert sorted(dataset.plan(index).speakers) == ["002", "004"]
    with pytest.raises(ValueError, match="speakers: 009 not found in"):
        DynamicMixingDataset(wsj0_folder, speakers=["001", "009"])
    with pytest.raises(ValueError, match="need at least num_spks=2"):
        DynamicMixingDataset(wsj0_folder, speakers=["001"])


def test_min_seconds(wsj0_folder):
    # Utterances last 1.0, 1.25 and 1.5 s.
    dataset = DynamicMixingDataset(wsj0_folder, num_examples=4, min_seconds=1.2)
    assert all(len(utts) == 2 for utts in dataset.utterances.values())
    with pytest.raises(ValueError, match="at least 5.0 s"):
        DynamicMixingDataset(wsj0_folder, min_seconds=5.0)


def test_resampling_to_16k(wsj0_folder):
    dataset = DynamicMixingDataset(wsj0_folder, sample_rate=16000, num_examples=2, segment_seconds=0.5)
    item = dataset[0]
    assert item["mix_sig"].shape == (8000,)
    plan = dataset.plan(0)
    full, _ = read_audio(plan.files[0])
    expected = resample(full, 8000, 16000)[plan.starts[0] : plan.starts[0] + plan.length]
    scale = float(item["s1_sig"].norm() / expected.norm())
    assert torch.allclose(item["s1_sig"], expected * scale, atol=1e-4)


def test_read_segment_matches_full_resampling(tmp_path):
    path = str(tmp_path / "tone.wav")
    t = np.arange(22050) / 22050
    sf.write(path, 0.5 * np.sin(2 * np.pi * 440 * t) * np.hanning(len(t)), 22050, subtype="FLOAT")
    full = resample(read_audio(path)[0], 22050, 8000)
    for start, length in [(0, 100), (1234, 3000), (7000, 1000)]:
        segment = read_segment(path, start, length, 8000)
        expected = full[start : start + length]
        expected = torch.nn.functional.pad(expected, (0, length - len(expected)))
        assert segment.shape == (length,)
        assert torch.allclose(segment, expected, atol=1e-4)


def test_padded_batch(wsj0_folder):
    from speechbrain.dataio.batch import PaddedBatch

    dataset = DynamicMixingDataset(wsj0_folder, num_examples=4, segment_seconds=None)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=PaddedBatch)
    batch = next(iter(loader))
    assert batch.mix_sig.data.shape[0] == 2
    assert batch.s1_sig.data.shape == batch.mix_sig.data.shape
    assert len(batch.id) == 2


# -------------------------------------------------------------------------- errors


def test_missing_folder(tmp_path):
    missing = tmp_path / "si_tr_s"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        DynamicMixingDataset(missing)


def test_too_few_speakers(tmp_path, wsj0_folder):
    with pytest.raises(ValueError) as error:
        DynamicMixingDataset(wsj0_folder, num_spks=5)
    assert wsj0_folder in str(error.value) and "found 4 speaker(s)" in str(error.value)
    assert "<folder>/<speaker>/*.wav" in str(error.value)
    # A LibriSpeech folder read as the WSJ0 layout has no audio at <speaker>/*.wav.
    libri = make_librispeech_folder(tmp_path, n_speakers=2, n_utts=1)
    with pytest.raises(ValueError, match=re.escape("layout='wsj0'")):
        DynamicMixingDataset(libri, layout="wsj0")
    with pytest.raises(ValueError, match=re.escape("layout='librispeech'")):
        DynamicMixingDataset(wsj0_folder, layout="librispeech")


def test_unreadable_file(tmp_path):
    folder = make_wsj0_speaker_folder(tmp_path, n_speakers=2, n_utts=1)
    bad = os.path.join(folder, "002", "002c0299.wav")
    with open(bad, "wb") as f:
        f.write(b"not a wav file at all")
    with pytest.raises(ValueError, match=re.escape(bad)):
        DynamicMixingDataset(folder)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"layout": "wham"}, "layout: expected one of 'wsj0', 'librispeech'"),
        ({"num_spks": 1}, "num_spks: expected an integer >= 2"),
        ({"segment_seconds": 0}, "segment_seconds: expected a positive number"),
        ({"seed": -1}, "seed: expected a non-negative integer"),
        ({"num_examples": 0}, "num_examples: expected an integer >= 1"),
    ],
)
def test_bad_options(wsj0_folder, options, message):
    with pytest.raises(ValueError, match=message):
        DynamicMixingDataset(wsj0_folder, **options)


# ----------------------------------------------------------------------- real data


def test_real_mini_librispeech():
    folder = shared_librispeech()
    if folder is None:
        pytest.skip(
            "shared Mini LibriSpeech (<repo>/../shared/data/mini-librispeech-8k/train-clean-5) "
            "not present, or S4M_TINY_SYNTHETIC=1"
        )
    dataset = DynamicMixingDataset(
        folder, layout="librispeech", sample_rate=8000, num_examples=6, segment_seconds=2.0, seed=3
    )
    assert len(dataset.speakers) == 28
    held_out = dataset.speakers[:4]
    train = DynamicMixingDataset(
        folder,
        layout="librispeech",
        num_examples=6,
        segment_seconds=2.0,
        speakers=dataset.speakers[4:],
    )
    for index in range(len(dataset)):
        item, plan = dataset[index], dataset.plan(index)
        assert item["mix_sig"].shape == (16000,)
        assert len(set(plan.speakers)) == 2
        levels = np.array([rms_db(item["s1_sig"]), rms_db(item["s2_sig"])])
        shift = levels - np.array(plan.levels_db)  # 0, or the same anti-clipping drop
        assert shift.max() - shift.min() < 0.05 and shift.max() < 0.05
        assert float(item["mix_sig"].abs().max()) <= 0.9 + 1e-6
        assert not set(train.plan(index).speakers) & set(held_out)
