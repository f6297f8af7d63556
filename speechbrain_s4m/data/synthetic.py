"""A built-in, offline two-speaker separation dataset of synthesized speech.

For trying the LibriMix recipe without LibriSpeech: :func:`make_synthetic_librimix`
synthesizes English sentences with espeak-ng (:mod:`speechbrain_s4m.data.espeak`) and
mixes them in the Libri2Mix layout, which
:func:`speechbrain_s4m.data.preparation.prepare_librimix` (and so
``recipes/LibriMix/separation/train.py``) reads unchanged::

    <root>/Libri2Mix/wav8k/min/{train-100,dev,test}/{mix_clean,s1,s2}/<id>.wav
    <root>/Libri2Mix/wav8k/min/metadata/{train-100,dev,test}.csv   (who says what)
    <root>/synthetic_options.json                                  (written last)

``<id>`` is ``<spkA>-<uttA>_<spkB>-<uttB>``, as in LibriMix (``wav16k`` at 16 kHz).

How it is made:

* A *speaker* is an espeak-ng English accent (8 of them: en, en-us, en-us-nyc,
  en-gb-scotland, ...) with a voice variant (:data:`VARIANTS`: 65 of espeak-ng's
  male, female and Klatt variants, leaving out the robotic, echoing, whispering and
  clipping ones) and its own pitch (25-75 of 100), pitch range (30-90 of 100) and
  rate (140-200 words per minute). No two speakers of the whole dataset share an
  accent+variant pair (while pairs last: 520), so test and dev speakers never appear
  in training, nor in each other.
* Each speaker says a pool of random sentences of 5 to 15 words from a built-in list
  of common English words (:data:`WORDS`); each utterance is synthesized once (at
  22,050 Hz, then resampled with ``scipy.signal.resample_poly``) and used by about
  two mixtures.
* A mixture pairs utterances of two different speakers of the same split, cropped to
  the shorter one (LibriMix's ``min`` mode), each scaled to a random loudness in
  [-33, -25] dBFS (RMS); if the peak of the mixture or of a source would exceed 0.9,
  all three are scaled down together. Sources are quantized to 16 bits and the
  mixture is their exact sum (``mix_clean == s1 + s2`` sample for sample).

Everything random is drawn from ``seed``: the same options give the same bytes. Each
split has its own random stream, so the test set does not change with ``num_train``.
A call whose options match ``synthetic_options.json`` reuses the data; other options
never overwrite an existing ``Libri2Mix`` folder unless ``force`` is set.

Defaults (:data:`DEFAULTS`): 2,000 training mixtures from 100 speakers, 200 dev and 200
test mixtures from 20 speakers each; mixtures last 1 to 5.5 s (2.5 s on average, half
of them 1.8-3 s), so 1.4 h of training mixtures (290 MB with the sources, at 8 kHz).
Sized for a ~10-minute S4M-tiny training demo on a CPU: probably more mixtures than it
gets through (so it sees fresh ones rather than memorizing a few), 100 speakers for
variety, and dev/test sets small enough to evaluate in a few minutes. Making it takes
about 10 s on 2 CPU cores (smaller or larger sets: the ``num_*`` options).

Command line::

    s4m-make-data --out data/synthetic            # or python -m speechbrain_s4m.data.synthetic
    python recipes/LibriMix/separation/train.py \\
        recipes/LibriMix/separation/hparams/s4m_tiny.yaml --data_folder=data/synthetic

Example
-------
>>> make_sentence(np.random.default_rng(0))[:1].isupper()
True

Authors
 * speechbrain-s4m contributors
"""

import csv
import io
import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from speechbrain_s4m.cli import command_parser, usage_error
from speechbrain_s4m.data import espeak
from speechbrain_s4m.data.options_stamp import OptionsStamp

__all__ = [
    "ACCENTS",
    "DEFAULTS",
    "VARIANTS",
    "VERSION",
    "WORDS",
    "Speaker",
    "main",
    "make_sentence",
    "make_speakers",
    "make_synthetic_librimix",
]

