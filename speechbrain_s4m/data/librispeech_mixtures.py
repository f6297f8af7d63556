"""Build a fixed Libri2Mix-style dataset from any LibriSpeech folder: ``s4m-make-librimix``.

Speakers are split by gender-balanced hold-out: test speakers (half female, half
male), validation speakers, and the rest for training. Fixed mixtures are written in
the Libri2Mix layout (8 kHz by default, "min" mode, each source at a random level in
[-33, -25] dBFS), so the LibriMix recipe reads them unchanged; the training speakers
are listed in ``train_speakers.txt`` for dynamic mixing (``--dm_speakers_file``).
The same seed always gives the same set. The mixtures are drawn exactly as dynamic
mixing draws them (:class:`~speechbrain_s4m.data.dynamic_mixing.DynamicMixingDataset`).

Example, on the Mini LibriSpeech copy beside the project::

    s4m-make-librimix ../shared/data/mini-librispeech-8k/train-clean-5 data/minilibrimix \\
        --num-test 300 --num-valid 100

Authors
 * speechbrain-s4m contributors
"""

import json
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speechbrain_s4m.cli import command_parser, usage_error
from speechbrain_s4m.data.dynamic_mixing import DynamicMixingDataset
from speechbrain_s4m.data.options_stamp import OptionsStamp

SPLIT_FOLDERS = {"train": "train-100", "valid": "dev", "test": "test"}
STAMP_KIND = "librimix"  # <out_folder>/librimix_options.json


def read_genders(librispeech_folder: str) -> Dict[str, str]:
    """``{speaker: "F" or "M"}`` from the ``SPEAKERS.TXT`` in or above the folder."""
    for folder in (librispeech_folder, os.path.dirname(os.path.abspath(librispeech_folder))):
        path = os.path.join(folder, "SPEAKERS.TXT")
        if os.path.isfile(path):
            genders = {}
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.startswith(";") or "|" not in line:
                        continue
                    fields = [field.strip() for field in line.split("|")]
                    genders[fields[0]] = fields[1]
            return genders
    raise FileNotFoundError(
        f"No SPEAKERS.TXT in {librispeech_folder} or its parent: expected LibriSpeech's "
        "speaker list (ID | SEX | SUBSET | MINUTES | NAME) to balance genders"
    )


def split_speakers(
    speakers: Sequence[str], genders: Dict[str, str], num_test: int, num_valid: int, seed: int
) -> Dict[str, List[str]]:
    """Hold out ``num_test`` then ``num_valid`` speakers, alternating genders (F, M,
    F, M, ...) in a seeded random order; the others are for training.

    Example
    -------
    >>> genders = {"1": "F", "2": "F", "3": "M", "4": "M", "5": "F", "6": "M", "7": "F"}
    >>> splits = split_speakers(sorted(genders), genders, num_test=2, num_valid=2, seed=0)
    >>> [sorted(genders[s] for s in splits[k]) for k in ("test", "valid")]
    [['F', 'M'], ['F', 'M']]
    >>> len(splits["train"])
    3
    """
    rng = np.random.default_rng(seed)
    pools = {}
    for gender in ("F", "M"):
        pool = sorted(s for s in speakers if genders.get(s) == gender)
        pools[gender] = [pool[i] for i in rng.permutation(len(pool))]
    held_out: Dict[str, List[str]] = {"test": [], "valid": []}
    for split, count in (("test", num_test), ("valid", num_valid)):
        for i in range(count):
            gender = "FM"[i % 2]
            if not pools[gender]:
                raise ValueError(
                    f"Not enough {gender} speakers to hold out {num_test} test and {num_valid} validation speakers"
                )
            held_out[split].append(pools[gender].pop())
    taken = set(held_out["test"]) | set(held_out["valid"])
    train = sorted(s for s in speakers if s not in taken)
    if len(train) < 2:
        raise ValueError("Fewer than 2 speakers left for training after the hold-out")
    return {"train": train, "valid": sorted(held_out["valid"]), "test": sorted(held_out["test"])}


