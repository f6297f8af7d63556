"""CSV manifests for the speech-separation datasets: WSJ0-2/3Mix, Libri2/3Mix, LRS2-2Mix.

Each ``prepare_*`` function checks the dataset folder, then writes
``<save_folder>/{train,valid,test}.csv`` in SpeechBrain's CSV format::

    ID,duration,mix_wav,s1_wav,s2_wav[,s3_wav][,noise_wav]

one row per mixture, sorted by ``ID`` (the mixture's file name without ``.wav``), with
absolute paths and ``duration`` in seconds (read from the file headers). Sources are
matched to mixtures by file name.

It also writes ``<save_folder>/preparation_options.json`` (dataset, resolved data
folder and options; :class:`~speechbrain_s4m.data.options_stamp.OptionsStamp`). A later
call with the same options and all three CSVs present does nothing; a call with other
options writes the CSVs again.

Layouts (``<sr>`` is ``wav8k`` or ``wav16k``, ``<mode>`` is ``min`` or ``max``):

* WSJ0-2Mix / 3Mix: ``<data_folder>/<sr>/<mode>/{tr,cv,tt}/{mix,s1,s2[,s3]}/*.wav``
  (``data_folder`` may also be the folder holding ``2speakers/`` or ``3speakers/``).
* Libri2Mix / 3Mix: ``<data_folder>/Libri2Mix/<sr>/<mode>/{train-100|train-360,dev,test}/
  {mix_clean|mix_both,s1,s2[,s3][,noise]}/*.wav`` (``data_folder`` may also be the
  ``Libri2Mix`` folder itself).
* LRS2-2Mix (16 kHz): ``<data_folder>/{tr,cv,tt}/{mix,s1,s2}/*.wav``.

Authors
 * speechbrain-s4m contributors
"""

import csv
import inspect
import logging
import os
from typing import Any, Callable, Dict, List, Sequence, Tuple

from speechbrain_s4m.data.audio import audio_info
from speechbrain_s4m.data.options_stamp import OptionsStamp

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
STAMP_KIND = "preparation"  # <save_folder>/preparation_options.json


# ----------------------------------------------------------------------------- helpers


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def _check_data_folder(data_folder: str) -> str:
    if not isinstance(data_folder, (str, os.PathLike)) or not os.fspath(data_folder):
        raise ValueError(f"data_folder: expected a folder path, got {data_folder!r}")
    folder = os.path.abspath(os.fspath(data_folder))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"data_folder not found: {folder} (no such folder)")
    return folder


def _csv_paths(save_folder: str) -> Dict[str, str]:
    return {split: os.path.join(save_folder, f"{split}.csv") for split in SPLITS}


def _wav_files(folder: str) -> Dict[str, str]:
    """``{stem: absolute path}`` of the ``.wav`` files directly in ``folder``."""
    return {
        name[: -len(".wav")]: os.path.join(folder, name)
        for name in os.listdir(folder)
        if name.lower().endswith(".wav") and os.path.isfile(os.path.join(folder, name))
    }


def _split_rows(
    split_folder: str,
    mix_dir: str,
    source_dirs: List[Tuple[str, str]],
    sample_rate: int,
) -> List[Dict[str, str]]:
    """Rows for one split: each mixture in ``split_folder/mix_dir`` with its sources.

    ``source_dirs`` lists ``(csv column, sub-folder)`` pairs.
    """
    mix_folder = os.path.join(split_folder, mix_dir)
    mixtures = _wav_files(mix_folder)
    if not mixtures:
        raise FileNotFoundError(f"No mixtures in {mix_folder}: expected .wav files there, found none")
    ids = sorted(mixtures)
    first = audio_info(mixtures[ids[0]])
    if first.sample_rate != sample_rate:
        raise ValueError(
            f"{first.path} has a sample rate of {first.sample_rate} Hz, expected "
            f"{sample_rate} Hz (sample_rate={sample_rate}); check the sample_rate option "
            "and that data_folder holds the matching wav8k/wav16k folder"
        )
    rows = []
    for utt_id in ids:
        row = {"ID": utt_id, "duration": repr(audio_info(mixtures[utt_id]).duration)}
        row["mix_wav"] = mixtures[utt_id]
        for column, sub in source_dirs:
            path = os.path.join(split_folder, sub, utt_id + ".wav")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Source file missing for mixture {mixtures[utt_id]}: expected {path}")
            row[column] = path
        rows.append(row)
    return rows


