"""Tests for the espeak-ng binding (speechbrain_s4m.data.espeak) and the synthetic
Libri2Mix-layout dataset (speechbrain_s4m.data.synthetic)."""

import csv
import json
import os

import numpy as np
import pytest
import soundfile as sf

from speechbrain_s4m.data import espeak
from speechbrain_s4m.data.preparation import prepare_librimix
from speechbrain_s4m.data.synthetic import (
    main,
    make_speakers,
    make_synthetic_librimix,
)

TINY = dict(num_train=4, num_dev=2, num_test=2, seed=3, progress=False)
SPLIT_DIRS = ("train-100", "dev", "test")
SENTENCE = "The small boat came back to the island before the summer rain."


def median_f0(samples, rate):
    """A rough pitch estimate: median autocorrelation peak (60-400 Hz) of loud frames."""
    x = samples.astype(np.float64)
    frame = int(0.04 * rate)
    lags = np.arange(rate // 400, rate // 60)
    threshold = 0.3 * np.sqrt(np.mean(x**2))
    f0s = []
    for start in range(0, len(x) - frame, frame):
        w = x[start : start + frame] - x[start : start + frame].mean()
        if np.sqrt(np.mean(w**2)) < threshold:
            continue
        ac = np.correlate(w, w, mode="full")[frame - 1 :]
        if ac[0] <= 0:
            continue
        lag = lags[np.argmax(ac[lags])]
        if ac[lag] / ac[0] > 0.5:
            f0s.append(rate / lag)
    return float(np.median(f0s))


def test_espeak_voices():
    assert espeak.sample_rate() == 22050 == espeak.SAMPLE_RATE
    low = espeak.synthesize_int16(SENTENCE, voice="en-us+m3", pitch=20)
    high = espeak.synthesize_int16(SENTENCE, voice="en+f3", pitch=80)
    for audio in (low, high):
        assert audio.dtype == np.int16
        assert 2.0 < len(audio) / 22050 < 8.0  # a 12-word sentence
        assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 500  # not silent
    assert median_f0(high, 22050) > 1.4 * median_f0(low, 22050)
    as_float = espeak.synthesize("Hello there.", voice="en+m1")
    assert as_float.dtype == np.float32 and 0.05 < np.abs(as_float).max() < 1.0
    with pytest.raises(ValueError, match="pitch"):
        espeak.synthesize("hi", pitch=101)


def test_espeak_batch_is_reproducible():
    requests = [
        {"text": SENTENCE, "voice": "en-us+klatt4", "seed": 5},
        {"text": "Yes.", "voice": "en+f2", "rate": 150},
    ]
    espeak.synthesize("Something else first.", voice="en+croak")  # in-process state
    first = espeak.synthesize_batch(requests)
    second = espeak.synthesize_batch(requests)
    assert len(first) == 2 and all(len(a) > 0 for a in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    with pytest.raises(espeak.EspeakError, match="unknown voice"):
        espeak.synthesize_batch([{"text": "hi", "voice": "xx-nope"}])


def test_speakers_disjoint():
    train, dev, test = make_speakers(0, (300, 40, 40))
    voices = [{s.voice for s in split} for split in (train, dev, test)]
    assert not voices[0] & voices[1] and not voices[0] & voices[2]
    assert not voices[1] & voices[2]
    ids = [s.id for split in (train, dev, test) for s in split]
    assert len(set(ids)) == len(ids)
    assert len({(s.pitch, s.rate, s.pitch_range) for s in train}) > 250  # varied
    assert make_speakers(0, (5, 2, 40))[2] == test  # test speakers ignore train size


def wav_files(root):
    files = {}
    for folder, _, names in os.walk(os.path.join(root, "Libri2Mix")):
        for name in names:
            path = os.path.join(folder, name)
            files[os.path.relpath(path, root)] = path
    return files


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_synthetic_librimix(str(tmp_path_factory.mktemp("tiny")), **TINY)


def test_layout_levels_and_mixing(tiny):
    base = os.path.join(tiny, "Libri2Mix", "wav8k", "min")
    speakers = {}
    for split, count in zip(SPLIT_DIRS, (4, 2, 2)):
        names = {sub: sorted(os.listdir(os.path.join(base, split, sub))) for sub in ("mix_clean", "s1", "s2")}
        assert len(names["mix_clean"]) == count
        assert names["mix_clean"] == names["s1"] == names["s2"]
        speakers[split] = set()
        for name in names["mix_clean"]:
            stem = name[: -len(".wav")]
            (spk_a, _), (spk_b, _) = (p.rsplit("-", 1) for p in stem.split("_"))
            assert spk_a != spk_b
            speakers[split] |= {spk_a, spk_b}
            signals = {}
            for sub in ("mix_clean", "s1", "s2"):
                info = sf.info(os.path.join(base, split, sub, name))
                assert info.samplerate == 8000 and info.channels == 1
                assert info.subtype == "PCM_16"
                signals[sub], _ = sf.read(os.path.join(base, split, sub, name), dtype="int16")
            mix, s1, s2 = (signals[k].astype(np.int32) for k in ("mix_clean", "s1", "s2"))
            assert len(mix) == len(s1) == len(s2) > 8000 * 0.8
            assert np.array_equal(mix, s1 + s2)
            peak = max(np.abs(x).max() for x in (mix, s1, s2)) / 32768
            assert peak <= 0.9 + 1e-4  # no clipping
            for source in (s1, s2):
                level = 20 * np.log10(np.sqrt(np.mean((source / 32768) ** 2)))
                assert level <= -25 + 0.05
                assert level >= -33 - 0.05 or peak > 0.9 - 1e-3  # unless peak-limited
    assert not speakers["train-100"] & speakers["test"]
    assert not speakers["train-100"] & speakers["dev"]
    assert not speakers["dev"] & speakers["test"]
    voices = {}
    for split in SPLIT_DIRS:
        with open(os.path.join(base, "metadata", f"{split}.csv"), encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        voices[split] = {r["s1_voice"] for r in rows} | {r["s2_voice"] for r in rows}
    assert not voices["train-100"] & voices["test"]
    with open(os.path.join(tiny, "synthetic_options.json"), encoding="utf-8") as f:
        options = json.load(f)["options"]
    assert options["seed"] == 3 and options["sample_rate"] == 8000
    assert options["num_train"] == 4 and "version" in options


def test_prepare_librimix_accepts_it(tiny, tmp_path):
    paths = prepare_librimix(
        data_folder=tiny,
        save_folder=str(tmp_path / "save"),
        sample_rate=8000,
        mode="min",
        num_spks=2,
        train_subset="train-100",
        mixture_type="mix_clean",
    )
    for split, count in (("train", 4), ("valid", 2), ("test", 2)):
        with open(paths[split], newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == count
        assert all(os.path.isfile(r["s2_wav"]) and float(r["duration"]) > 0.5 for r in rows)


def test_deterministic_and_reused(tiny, tmp_path, capsys):
    other = make_synthetic_librimix(str(tmp_path / "again"), workers=1, **TINY)
    first, second = wav_files(tiny), wav_files(other)
    assert sorted(first) == sorted(second) and len(first) > 24
    for rel in first:
        with open(first[rel], "rb") as a, open(second[rel], "rb") as b:
            assert a.read() == b.read(), rel

    mtimes = {p: os.stat(p).st_mtime_ns for p in second.values()}
    options_path = os.path.join(other, "synthetic_options.json")
    options_mtime = os.stat(options_path).st_mtime_ns
    assert make_synthetic_librimix(other, **{**TINY, "progress": True}) == other
    assert "reusing" in capsys.readouterr().err
    assert {p: os.stat(p).st_mtime_ns for p in second.values()} == mtimes
    assert os.stat(options_path).st_mtime_ns == options_mtime


def test_refuses_to_overwrite_then_force(tmp_path, capsys):
    root = str(tmp_path / "data")
    make_synthetic_librimix(root, **TINY)
    before = wav_files(root)
    changed = {**TINY, "num_train": 5}
    with pytest.raises(FileExistsError, match="refusing to overwrite") as error:
        make_synthetic_librimix(root, **changed)
    assert os.path.join(root, "Libri2Mix") in str(error.value)
    assert wav_files(root) == before  # untouched
    assert main(["--out", root, "--num-train", "5", "--quiet"]) == 2
    assert "--force" in capsys.readouterr().err

    make_synthetic_librimix(root, force=True, **changed)
    train = os.path.join(root, "Libri2Mix", "wav8k", "min", "train-100", "mix_clean")
    assert len(os.listdir(train)) == 5
    with open(os.path.join(root, "synthetic_options.json"), encoding="utf-8") as f:
        assert json.load(f)["options"]["num_train"] == 5


def test_refuses_a_foreign_dataset(tmp_path):
    foreign = tmp_path / "Libri2Mix" / "wav8k" / "min" / "test" / "s1"
    foreign.mkdir(parents=True)
    (foreign / "real.wav").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="no matching"):
        make_synthetic_librimix(str(tmp_path), **TINY)
    assert (foreign / "real.wav").read_bytes() == b"not ours"


def test_cli_16k(tmp_path, capsys):
    root = str(tmp_path / "d16")
    argv = ["--out", root, "--num-train", "2", "--num-dev", "2", "--num-test", "2"]
    assert main(argv + ["--sample-rate", "16000", "--quiet", "--seed", "1"]) == 0
    assert capsys.readouterr().out.strip() == os.path.abspath(root)
    mix = os.path.join(root, "Libri2Mix", "wav16k", "min", "test", "mix_clean")
    names = os.listdir(mix)
    assert len(names) == 2
    assert sf.info(os.path.join(mix, names[0])).samplerate == 16000