#: Bumped whenever the same options would give different data.
VERSION = 1
STAMP_KIND = "synthetic"  # <root>/synthetic_options.json
DEFAULTS: Dict[str, int] = {
    "num_train": 2000,
    "num_dev": 200,
    "num_test": 200,
    "num_speakers": 100,
    "num_dev_speakers": 20,
    "num_test_speakers": 20,
    "sample_rate": 8000,
    "seed": 0,
}
#: (split name in the options, LibriMix folder name, speaker-ID prefix)
SPLITS = (("train", "train-100", "tr"), ("dev", "dev", "cv"), ("test", "test", "tt"))
MIX_DIR = "mix_clean"
LEVEL_RANGE_DB = (-33.0, -25.0)
MAX_PEAK = 0.9
WORDS_PER_SENTENCE = (5, 15)
PITCH_RANGE = (25, 75)
PITCH_SPAN_RANGE = (30, 90)
RATE_RANGE = (140, 200)
VOLUME = 50  # espeak-ng's amplitude: low enough that no chosen variant clips

#: espeak-ng's English accents (voice names).
ACCENTS = (
    "en",
    "en-us",
    "en-us-nyc",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
)
#: espeak-ng voice variants (``espeak-ng-data/voices/!v``) that sound like speech and do
#: not clip at :data:`VOLUME`.
VARIANTS = tuple(
    """
    m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f4 f5 klatt3 klatt4 klatt5 klatt6 croak
    Alex Andrea Andy Annie Denis Gene Gene2 Lee Mario Michael Mike Nguyen
    adam aunty belinda benjamin boris david edward edward2 grandma grandpa gustave
    iven2 iven3 iven4 linda max michel miguel mike2 paul pedro quincy rob robert
    sandro shelby travis victor Alicia kaukovalta Storm marcelo john norbert pablo
    """.split()
)
#: Common English words the sentences are drawn from.
WORDS = tuple(
    """
    a about above across after again against air all almost along also always among
    and animal another answer any apple area around as ask at away baby back bad ball
    bank be bear beautiful because bed been before began begin behind believe below
    best better between big bird black blue board boat body book both box boy bread
    bridge bright bring brother brown build busy but buy by call came can car care
    carry cat change child children city class clean clear close cold color come
    common could country course cover cross cup dark day deep did different do doctor
    dog door down draw dream dress drink drive dry during each early earth easy eat
    edge egg eight end enough even evening ever every eye face fact fall family far
    farm fast father feel few field find fine fire first fish five floor flower fly
    follow food foot for forest form four free friend from front full game garden
    gave girl give glass go gold good got grass great green ground group grow had
    half hand happy hard has have he head hear heart heavy help her here high hill
    his hold home horse hot hour house how hundred idea if important in inside into
    is island it job just keep kind king kitchen knew know lake land large last late
    laugh learn leave left less letter light like line list listen little live long
    look lost love low made make man many map market may me mean men might mile milk
    mind minute miss money month moon more morning most mother mountain move much
    music must my name near need never new next night nine no north nothing now
    number ocean of off often old on once one only open or orange other our out over
    own page paper park part party pass past people person picture piece place plan
    plant play please point poor port power press pretty problem pull put question
    quick quiet rain ran reach read ready real red remember rest rich ride right
    river road rock room round run said same sand saw say school sea second see seem
    seven shall she ship shoe short should show side simple since sing sister sit six
    sky sleep slow small smile snow so soft some song soon sound south space speak
    special spring stand star start station stay step still stone stop story street
    strong study such summer sun sure table take talk tall teacher tell ten than that
    the their them then there these they thing think third this those thought three
    through time to today together told too took top toward town train tree true try
    turn two under until up upon us use very village visit voice wait walk wall want
    warm was watch water way we weather week well went were west what wheel when
    where which while white who whole why wide wild will wind window winter with
    without woman wood word work world would write year yellow yes yesterday yet you
    young
    """.split()
)