def _prepare(
    *,
    dataset: str,
    data_folder: str,
    save_folder: str,
    options: Dict[str, Any],
    split_folders: Dict[str, str],
    mix_dir: str,
    source_dirs: List[Tuple[str, str]],
    sample_rate: int,
    pattern: str,
) -> Dict[str, str]:
    """Common part: skip check, layout check, scan, then write CSVs and options."""
    save_folder = os.path.abspath(os.fspath(save_folder))
    csv_paths = _csv_paths(save_folder)
    stamp = OptionsStamp(save_folder, STAMP_KIND, {"dataset": dataset, "data_folder": data_folder, **options})
    if stamp.matches() and all(map(os.path.isfile, csv_paths.values())):
        logger.info("%s: already prepared in %s, skipping", dataset, save_folder)
        return csv_paths

    # Check the layout as a whole first, so that one error names every missing folder.
    needed = [mix_dir] + [sub for _, sub in source_dirs]
    missing = [
        os.path.join(split_folder, sub)
        for split_folder in split_folders.values()
        for sub in needed
        if not os.path.isdir(os.path.join(split_folder, sub))
    ]
    if missing:
        raise FileNotFoundError(
            f"{dataset}: data_folder {data_folder} does not have the expected layout "
            f"{pattern}; missing folders:\n  " + "\n  ".join(missing)
        )

    rows = {split: _split_rows(split_folders[split], mix_dir, source_dirs, sample_rate) for split in SPLITS}

    os.makedirs(save_folder, exist_ok=True)
    stamp.clear()  # stale until all CSVs are rewritten
    columns = ["ID", "duration", "mix_wav"] + [column for column, _ in source_dirs]
    for split in SPLITS:
        tmp_path = csv_paths[split] + ".tmp"
        with open(tmp_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows[split])
        os.replace(tmp_path, csv_paths[split])
        logger.info("%s: wrote %d rows to %s", dataset, len(rows[split]), csv_paths[split])
    stamp.write()
    return csv_paths


def _source_dirs(num_spks: int) -> List[Tuple[str, str]]:
    return [(f"s{i + 1}_wav", f"s{i + 1}") for i in range(num_spks)]


# ------------------------------------------------------------------------ public API


