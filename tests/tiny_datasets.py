"""Tiny speech-separation datasets in the real on-disk layouts, for fast tests.

Each ``make_*`` function writes a few ~1 s mixtures (4 train, 2 valid, 2 test by
default) into a folder and returns the ``data_folder`` to pass to the matching
preparation function (``speechbrain_s4m.data.preparation``) or dynamic-mixing dataset.

The sources are real read speech cut from Mini LibriSpeech when
``<repo>/../shared/data/mini-librispeech-8k/train-clean-5`` exists (one real speaker per
tiny-dataset speaker), and generated speech-like signals otherwise (harmonic tones with
a per-speaker pitch, vibrato and a syllable-rate envelope); everything is deterministic
given ``seed``. Use pytest's ``tmp_path`` as ``root``: nothing is ever written next to
the shared data or into the repository.

Usage from a test file (tests/conftest.py puts tests/ on the path)::

    from tiny_datasets import make_wsj0mix
"""

import functools
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_LIBRISPEECH = REPO_ROOT.parent / "shared" / "data" / "mini-librispeech-8k" / "train-clean-5"
SHARED_RATE = 8000
SOURCE_LEVEL_DB = -25.0  # RMS level of each source before mixing (dBFS)
# Set S4M_TINY_SYNTHETIC=1 to use generated signals even when the shared data is there
# (to check that the tests also pass on a machine without it).
FORCE_SYNTHETIC = os.environ.get("S4M_TINY_SYNTHETIC", "") == "1"


def shared_librispeech() -> Optional[str]:
    """The shared Mini LibriSpeech ``train-clean-5`` folder (8 kHz), or None if absent
    (or if ``S4M_TINY_SYNTHETIC=1``)."""
    if FORCE_SYNTHETIC or not SHARED_LIBRISPEECH.is_dir():
        return None
    return str(SHARED_LIBRISPEECH)


def _shared_files() -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
    """``((speaker, (flac, ...)), ...)`` of the shared data, sorted; empty if absent."""
    root = shared_librispeech()
    return () if root is None else _list_speakers(root)


@functools.lru_cache(maxsize=None)
def _list_speakers(root: str) -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
    speakers = []
    for speaker in sorted(os.listdir(root)):
        folder = os.path.join(root, speaker)
        if not os.path.isdir(folder):
            continue
        files = sorted(
            os.path.join(dirpath, name)
            for dirpath, _, names in os.walk(folder)
            for name in names
            if name.endswith(".flac")
        )
        if files:
            speakers.append((speaker, tuple(files)))
    return tuple(speakers)


def uses_real_speech() -> bool:
    """Whether the ``make_*`` functions cut their sources from the shared real speech."""
    return bool(_shared_files())


def _set_level(x: np.ndarray, level_db: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    return x if rms < 1e-6 else x * (10.0 ** (level_db / 20.0) / rms)


def _synthetic_speech(speaker: int, num_samples: int, sample_rate: int, rng) -> np.ndarray:
    """A speech-like signal: harmonics of a wobbling f0 under a syllable envelope."""
    t = np.arange(num_samples) / sample_rate
    f0 = (95.0 + 37.0 * (speaker % 7)) * rng.uniform(0.93, 1.07)
    f0_track = f0 * (1 + 0.06 * np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0_track) / sample_rate
    signal = np.zeros(num_samples)
    for h in range(1, int(min(3800, sample_rate / 2 - 200) // (f0 * 1.1)) + 1):
        signal += rng.uniform(0.3, 1.0) / h * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    syllable_rate = rng.uniform(3.0, 6.0)
    envelope = np.clip(np.sin(2 * np.pi * syllable_rate * t + rng.uniform(0, 6)), 0, None) ** 0.7
    signal = signal * envelope + 0.003 * rng.standard_normal(num_samples)
    return _set_level(signal, SOURCE_LEVEL_DB)


def _real_speech(files: Sequence[str], num_samples: int, sample_rate: int, rng) -> np.ndarray:
    """``num_samples`` of one real utterance (tiled if too short), at ``sample_rate``."""
    need = int(np.ceil(num_samples * SHARED_RATE / sample_rate)) + 16
    best = None
    for _ in range(4):  # avoid a near-silent excerpt
        path = files[int(rng.integers(len(files)))]
        frames = sf.info(path).frames
        start = int(rng.integers(max(frames - need, 0) + 1))
        chunk, _ = sf.read(path, start=start, stop=start + need, dtype="float32")
        if chunk.ndim > 1:
            chunk = chunk.mean(axis=1)
        if len(chunk) < need:
            chunk = np.tile(chunk, int(np.ceil(need / max(len(chunk), 1))))[:need]
        rms = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)))
        if best is None or rms > best[0]:
            best = (rms, chunk)
        if rms > 0.01:
            break
    chunk = best[1]
    if sample_rate != SHARED_RATE:
        import torchaudio.functional

        chunk = torchaudio.functional.resample(
            torch.from_numpy(np.ascontiguousarray(chunk)), SHARED_RATE, sample_rate
        ).numpy()
    return _set_level(chunk[:num_samples].astype(np.float64), SOURCE_LEVEL_DB)


