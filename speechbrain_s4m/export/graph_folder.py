"""Writing a folder of exported graphs, each checked against PyTorch first: what
``s4m-export-onnx`` (ONNX graphs) and ``s4m-compile`` (AOTInductor packages) share.

Every graph is written into a staging folder beside the output folder, run there on a
check signal by its own runner and compared with the PyTorch model it came from
(:func:`compare`). Only when all of them match within :data:`PEAK_TOLERANCE` of the
peak and :data:`SI_SNR_FLOOR_DB` are the files and the folder's metadata moved into
place; otherwise nothing is written and the largest difference is named. Files of an
earlier export that this one does not write are removed after the new metadata is in
place (a non-causal model's graphs replacing a causal one's); other files stay.

Legend: ``C`` speakers.

Authors
 * speechbrain-s4m contributors
"""

import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch

from speechbrain_s4m.metrics import si_snr

PEAK_TOLERANCE = 1e-4  # largest |graph - torch| over the peak |torch|
# SI-SNR of the graph's sources against PyTorch's: at 80 dB the difference e is below
# 1e-4 of the signal, so a separation of up to 20 dB SI-SNR against any reference (a
# residual of at least 0.1 of the signal) moves by under 20 log10(1 + 1e-3) < 0.01 dB.
SI_SNR_FLOOR_DB = 80.0
CHECK_SECONDS = 7.3
SHORT_CHECK_SECONDS = 0.37  # a separator is also checked on a batch of two excerpts this long

Tracer = Callable[[str], Dict[str, object]]  # writes a graph into a folder; its metadata
ParityCheck = Callable[[str], Dict[str, float]]  # runs the folder's graph; compare()'s figures


class ParityError(ValueError):
    """An exported graph differs from PyTorch: nothing was written."""


@dataclass(frozen=True)
class FolderFormat:
    """What identifies one kind of graph folder.

    Attributes
    ----------
    metadata_file : str
        The JSON file the runners read (``onnx_model.json``, ``compiled_model.json``).
    header : dict
        Entries written at the top of it (its ``format``, the opset, the build stamp).
    graph_files : tuple of str
        Every graph file this kind of folder can hold, as ``fnmatch`` patterns: those
        an export does not write again are removed.
    staging_prefix : str
        The name prefix of the staging folder.
    """

    metadata_file: str
    header: Mapping[str, object]
    graph_files: Tuple[str, ...] = field(default_factory=tuple)
    staging_prefix: str = ".export-"


def compare(got: np.ndarray, expected: np.ndarray) -> Dict[str, float]:
    """The parity figures of two separations ``[time, C]``: the largest difference
    over the peak, and the lowest SI-SNR (dB) of a source of ``got`` with its PyTorch
    source (``expected``) as the reference.

    Example
    -------
    >>> x = np.random.default_rng(0).standard_normal((100, 2)).astype(np.float32)
    >>> compare(x, x)["max_difference_over_peak"]
    0.0
    """
    if got.shape != expected.shape:
        raise ValueError(f"parity: exported output {got.shape} against PyTorch output {expected.shape}")
    peak = float(np.abs(expected).max()) or 1.0
    worst = float(si_snr(torch.from_numpy(got)[None], torch.from_numpy(expected)[None]).min())
    return {"max_difference_over_peak": float(np.abs(got - expected).max()) / peak, "min_si_snr_db": worst}