def prepare_wsj0mix(
    data_folder: str,
    save_folder: str,
    sample_rate: int = 8000,
    mode: str = "min",
    num_spks: int = 2,
) -> Dict[str, str]:
    """Write the CSV manifests of WSJ0-2Mix or WSJ0-3Mix.

    Arguments
    ---------
    data_folder : str
        The folder holding ``wav8k/`` and/or ``wav16k/`` (e.g. ``.../2speakers``), or
        the folder holding ``2speakers/`` / ``3speakers/``.
    save_folder : str
        Where ``{train,valid,test}.csv`` are written (created if needed).
    sample_rate : int
        8000 (``wav8k``) or 16000 (``wav16k``).
    mode : str
        ``"min"`` or ``"max"``.
    num_spks : int
        2 or 3.

    Returns
    -------
    dict
        ``{"train": path, "valid": path, "test": path}``; the splits are ``tr``,
        ``cv`` and ``tt``.

    Example
    -------
    >>> prepare_wsj0mix("/no/such/folder", "/tmp/save")
    Traceback (most recent call last):
      ...
    FileNotFoundError: data_folder not found: /no/such/folder (no such folder)
    """
    _check_choice("sample_rate", sample_rate, (8000, 16000))
    _check_choice("mode", mode, ("min", "max"))
    _check_choice("num_spks", num_spks, (2, 3))
    folder = _check_data_folder(data_folder)
    rate_dir = f"wav{sample_rate // 1000}k"
    if not os.path.isdir(os.path.join(folder, rate_dir)):
        child = os.path.join(folder, f"{num_spks}speakers")
        if os.path.isdir(os.path.join(child, rate_dir)):
            folder = child
    base = os.path.join(folder, rate_dir, mode)
    sources = _source_dirs(num_spks)
    spk_names = ",".join(sub for _, sub in sources)
    return _prepare(
        dataset="wsj0mix",
        data_folder=folder,
        save_folder=save_folder,
        options={"sample_rate": sample_rate, "mode": mode, "num_spks": num_spks},
        split_folders={split: os.path.join(base, sub) for split, sub in zip(SPLITS, ("tr", "cv", "tt"))},
        mix_dir="mix",
        source_dirs=sources,
        sample_rate=sample_rate,
        pattern=f"{os.path.join(folder, rate_dir, mode)}/{{tr,cv,tt}}/{{mix,{spk_names}}}/*.wav",
    )


def prepare_librimix(
    data_folder: str,
    save_folder: str,
    sample_rate: int = 8000,
    mode: str = "min",
    num_spks: int = 2,
    train_subset: str = "train-100",
    mixture_type: str = "mix_clean",
) -> Dict[str, str]:
    """Write the CSV manifests of Libri2Mix or Libri3Mix.

    Arguments
    ---------
    data_folder : str
        The folder holding ``Libri2Mix/`` (or ``Libri3Mix/``), or that folder itself.
    save_folder : str
        Where ``{train,valid,test}.csv`` are written (created if needed).
    sample_rate : int
        8000 (``wav8k``) or 16000 (``wav16k``).
    mode : str
        ``"min"`` or ``"max"``.
    num_spks : int
        2 or 3.
    train_subset : str
        ``"train-100"`` or ``"train-360"``; valid is ``dev``, test is ``test``.
    mixture_type : str
        ``"mix_clean"`` (speech only) or ``"mix_both"`` (speech + noise; the CSVs
        then also have a ``noise_wav`` column, from the ``noise`` folder).

    Returns
    -------
    dict
        ``{"train": path, "valid": path, "test": path}``.

    Example
    -------
    >>> prepare_librimix("/no/such/folder", "/tmp/save", mixture_type="mix_single")
    Traceback (most recent call last):
      ...
    ValueError: mixture_type: expected one of 'mix_clean', 'mix_both', got 'mix_single'
    """
    _check_choice("sample_rate", sample_rate, (8000, 16000))
    _check_choice("mode", mode, ("min", "max"))
    _check_choice("num_spks", num_spks, (2, 3))
    _check_choice("train_subset", train_subset, ("train-100", "train-360"))
    _check_choice("mixture_type", mixture_type, ("mix_clean", "mix_both"))
    folder = _check_data_folder(data_folder)
    mix_name = f"Libri{num_spks}Mix"
    rate_dir = f"wav{sample_rate // 1000}k"
    if os.path.isdir(os.path.join(folder, mix_name)):
        folder = os.path.join(folder, mix_name)
    elif os.path.basename(folder) != mix_name and not os.path.isdir(os.path.join(folder, rate_dir)):
        raise FileNotFoundError(
            f"librimix: data_folder {folder} holds neither a {mix_name} folder nor a "
            f"{rate_dir} folder; expected {os.path.join(folder, mix_name, rate_dir)} "
            f"(data_folder may be the folder holding {mix_name}/ or {mix_name}/ itself)"
        )
    base = os.path.join(folder, rate_dir, mode)
    sources = _source_dirs(num_spks)
    if mixture_type == "mix_both":
        sources.append(("noise_wav", "noise"))
    subs = ",".join([mixture_type] + [sub for _, sub in sources])
    return _prepare(
        dataset="librimix",
        data_folder=folder,
        save_folder=save_folder,
        options={
            "sample_rate": sample_rate,
            "mode": mode,
            "num_spks": num_spks,
            "train_subset": train_subset,
            "mixture_type": mixture_type,
        },
        split_folders={split: os.path.join(base, sub) for split, sub in zip(SPLITS, (train_subset, "dev", "test"))},
        mix_dir=mixture_type,
        source_dirs=sources,
        sample_rate=sample_rate,
        pattern=f"{base}/{{{train_subset},dev,test}}/{{{subs}}}/*.wav",
    )