_UTTERANCES_PER_BATCH = 160  # synthesis requests per worker process


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: an espeak-ng voice and its settings.

    Arguments
    ---------
    id : str
        Its ID in file names (``tr003``, ``cv001``, ``tt012``).
    voice : str
        espeak-ng voice name with variant, e.g. ``en-us+m3``.
    pitch : int
        espeak-ng base pitch, 0-100.
    pitch_range : int
        espeak-ng pitch range, 0-100.
    rate : int
        Words per minute.
    """

    id: str
    voice: str
    pitch: int
    pitch_range: int
    rate: int


# ------------------------------------------------------------------------- planning


def make_sentence(rng: np.random.Generator) -> str:
    """A random sentence of 5 to 15 words from :data:`WORDS`.

    Example
    -------
    >>> len(make_sentence(np.random.default_rng(1)).split()) in range(5, 16)
    True
    """
    count = int(rng.integers(WORDS_PER_SENTENCE[0], WORDS_PER_SENTENCE[1] + 1))
    words = [WORDS[i] for i in rng.integers(len(WORDS), size=count)]
    return " ".join(words).capitalize() + "."


def _split_rng(seed: int, split_index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, split_index, stream])


def make_speakers(seed: int, counts: Sequence[int]) -> List[List[Speaker]]:
    """The speakers of each split (train, dev, test), disjoint.

    Accent+variant pairs are dealt out in a seeded order, test first, then dev, then
    train, so that no pair is in two splits; training speakers reuse pairs (with
    other pitch and rate) only when there are more of them than pairs left.

    Arguments
    ---------
    seed : int
        The dataset's seed.
    counts : sequence of int
        Number of speakers of train, dev and test.

    Returns
    -------
    list of list of Speaker
        ``[train, dev, test]``.

    Example
    -------
    >>> train, dev, test = make_speakers(0, (3, 1, 1))
    >>> [s.id for s in train], test[0].voice.count("+")
    (['tr0', 'tr1', 'tr2'], 1)
    """
    pairs = [f"{accent}+{variant}" for accent in ACCENTS for variant in VARIANTS]
    order = np.random.default_rng([seed, 99]).permutation(len(pairs))
    pairs = [pairs[i] for i in order]
    num_train, num_dev, num_test = (int(c) for c in counts)
    if num_test + num_dev >= len(pairs):
        raise ValueError(f"synthetic: at most {len(pairs) - 1} dev + test speakers, got {num_dev} + {num_test}")
    voices = {
        "test": pairs[:num_test],
        "dev": pairs[num_test : num_test + num_dev],
        "train": [pairs[num_test + num_dev + i % (len(pairs) - num_test - num_dev)] for i in range(num_train)],
    }
    result = []
    for index, (split, _, prefix) in enumerate(SPLITS):
        rng = _split_rng(seed, index, 0)
        split_voices = voices[split]
        width = len(str(max(len(split_voices) - 1, 0)))
        speakers = []
        for k, voice in enumerate(split_voices):
            speakers.append(
                Speaker(
                    id=f"{prefix}{k:0{width}d}",
                    voice=voice,
                    pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
                    pitch_range=int(rng.integers(PITCH_SPAN_RANGE[0], PITCH_SPAN_RANGE[1] + 1)),
                    rate=int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
                )
            )
        result.append(speakers)
    return result


@dataclass
class _Mixture:
    id: str
    sources: Tuple[Tuple[int, int], Tuple[int, int]]  # (speaker index, utterance index)
    levels_db: Tuple[float, float]


def _plan_split(
    seed: int, split_index: int, speakers: List[Speaker], num_mixtures: int
) -> Tuple[List[List[Dict[str, Any]]], List[_Mixture]]:
    """The utterance pools (synthesis requests per speaker) and the mixtures."""
    rng = _split_rng(seed, split_index, 1)
    num_utts = max(2, math.ceil(num_mixtures / len(speakers)))
    pools = [
        [
            {
                "text": make_sentence(rng),
                "voice": s.voice,
                "rate": s.rate,
                "pitch": s.pitch,
                "pitch_range": s.pitch_range,
                "volume": VOLUME,
                "seed": int(rng.integers(2**31)),
            }
            for _ in range(num_utts)
        ]
        for s in speakers
    ]
    width = len(str(num_utts - 1))
    mixtures, seen = [], set()
    while len(mixtures) < num_mixtures:
        a, b = (int(i) for i in rng.choice(len(speakers), size=2, replace=False))
        ua, ub = (int(i) for i in rng.integers(num_utts, size=2))
        key = frozenset(((a, ua), (b, ub)))
        levels = tuple(float(x) for x in rng.uniform(*LEVEL_RANGE_DB, size=2))
        if key in seen:
            continue
        seen.add(key)
        mix_id = f"{speakers[a].id}-{ua:0{width}d}_{speakers[b].id}-{ub:0{width}d}"
        mixtures.append(_Mixture(mix_id, ((a, ua), (b, ub)), levels))
    return pools, mixtures


# ------------------------------------------------------------------------- audio


def _resample(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """espeak-ng's int16 samples -> float32 at ``sample_rate`` (polyphase filter).

    NumPy/SciPy rather than torch: fast on one short signal without changing torch's
    thread count (torch.set_num_threads(n >= 2) after LAPACK has run can hang later
    linear algebra in the same process with torch 2.11's MKL build)."""
    ratio = math.gcd(sample_rate, espeak.SAMPLE_RATE)
    signal = samples.astype(np.float64) / 32768.0
    resampled = resample_poly(signal, sample_rate // ratio, espeak.SAMPLE_RATE // ratio)
    return resampled.astype(np.float32)


def _synthesize_pools(
    pools: List[List[Dict[str, Any]]],
    sample_rate: int,
    workers: int,
    bar,
) -> List[List[np.ndarray]]:
    """Synthesize every utterance (in batches of whole speakers, each in a fresh
    worker process, so that the audio depends only on the batch) and resample it."""
    batches: List[List[int]] = [[]]
    for index, pool in enumerate(pools):
        if sum(len(pools[i]) for i in batches[-1]) >= _UTTERANCES_PER_BATCH:
            batches.append([])
        batches[-1].append(index)

    def run(batch: List[int]) -> List[List[np.ndarray]]:
        requests = [r for i in batch for r in pools[i]]
        audio = [_resample(x, sample_rate) for x in espeak.synthesize_batch(requests)]
        out, offset = [], 0
        for i in batch:
            out.append(audio[offset : offset + len(pools[i])])
            offset += len(pools[i])
        return out

    result: List[List[np.ndarray]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for batch, audio in zip(batches, pool.map(run, batches)):
            result.extend(audio)
            bar.update(sum(len(pools[i]) for i in batch))
    return result


def _write_wav(path: str, samples: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM WAV. (Through memory: soundfile's close() fsyncs a file on disk,
    which costs more than everything else here on a slow disk.)"""
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, subtype="PCM_16", format="WAV")
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())


def _rms_db(x: np.ndarray) -> float:
    return 10.0 * math.log10(max(float(np.mean(np.square(x, dtype=np.float64))), 1e-20))


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def _mix(sources: Sequence[np.ndarray], levels_db: Sequence[float]) -> Tuple[np.ndarray, List[np.ndarray], float]:
    """Crop to the shortest, set the levels, limit the peak; int16 mixture and sources
    (the mixture is the exact sum of the sources), and the gain applied for the peak."""
    length = min(len(s) for s in sources)
    scaled = []
    for source, level in zip(sources, levels_db):
        s = source[:length].astype(np.float64)
        scaled.append(s * 10.0 ** ((level - _rms_db(s)) / 20.0))
    peak = max(float(np.max(np.abs(x))) for x in scaled + [sum(scaled)])
    gain = min(1.0, MAX_PEAK / peak) if peak > 0 else 1.0
    quantized = [_to_int16(s * gain) for s in scaled]
    mixture = np.sum([q.astype(np.int32) for q in quantized], axis=0)
    return mixture.astype(np.int16), quantized, gain


# ------------------------------------------------------------------------- dataset


def _make_split(
    *,
    base: str,
    seed: int,
    index: int,
    split_speakers: List[Speaker],
    counts: Dict[str, int],
    sample_rate: int,
    workers: int,
    progress: bool,
) -> float:
    """Synthesize, mix and write one split; its duration in seconds."""
    from tqdm import tqdm

    split, folder, _ = SPLITS[index]
    metadata_dir = os.path.join(base, "metadata")
    os.makedirs(metadata_dir, exist_ok=True)
    total_seconds = 0.0
    pools, mixtures = _plan_split(seed, index, split_speakers, counts[f"num_{split}"])
    with tqdm(
        total=sum(len(p) for p in pools),
        desc=f"synthesize {folder}",
        unit="utt",
        disable=not progress,
    ) as bar:
        audio = _synthesize_pools(pools, sample_rate, workers, bar)
    dirs = {sub: os.path.join(base, folder, sub) for sub in (MIX_DIR, "s1", "s2")}
    for path in dirs.values():
        os.makedirs(path, exist_ok=True)
    rows = []
    for mixture in tqdm(mixtures, desc=f"mix {folder}", unit="mix", disable=not progress):
        (a, ua), (b, ub) = mixture.sources
        mix, (s1, s2), gain = _mix((audio[a][ua], audio[b][ub]), mixture.levels_db)
        for sub, signal in ((MIX_DIR, mix), ("s1", s1), ("s2", s2)):
            _write_wav(os.path.join(dirs[sub], mixture.id + ".wav"), signal, sample_rate)
        total_seconds += len(mix) / sample_rate
        row = {"mixture_ID": mixture.id, "length": len(mix)}
        for n, (spk, utt) in enumerate(((a, ua), (b, ub)), start=1):
            speaker = split_speakers[spk]
            request = pools[spk][utt]
            row.update(
                {
                    f"s{n}_speaker": speaker.id,
                    f"s{n}_voice": speaker.voice,
                    f"s{n}_pitch": speaker.pitch,
                    f"s{n}_pitch_range": speaker.pitch_range,
                    f"s{n}_rate": speaker.rate,
                    f"s{n}_level_db": round(mixture.levels_db[n - 1] + 20 * math.log10(gain), 2),
                    f"s{n}_text": request["text"],
                }
            )
        rows.append(row)
    del audio
    with open(os.path.join(metadata_dir, f"{folder}.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return total_seconds


def _options(**kwargs: Any) -> Dict[str, Any]:
    return {"generator": "speechbrain_s4m.data.synthetic", "version": VERSION, **kwargs}


def _dataset_folder(root: str, sample_rate: int) -> str:
    return os.path.join(root, "Libri2Mix", f"wav{sample_rate // 1000}k", "min")


def _is_complete(root: str, options: Dict[str, Any]) -> bool:
    base = _dataset_folder(root, options["sample_rate"])
    for split, folder, _ in SPLITS:
        for sub in (MIX_DIR, "s1", "s2"):
            path = os.path.join(base, folder, sub)
            if not os.path.isdir(path):
                return False
            count = sum(1 for name in os.listdir(path) if name.endswith(".wav"))
            if count != options[f"num_{split}"]:
                return False
    return True


def _check_positive(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"synthetic: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"synthetic: {name} must be >= {minimum}, got {value}")
    return int(value)


def make_synthetic_librimix(
    root: str,
    num_train: int = DEFAULTS["num_train"],
    num_dev: int = DEFAULTS["num_dev"],
    num_test: int = DEFAULTS["num_test"],
    num_speakers: int = DEFAULTS["num_speakers"],
    num_dev_speakers: int = DEFAULTS["num_dev_speakers"],
    num_test_speakers: int = DEFAULTS["num_test_speakers"],
    sample_rate: int = DEFAULTS["sample_rate"],
    seed: int = DEFAULTS["seed"],
    force: bool = False,
    progress: bool = True,
    workers: Optional[int] = None,
) -> str:
    """Make (or reuse) a synthetic Libri2Mix-layout dataset under ``root``.

    Arguments
    ---------
    root : str
        The dataset root, the recipe's ``data_folder`` (created if needed).
    num_train, num_dev, num_test : int
        Mixtures in ``train-100``, ``dev`` and ``test``.
    num_speakers, num_dev_speakers, num_test_speakers : int
        Speakers of each split (at least 2; at most twice the split's mixtures are
        used).
    sample_rate : int
        8000 (``wav8k``) or 16000 (``wav16k``).
    seed : int
        Everything random derives from it.
    force : bool
        Replace ``<root>/Libri2Mix`` if it holds anything other than this dataset.
    progress : bool
        Show progress bars and say what is done.
    workers : int, optional
        Parallel synthesis workers (default: the CPU count, at most 8). Does not
        change the data.

    Returns
    -------
    str
        ``root``, absolute: the ``data_folder`` for ``prepare_librimix`` and the recipe.

    Example
    -------
    >>> make_synthetic_librimix("/tmp/x", sample_rate=44100)
    Traceback (most recent call last):
      ...
    ValueError: synthetic: sample_rate must be 8000 or 16000, got 44100
    """
    if sample_rate not in (8000, 16000):
        raise ValueError(f"synthetic: sample_rate must be 8000 or 16000, got {sample_rate}")
    counts = {
        "num_train": _check_positive("num_train", num_train),
        "num_dev": _check_positive("num_dev", num_dev),
        "num_test": _check_positive("num_test", num_test),
    }
    speaker_counts = {
        "num_speakers": _check_positive("num_speakers", num_speakers, 2),
        "num_dev_speakers": _check_positive("num_dev_speakers", num_dev_speakers, 2),
        "num_test_speakers": _check_positive("num_test_speakers", num_test_speakers, 2),
    }
    seed = _check_positive("seed", seed, 0)
    options = _options(**counts, **speaker_counts, sample_rate=int(sample_rate), seed=seed, mode="min")
    root = os.path.abspath(os.fspath(root))
    say = (lambda message: print(message, file=sys.stderr)) if progress else (lambda m: None)
    stamp = OptionsStamp(root, STAMP_KIND, options)
    dataset = os.path.join(root, "Libri2Mix")
    if stamp.matches() and _is_complete(root, options):
        say(f"synthetic: reusing the dataset in {root} (same options, {os.path.basename(stamp.path)})")
        return root
    if os.path.exists(dataset):
        stamp.refuse_overwrite(dataset, "synthetic", force)
        say(f"synthetic: removing {dataset} (force)")
        shutil.rmtree(dataset)
    stamp.clear()

    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    start = time.time()
    speakers = make_speakers(
        seed,
        [
            min(speaker_counts[k], 2 * counts[n])
            for k, n in (
                ("num_speakers", "num_train"),
                ("num_dev_speakers", "num_dev"),
                ("num_test_speakers", "num_test"),
            )
        ],
    )
    base = _dataset_folder(root, sample_rate)
    total_seconds = sum(
        _make_split(
            base=base,
            seed=seed,
            index=index,
            split_speakers=speakers[index],
            counts=counts,
            sample_rate=sample_rate,
            workers=workers,
            progress=progress,
        )
        for index in range(len(SPLITS))
    )

    try:
        from importlib.metadata import version

        loader_version = version("espeakng-loader")
    except Exception:  # noqa: BLE001 - informative only
        loader_version = "unknown"
    stamp.write(
        info={
            "layout": "Libri2Mix",
            "data_folder": root,
            "espeakng_loader": loader_version,
            "hours": round(total_seconds / 3600.0, 3),
            "seconds_to_make": round(time.time() - start, 1),
        }
    )
    say(
        f"synthetic: wrote {sum(counts.values())} mixtures "
        f"({total_seconds / 3600.0:.2f} h) to {base} in {time.time() - start:.0f} s"
    )
    return root


# ------------------------------------------------------------------------- CLI


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: ``s4m-make-data --out DIR [options]`` (``--help`` lists them).

    Example
    -------
    >>> main(["--out", "/tmp/x", "--sample-rate", "44100"])
    Traceback (most recent call last):
      ...
    SystemExit: 2
    """
    parser = command_parser(
        prog="s4m-make-data",
        description=(
            "Make a synthetic two-speaker dataset (espeak-ng speech) in the Libri2Mix "
            "layout, for recipes/LibriMix/separation/train.py --data_folder=OUT. "
            "Reuses OUT when it was made with the same options."
        ),
    )
    parser.add_argument("--out", required=True, help="dataset root (the data_folder)")
    parser.add_argument("--num-train", type=int, default=DEFAULTS["num_train"])
    parser.add_argument("--num-dev", type=int, default=DEFAULTS["num_dev"])
    parser.add_argument("--num-test", type=int, default=DEFAULTS["num_test"])
    parser.add_argument(
        "--num-speakers",
        type=int,
        default=DEFAULTS["num_speakers"],
        help="training speakers (default: %(default)s)",
    )
    parser.add_argument("--num-dev-speakers", type=int, default=DEFAULTS["num_dev_speakers"])
    parser.add_argument("--num-test-speakers", type=int, default=DEFAULTS["num_test_speakers"])
    parser.add_argument("--sample-rate", type=int, choices=(8000, 16000), default=DEFAULTS["sample_rate"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--force", action="store_true", help="replace OUT/Libri2Mix if it differs")
    parser.add_argument("--workers", type=int, default=None, help="synthesis processes (same data)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        root = make_synthetic_librimix(
            args.out,
            num_train=args.num_train,
            num_dev=args.num_dev,
            num_test=args.num_test,
            num_speakers=args.num_speakers,
            num_dev_speakers=args.num_dev_speakers,
            num_test_speakers=args.num_test_speakers,
            sample_rate=args.sample_rate,
            seed=args.seed,
            force=args.force,
            progress=not args.quiet,
            workers=args.workers,
        )
    except (FileExistsError, ValueError, TypeError, espeak.EspeakError) as error:
        return usage_error("s4m-make-data", error)
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