class _Speakers:
    """A pool of speakers that can say ``num_samples`` of something."""

    def __init__(self):
        self.real = _shared_files()

    def names(self, count: int) -> List[str]:
        if self.real:
            return [self.real[k % len(self.real)][0] for k in range(count)]
        return [str(100 + k) for k in range(count)]

    def __len__(self) -> int:
        return len(self.real) if self.real else 40

    def say(self, speaker: int, num_samples: int, sample_rate: int, rng) -> np.ndarray:
        if self.real:
            files = self.real[speaker % len(self.real)][1]
            return _real_speech(files, num_samples, sample_rate, rng)
        return _synthetic_speech(speaker, num_samples, sample_rate, rng)


def _noise(num_samples: int, rng, level_db: float = -32.0) -> np.ndarray:
    """Low-pass-tilted noise (a crude stand-in for WHAM! noise)."""
    white = rng.standard_normal(num_samples + 64)
    colored = np.convolve(white, np.hanning(9), mode="same")[:num_samples]
    return _set_level(colored, level_db)


def _write(path: str, signal: np.ndarray, sample_rate: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, np.asarray(signal, dtype=np.float32), sample_rate, subtype="PCM_16")


def _make_mixtures(
    *,
    split_folder: str,
    count: int,
    sample_rate: int,
    mode: str,
    num_spks: int,
    seconds: float,
    rng,
    speakers: _Speakers,
    speaker_range: Tuple[int, int],
    name_style: str,
    mix_dirs: Sequence[str],
    with_noise: bool,
) -> None:
    """Write ``count`` mixtures into ``split_folder/{<mix_dirs>,s1,s2,...[,noise]}``."""
    lo, hi = speaker_range
    for j in range(count):
        spk = rng.choice(np.arange(lo, hi), size=num_spks, replace=False)
        full = int(round(seconds * rng.uniform(0.8, 1.2) * sample_rate))
        if mode == "min":
            lengths = [full] * num_spks
        else:  # "max": sources of different lengths, zero-padded to the longest
            lengths = [full] + [int(full * rng.uniform(0.6, 1.0)) for _ in range(num_spks - 1)]
        snrs = [0.0] + [float(rng.uniform(-2.5, 2.5)) for _ in range(num_spks - 1)]
        sources = np.zeros((num_spks, full))
        for k in range(num_spks):
            speech = speakers.say(int(spk[k]), lengths[k], sample_rate, rng)
            sources[k, : lengths[k]] = speech * 10.0 ** (snrs[k] / 20.0)
        noise = _noise(full, rng) if with_noise else np.zeros(full)
        names = speakers.names(hi)
        parts = [f"{names[int(s)]}-{j:04d}" for s in spk]
        if name_style == "librimix":
            stem = "_".join(f"{names[int(s)]}-{1000 + j}-{k:04d}" for k, s in enumerate(spk))
        else:  # wsj0mix / lrs2mix: utterance_snr_utterance_snr...
            stem = "_".join(f"{p}_{snr:.4f}" for p, snr in zip(parts, snrs))
        clean = sources.sum(0)
        signals = {"mix_clean": clean, "mix": clean, "mix_both": clean + noise}
        signals["mix_single"] = sources[0] + noise
        peak = max(np.abs(v).max() for v in list(signals.values()) + [sources, noise])
        scale = min(1.0, 0.9 / peak)
        for mix_dir in mix_dirs:
            path = os.path.join(split_folder, mix_dir, stem + ".wav")
            _write(path, signals[mix_dir] * scale, sample_rate)
        for k in range(num_spks):
            path = os.path.join(split_folder, f"s{k + 1}", stem + ".wav")
            _write(path, sources[k] * scale, sample_rate)
        if with_noise:
            _write(os.path.join(split_folder, "noise", stem + ".wav"), noise * scale, sample_rate)