def prepare_lrs2mix(data_folder: str, save_folder: str, num_spks: int = 2) -> Dict[str, str]:
    """Write the CSV manifests of LRS2-2Mix (16 kHz).

    Arguments
    ---------
    data_folder : str
        The folder holding ``tr/``, ``cv/`` and ``tt/``.
    save_folder : str
        Where ``{train,valid,test}.csv`` are written (created if needed).
    num_spks : int
        2 (or 3 for a 3-speaker set in the same layout).

    Returns
    -------
    dict
        ``{"train": path, "valid": path, "test": path}``.

    Example
    -------
    >>> prepare_lrs2mix("/tmp", "/tmp/save", num_spks=1)
    Traceback (most recent call last):
      ...
    ValueError: num_spks: expected one of 2, 3, got 1
    """
    _check_choice("num_spks", num_spks, (2, 3))
    folder = _check_data_folder(data_folder)
    sources = _source_dirs(num_spks)
    spk_names = ",".join(sub for _, sub in sources)
    return _prepare(
        dataset="lrs2mix",
        data_folder=folder,
        save_folder=save_folder,
        options={"num_spks": num_spks},
        split_folders={split: os.path.join(folder, sub) for split, sub in zip(SPLITS, ("tr", "cv", "tt"))},
        mix_dir="mix",
        source_dirs=sources,
        sample_rate=16000,
        pattern=f"{folder}/{{tr,cv,tt}}/{{mix,{spk_names}}}/*.wav",
    )


PREPARERS: Dict[str, Callable[..., Dict[str, str]]] = {
    "wsj0mix": prepare_wsj0mix,
    "librimix": prepare_librimix,
    "lrs2mix": prepare_lrs2mix,
}


def prepare_separation_data(dataset: str, data_folder: str, save_folder: str, **options: Any) -> Dict[str, str]:
    """Prepare any supported dataset by name.

    Arguments
    ---------
    dataset : str
        ``"wsj0mix"``, ``"librimix"`` or ``"lrs2mix"``.
    data_folder : str
        The dataset folder (see the ``prepare_*`` function of that dataset).
    save_folder : str
        Where the CSVs are written.
    **options
        The options of that dataset's ``prepare_*`` function.

    Returns
    -------
    dict
        ``{"train": path, "valid": path, "test": path}``.

    Example
    -------
    >>> prepare_separation_data("wsj0mix", "/tmp", "/tmp/save", train_subset="train-360")
    Traceback (most recent call last):
      ...
    ValueError: wsj0mix: unknown option 'train_subset'; expected some of sample_rate, mode, num_spks
    """
    if dataset not in PREPARERS:
        raise ValueError(f"dataset: expected one of {', '.join(repr(d) for d in PREPARERS)}, got {dataset!r}")
    prepare = PREPARERS[dataset]
    accepted = [name for name in inspect.signature(prepare).parameters if name not in ("data_folder", "save_folder")]
    unknown = [name for name in options if name not in accepted]
    if unknown:
        raise ValueError(
            f"{dataset}: unknown option {', '.join(repr(u) for u in unknown)}; expected some of {', '.join(accepted)}"
        )
    return prepare(data_folder, save_folder, **options)