def worst(figures: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """The worst of several :func:`compare` figures."""
    return {
        "max_difference_over_peak": max(f["max_difference_over_peak"] for f in figures),
        "min_si_snr_db": min(f["min_si_snr_db"] for f in figures),
    }


def check_signal(sample_rate: int, seconds: float = CHECK_SECONDS, seed: int = 0) -> np.ndarray:
    """A deterministic check mixture: two amplitude-modulated noise bands, float32.

    Example
    -------
    >>> check_signal(8000, seconds=0.5).shape
    (4000,)
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    low = np.convolve(rng.standard_normal(t.size), np.ones(8) / 8, mode="same") * (1 + np.sin(2 * np.pi * 3 * t))
    high = np.diff(rng.standard_normal(t.size + 1)) * (1 + np.cos(2 * np.pi * 5 * t))
    return (0.3 * (low + high)).astype(np.float32)


def write_graphs(
    out_dir: str,
    folder_format: FolderFormat,
    metadata: Mapping[str, object],
    graphs: Dict[str, Tuple[Tracer, ParityCheck]],
) -> Dict[str, Dict[str, float]]:
    """Trace every graph of ``graphs`` (its section name -> a function writing the file
    into a folder and returning its metadata, and the parity check run on that folder)
    into a staging folder beside ``out_dir``, check each against PyTorch and, when
    all pass, move the files and the metadata (``folder_format``'s header, then
    ``metadata``, then a section per graph with its ``parity``) into ``out_dir``.
    Returns each graph's parity figures.

    Raises
    ------
    ParityError
        When a parity check fails; ``out_dir`` is then left as it was.
    """
    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    staging = tempfile.mkdtemp(prefix=folder_format.staging_prefix, dir=parent)
    try:
        written: Dict[str, object] = {**folder_format.header, **metadata}
        for name, (trace, _) in graphs.items():
            written[name] = trace(staging)
        _write_json(staging, folder_format.metadata_file, written)  # the runners read it during the checks
        figures = {}
        for name, (_, check) in graphs.items():
            figures[name] = check(staging)
            failed = (
                figures[name]["max_difference_over_peak"] > PEAK_TOLERANCE
                or figures[name]["min_si_snr_db"] < SI_SNR_FLOOR_DB
            )
            if failed:
                raise ParityError(
                    f"the exported {written[name]['file']} differs from PyTorch: largest difference "
                    f"{figures[name]['max_difference_over_peak']:.3g} of the peak (at most {PEAK_TOLERANCE:g}), "
                    f"SI-SNR against PyTorch {figures[name]['min_si_snr_db']:.1f} dB (at least "
                    f"{SI_SNR_FLOOR_DB:g}); nothing was written to {out_dir}"
                )
            written[name]["parity"] = figures[name]
        _write_json(staging, folder_format.metadata_file, written)
        os.makedirs(out_dir, exist_ok=True)
        files = [written[graph]["file"] for graph in graphs]
        for name in files + [folder_format.metadata_file]:
            os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
        for name in existing_files(out_dir, folder_format):  # after the new metadata, which no longer names them
            if name not in files and name != folder_format.metadata_file:
                os.remove(os.path.join(out_dir, name))
        return figures
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def existing_files(out_dir: str, folder_format: FolderFormat) -> List[str]:
    """The files of ``folder_format`` already in ``out_dir`` (an export refuses to
    replace them without ``--force``), sorted."""
    if not os.path.isdir(out_dir):
        return []
    patterns = (*folder_format.graph_files, folder_format.metadata_file)
    return sorted(name for name in os.listdir(out_dir) if any(fnmatch.fnmatchcase(name, p) for p in patterns))


def refuse_to_replace(out_dir: str, folder_format: FolderFormat, force: bool) -> None:
    """``FileExistsError`` naming the files of ``folder_format`` already in ``out_dir``,
    unless ``force``: an export keeps what a user has."""
    existing = existing_files(out_dir, folder_format)
    if existing and not force:
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}; pass --force to replace them")


def offline_parity(runner, model: Callable[[torch.Tensor], torch.Tensor], mix: np.ndarray) -> Dict[str, float]:
    """An exported separator (``runner.separate_batch``: numpy ``[B, T] -> [B, T, C]``)
    against PyTorch's offline forward ``model``, on a batch of two short excerpts of
    ``mix`` (an odd number of frames) and on the whole of it: the worst figures of
    :func:`compare`."""
    short = min(int(SHORT_CHECK_SECONDS * runner.sample_rate), mix.shape[0] // 2)
    batches = [np.stack([mix[:short], mix[short : 2 * short]]), mix[None]]
    figures = []
    for batch in batches:
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        got = runner.separate_batch(batch)
        figures += [compare(g, e) for g, e in zip(got, expected)]
    return worst(figures)


def torch_stream(streaming, mix: np.ndarray, chunk: int) -> np.ndarray:
    """``mix [time]`` through PyTorch's stream (a
    :class:`~speechbrain_s4m.inference.streaming.StreamingSeparator`) in chunks of ``chunk``
    samples."""
    streaming.reset()
    parts = [streaming.process(mix[i : i + chunk]) for i in range(0, mix.shape[0], chunk)]
    return torch.cat(parts + [streaming.flush()]).numpy()


def stream_parity(runner, streaming, mix: np.ndarray) -> Dict[str, float]:
    """Stream ``mix`` through ``runner`` (an exported step, a
    :class:`~speechbrain_s4m.inference.fixed_step_stream.FixedStepStream`), a step at a time, and
    through PyTorch's stream in chunks of one second (a stream's output does not
    depend on its chunks); the figures of :func:`compare`."""
    hop = runner.hop_samples
    parts = [runner.process(mix[i : i + hop]) for i in range(0, mix.shape[0], hop)]
    return compare(np.concatenate(parts + [runner.flush()]), torch_stream(streaming, mix, runner.sample_rate))


def _write_json(directory: str, name: str, metadata: Mapping[str, object]) -> None:
    with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)