def make_librimix_from_librispeech(
    librispeech_folder: str,
    out_folder: str,
    *,
    num_train: int = 100,
    num_valid: int = 100,
    num_test: int = 300,
    test_speakers: int = 4,
    valid_speakers: int = 2,
    sample_rate: int = 8000,
    segment_seconds: Optional[float] = None,
    seed: int = 0,
    force: bool = False,
) -> Dict[str, List[str]]:
    """Write the fixed mixtures and the speaker lists; return the speaker split.

    An existing ``out_folder`` made with the same options is reused as it is; one
    made otherwise is only replaced with ``force=True``.
    """
    options = {
        "librispeech_folder": os.path.abspath(librispeech_folder),
        "num_train": num_train,
        "num_valid": num_valid,
        "num_test": num_test,
        "test_speakers": test_speakers,
        "valid_speakers": valid_speakers,
        "sample_rate": sample_rate,
        "segment_seconds": segment_seconds,
        "seed": seed,
    }
    stamp = OptionsStamp(out_folder, STAMP_KIND, options)
    speakers_path = os.path.join(out_folder, "speakers.json")
    if stamp.matches() and os.path.isfile(speakers_path):
        with open(speakers_path, encoding="utf-8") as g:
            return json.load(g)
    if os.path.isdir(out_folder) and os.listdir(out_folder):
        stamp.refuse_overwrite(out_folder, "s4m-make-librimix", force)

    all_speakers = DynamicMixingDataset(
        librispeech_folder, layout="librispeech", sample_rate=sample_rate, num_examples=1
    ).speakers
    splits = split_speakers(all_speakers, read_genders(librispeech_folder), test_speakers, valid_speakers, seed)
    layout = os.path.join(out_folder, "Libri2Mix", f"wav{sample_rate // 1000}k", "min")
    stamp.clear()  # stale until every file is written
    for index, (split, count) in enumerate((("train", num_train), ("valid", num_valid), ("test", num_test))):
        mixer = DynamicMixingDataset(
            librispeech_folder,
            layout="librispeech",
            sample_rate=sample_rate,
            num_examples=count,
            segment_seconds=segment_seconds,
            seed=seed + 1000 * (index + 1),
            speakers=splits[split],
        )
        folder = os.path.join(layout, SPLIT_FOLDERS[split])
        for sub in ("mix_clean", "s1", "s2"):
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
        for i in tqdm(range(count), desc=f"{split} mixtures", unit="mix"):
            item = mixer[i]
            name = "_".join(os.path.splitext(os.path.basename(f))[0] for f in mixer.plan(i, epoch=0).files)
            for key, sub in (("mix_sig", "mix_clean"), ("s1_sig", "s1"), ("s2_sig", "s2")):
                sf.write(
                    os.path.join(folder, sub, f"{i:04d}_{name}.wav"),
                    item[key].numpy(),
                    sample_rate,
                    subtype="PCM_16",
                )
    with open(speakers_path, "w", encoding="utf-8") as f:
        json.dump(splits, f, indent=2)
    with open(os.path.join(out_folder, "train_speakers.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(splits["train"]) + "\n")
    stamp.write()
    return splits


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``s4m-make-librimix``; returns the exit status."""
    parser = command_parser(prog="s4m-make-librimix", description=__doc__.split("\n\n")[1])
    parser.add_argument("librispeech_folder", help="LibriSpeech folder: <speaker>/<chapter>/<utt>.flac")
    parser.add_argument("out_folder", help="where Libri2Mix/wav8k/min/{train-100,dev,test} is written")
    parser.add_argument("--num-train", type=int, default=100, help="fixed training mixtures (default 100)")
    parser.add_argument("--num-valid", type=int, default=100, help="validation mixtures (default 100)")
    parser.add_argument("--num-test", type=int, default=300, help="test mixtures (default 300)")
    parser.add_argument("--test-speakers", type=int, default=4, help="held-out test speakers (default 4)")
    parser.add_argument("--valid-speakers", type=int, default=2, help="held-out validation speakers (default 2)")
    parser.add_argument("--sample-rate", type=int, default=8000, help="8000 (default) or 16000")
    parser.add_argument(
        "--segment-seconds",
        type=float,
        default=None,
        help="crop every mixture to this length (default: the shorter utterance, as Libri2Mix min)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace an existing dataset made otherwise")
    args = parser.parse_args(argv)
    try:
        splits = make_librimix_from_librispeech(
            args.librispeech_folder,
            args.out_folder,
            num_train=args.num_train,
            num_valid=args.num_valid,
            num_test=args.num_test,
            test_speakers=args.test_speakers,
            valid_speakers=args.valid_speakers,
            sample_rate=args.sample_rate,
            segment_seconds=args.segment_seconds,
            seed=args.seed,
            force=args.force,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        return usage_error("s4m-make-librimix", error)
    print(
        f"test speakers {splits['test']}, validation speakers {splits['valid']}, "
        f"{len(splits['train'])} training speakers (listed in "
        f"{os.path.join(args.out_folder, 'train_speakers.txt')})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