def _speaker_ranges(speakers: _Speakers, num_spks: int) -> Dict[str, Tuple[int, int]]:
    """Disjoint speaker sets for train / valid / test when there are enough speakers."""
    n = len(speakers)
    if n >= 3 * num_spks + 6:
        a, b = n - 2 * (num_spks + 1), n - (num_spks + 1)
        return {"train": (0, a), "valid": (a, b), "test": (b, n)}
    return {"train": (0, n), "valid": (0, n), "test": (0, n)}


def _check(sample_rate: int, mode: str, num_spks: int) -> None:
    if sample_rate not in (8000, 16000):
        raise ValueError(f"sample_rate: expected 8000 or 16000, got {sample_rate!r}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
    if num_spks not in (2, 3):
        raise ValueError(f"num_spks: expected 2 or 3, got {num_spks!r}")


def _make_splits(
    base: str,
    split_dirs: Sequence[str],
    counts: Sequence[int],
    *,
    seed_stream: Sequence[int],
    sample_rate: int,
    mode: str,
    num_spks: int,
    seconds: float,
    name_style: str,
    mix_dirs: Sequence[str],
    with_noise: bool = False,
) -> None:
    """The train, valid and test splits in ``base/<split_dirs>``, from speakers that no
    two splits share."""
    rng = np.random.default_rng(list(seed_stream))
    speakers = _Speakers()
    ranges = _speaker_ranges(speakers, num_spks)
    for split, sub, count in zip(("train", "valid", "test"), split_dirs, counts):
        _make_mixtures(
            split_folder=os.path.join(base, sub),
            count=count,
            sample_rate=sample_rate,
            mode=mode,
            num_spks=num_spks,
            seconds=seconds,
            rng=rng,
            speakers=speakers,
            speaker_range=ranges[split],
            name_style=name_style,
            mix_dirs=mix_dirs,
            with_noise=with_noise,
        )


def make_wsj0mix(
    root: str,
    sample_rate: int = 8000,
    mode: str = "min",
    num_spks: int = 2,
    n_train: int = 4,
    n_valid: int = 2,
    n_test: int = 2,
    seconds: float = 1.0,
    seed: int = 0,
) -> str:
    """Write ``<root>/wav{8,16}k/<mode>/{tr,cv,tt}/{mix,s1,s2[,s3]}/*.wav``; return ``root``.

    Example
    -------
    >>> import tempfile
    >>> folder = make_wsj0mix(tempfile.mkdtemp(), n_train=1, n_valid=1, n_test=1)
    >>> sorted(os.listdir(os.path.join(folder, "wav8k", "min", "tr")))
    ['mix', 's1', 's2']
    """
    _check(sample_rate, mode, num_spks)
    base = os.path.join(os.fspath(root), f"wav{sample_rate // 1000}k", mode)
    _make_splits(
        base,
        ("tr", "cv", "tt"),
        (n_train, n_valid, n_test),
        seed_stream=(seed, 1),
        sample_rate=sample_rate,
        mode=mode,
        num_spks=num_spks,
        seconds=seconds,
        name_style="wsj0mix",
        mix_dirs=["mix"],
    )
    return os.fspath(root)


def make_librimix(
    root: str,
    sample_rate: int = 8000,
    mode: str = "min",
    num_spks: int = 2,
    n_train: int = 4,
    n_valid: int = 2,
    n_test: int = 2,
    seconds: float = 1.0,
    train_subset: str = "train-100",
    with_noise: bool = True,
    seed: int = 0,
) -> str:
    """Write ``<root>/Libri{2,3}Mix/wav{8,16}k/<mode>/{<train_subset>,dev,test}/
    {mix_clean,s1,s2[,s3]}`` (plus ``mix_both``, ``mix_single`` and ``noise`` when
    ``with_noise``); return ``root``.

    Example
    -------
    >>> import tempfile
    >>> folder = make_librimix(tempfile.mkdtemp(), n_train=1, n_valid=1, n_test=1)
    >>> sorted(os.listdir(os.path.join(folder, "Libri2Mix", "wav8k", "min", "dev")))
    ['mix_both', 'mix_clean', 'mix_single', 'noise', 's1', 's2']
    """
    _check(sample_rate, mode, num_spks)
    if train_subset not in ("train-100", "train-360"):
        raise ValueError(f"train_subset: expected 'train-100' or 'train-360', got {train_subset!r}")
    base = os.path.join(os.fspath(root), f"Libri{num_spks}Mix", f"wav{sample_rate // 1000}k", mode)
    mix_dirs = ["mix_clean", "mix_both", "mix_single"] if with_noise else ["mix_clean"]
    _make_splits(
        base,
        (train_subset, "dev", "test"),
        (n_train, n_valid, n_test),
        seed_stream=(seed, 2),
        sample_rate=sample_rate,
        mode=mode,
        num_spks=num_spks,
        seconds=seconds,
        name_style="librimix",
        mix_dirs=mix_dirs,
        with_noise=with_noise,
    )
    return os.fspath(root)


def make_lrs2mix(
    root: str,
    num_spks: int = 2,
    n_train: int = 4,
    n_valid: int = 2,
    n_test: int = 2,
    seconds: float = 1.0,
    seed: int = 0,
) -> str:
    """Write ``<root>/{tr,cv,tt}/{mix,s1,s2}/*.wav`` at 16 kHz; return ``root``.

    Example
    -------
    >>> import tempfile
    >>> folder = make_lrs2mix(tempfile.mkdtemp(), n_train=1, n_valid=1, n_test=1)
    >>> sorted(os.listdir(folder))
    ['cv', 'tr', 'tt']
    """
    _check(16000, "min", num_spks)
    _make_splits(
        os.fspath(root),
        ("tr", "cv", "tt"),
        (n_train, n_valid, n_test),
        seed_stream=(seed, 3),
        sample_rate=16000,
        mode="min",
        num_spks=num_spks,
        seconds=seconds,
        name_style="lrs2mix",
        mix_dirs=["mix"],
    )
    return os.fspath(root)


def make_wsj0_speaker_folder(
    root: str,
    n_speakers: int = 4,
    n_utts: int = 3,
    sample_rate: int = 8000,
    seconds: float = 1.0,
    seed: int = 0,
) -> str:
    """Write a WSJ0 ``si_tr_s``-style folder, ``<root>/si_tr_s/<spk>/<spk>c02<nn>.wav``
    (3-character speaker names, utterances of 1x to 1.5x ``seconds``), for dynamic
    mixing with ``layout="wsj0"``; return ``<root>/si_tr_s``.

    Example
    -------
    >>> import tempfile
    >>> folder = make_wsj0_speaker_folder(tempfile.mkdtemp(), n_speakers=2, n_utts=1)
    >>> sorted(os.listdir(folder)), os.listdir(os.path.join(folder, "001"))
    (['001', '002'], ['001c0200.wav'])
    """
    rng = np.random.default_rng([seed, 4])
    speakers = _Speakers()
    folder = os.path.join(os.fspath(root), "si_tr_s")
    for k in range(n_speakers):
        name = f"{k + 1:03d}"
        for u in range(n_utts):
            length = int(seconds * sample_rate * (1.0 + 0.5 * u / max(n_utts - 1, 1)))
            speech = speakers.say(k, length, sample_rate, rng)
            _write(os.path.join(folder, name, f"{name}c02{u:02d}.wav"), speech, sample_rate)
    return folder


def make_librispeech_folder(
    root: str,
    n_speakers: int = 4,
    n_utts: int = 3,
    sample_rate: int = 8000,
    seconds: float = 1.0,
    seed: int = 0,
) -> str:
    """Write a LibriSpeech-style folder,
    ``<root>/train-clean/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac`` (two chapters per
    speaker when ``n_utts > 1``), for dynamic mixing with ``layout="librispeech"``;
    return ``<root>/train-clean``.

    Example
    -------
    >>> import tempfile
    >>> folder = make_librispeech_folder(tempfile.mkdtemp(), n_speakers=2, n_utts=1)
    >>> sorted(os.listdir(folder)), os.listdir(os.path.join(folder, "19", "1990"))
    (['19', '20'], ['19-1990-0000.flac'])
    """
    rng = np.random.default_rng([seed, 5])
    speakers = _Speakers()
    folder = os.path.join(os.fspath(root), "train-clean")
    for k in range(n_speakers):
        name = str(19 + k)
        for u in range(n_utts):
            chapter = f"{name}{90 + u % 2}"
            length = int(seconds * sample_rate * (1.0 + 0.5 * u / max(n_utts - 1, 1)))
            speech = speakers.say(k, length, sample_rate, rng)
            path = os.path.join(folder, name, chapter, f"{name}-{chapter}-{u:04d}.flac")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            sf.write(path, speech.astype(np.float32), sample_rate, subtype="PCM_16")
    return folder
