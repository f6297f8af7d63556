"""Dynamic mixing: a new random mixture for every training example.

:class:`DynamicMixingDataset` draws ``num_spks`` utterances of distinct speakers from a
folder of single-speaker recordings, crops them to a common random-length segment, sets
their levels and sums them, as SpeechBrain's WSJ0Mix and LibriMix recipes do when
``dynamic_mixing`` is on. Its items are dicts with the keys those recipes read from a
batch (``id``, ``mix_sig``, ``s1_sig``, ``s2_sig``, ...), so it can be used with
``collate_fn=speechbrain.dataio.batch.PaddedBatch``.

Authors
 * speechbrain-s4m contributors
"""

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from speechbrain_s4m.data.audio import audio_info, read_segment, resampled_length

AUDIO_EXTENSIONS = (".wav", ".flac")
LAYOUTS = {
    "wsj0": "<folder>/<speaker>/*.wav (e.g. WSJ0's si_tr_s)",
    "librispeech": ("<folder>/<speaker>/<chapter>/<utterance>.flac (e.g. LibriSpeech's train-clean-100)"),
}


@dataclass
class Utterance:
    """One source recording.

    Arguments
    ---------
    path : str
        The audio file.
    speaker : str
        Its speaker (folder name).
    file_rate : int
        The file's sample rate.
    num_samples : int
        Its length at the dataset's sample rate.
    """

    path: str
    speaker: str
    file_rate: int
    num_samples: int


@dataclass
class MixturePlan:
    """What one dynamic-mixing example is made of (everything random about it).

    Arguments
    ---------
    speakers : list of str
        The speakers, one per source, all distinct.
    files : list of str
        The utterance of each source.
    starts : list of int
        Where each source's segment starts in its utterance, in samples at the
        dataset's sample rate.
    length : int
        The segment length in samples.
    levels_db : list of float
        The RMS level (dBFS) each source is set to, before the common rescaling that
        keeps the peak at or below the clipping threshold.
    """

    speakers: List[str]
    files: List[str]
    starts: List[int]
    length: int
    levels_db: List[float]


def rms_db(signal: torch.Tensor, eps: float = 1e-12) -> float:
    """RMS level of a signal in dB relative to full scale (1.0).

    Example
    -------
    >>> round(rms_db(torch.full((100,), 0.1)), 2)
    -20.0
    """
    power = float(signal.double().pow(2).mean()) if signal.numel() else 0.0
    return 10.0 * math.log10(power + eps)


class DynamicMixingDataset(torch.utils.data.Dataset):
    """Random mixtures of single-speaker utterances, new for every item and epoch.

    Item ``index`` of epoch ``e`` depends only on ``(seed, e, index)``, so runs are
    reproducible whatever the number of data-loader workers; call :meth:`set_epoch`
    at the start of each epoch to get new mixtures.

    Each item takes ``num_spks`` distinct speakers (drawn with probability proportional
    to their number of utterances, so that every utterance is about equally likely)
    and one random utterance of each, resampled to ``sample_rate`` if needed. All
    sources are cropped to a random segment of ``segment_seconds`` or, when an
    utterance is shorter, of the shortest utterance's length ("min" mode). Levels:

    * ``layout="librispeech"``: each source is set to an RMS level drawn uniformly
      in ``level_range_db`` (LibriMix: -33 to -25 dBFS).
    * ``layout="wsj0"``: the first source is set to a level drawn in
      ``level_range_db``, each other source to that level plus a relative SNR drawn
      uniformly in ``[-max_relative_snr_db, max_relative_snr_db]`` (WSJ0-2Mix: 2.5 dB).

    The mixture is the sum of the sources; if the mixture or a source peaks above
    ``max_peak``, all of them are scaled down together so that none does. Segments
    that are digital silence keep their level (no gain is applied).

    Arguments
    ---------
    source_folder : str
        The folder of single-speaker utterances.
    layout : str
        ``"wsj0"``: ``<source_folder>/<speaker>/*.wav``;
        ``"librispeech"``: ``<source_folder>/<speaker>/<chapter>/*.flac``
        (``.wav`` and ``.flac`` are accepted in both).
    sample_rate : int
        Sample rate of the items; utterances at other rates are resampled.
    num_spks : int
        Sources per mixture (at least 2).
    num_examples : int
        Items per epoch (``len(dataset)``).
    segment_seconds : float, optional
        Segment length; None uses the whole length of the shortest utterance.
    seed : int
        Non-negative seed.
    speakers : sequence of str, optional
        Only these speakers (e.g. to hold some out for validation); all by default.
    min_seconds : float, optional
        Ignore utterances shorter than this; none are ignored by default.
    level_range_db : tuple of float
        ``(low, high)`` RMS level range in dBFS.
    max_relative_snr_db : float
        Largest relative SNR between speakers for ``layout="wsj0"``.
    max_peak : float
        Clipping threshold for the common rescaling.

    Example
    -------
    >>> import os, tempfile
    >>> import numpy as np, soundfile as sf
    >>> root = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> for spk in ["011", "012", "013"]:
    ...     os.makedirs(os.path.join(root, spk))
    ...     for utt in range(2):
    ...         path = os.path.join(root, spk, f"{spk}c020{utt}.wav")
    ...         sf.write(path, 0.1 * rng.standard_normal(12000), 8000)
    >>> dataset = DynamicMixingDataset(root, layout="wsj0", num_examples=10, segment_seconds=1.0)
    >>> item = dataset[3]
    >>> sorted(item), item["mix_sig"].shape
    (['id', 'mix_sig', 's1_sig', 's2_sig'], torch.Size([8000]))
    >>> torch.equal(item["mix_sig"], item["s1_sig"] + item["s2_sig"])
    True
    """

    def __init__(
        self,
        source_folder: str,
        layout: str = "wsj0",
        sample_rate: int = 8000,
        num_spks: int = 2,
        num_examples: int = 20000,
        segment_seconds: Optional[float] = 4.0,
        seed: int = 1234,
        speakers: Optional[Sequence[str]] = None,
        min_seconds: Optional[float] = None,
        level_range_db: Tuple[float, float] = (-33.0, -25.0),
        max_relative_snr_db: float = 2.5,
        max_peak: float = 0.9,
    ):
        if layout not in LAYOUTS:
            raise ValueError(f"layout: expected one of {', '.join(repr(k) for k in LAYOUTS)}, got {layout!r}")
        if not isinstance(num_spks, int) or num_spks < 2:
            raise ValueError(f"num_spks: expected an integer >= 2, got {num_spks!r}")
        if not isinstance(num_examples, int) or num_examples < 1:
            raise ValueError(f"num_examples: expected an integer >= 1, got {num_examples!r}")
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate: expected a positive integer, got {sample_rate!r}")
        if segment_seconds is not None and not segment_seconds > 0:
            raise ValueError(f"segment_seconds: expected a positive number of seconds or None, got {segment_seconds!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        low, high = (float(v) for v in level_range_db)
        if not low <= high:
            raise ValueError(f"level_range_db: expected (low, high) with low <= high, got {level_range_db!r}")
        if not 0 < max_peak <= 1:
            raise ValueError(f"max_peak: expected a value in (0, 1], got {max_peak!r}")

        self.source_folder = os.path.abspath(os.fspath(source_folder))
        self.layout = layout
        self.sample_rate = sample_rate
        self.num_spks = num_spks
        self.num_examples = num_examples
        self.segment_seconds = segment_seconds
        self.seed = int(seed)
        self.level_range_db = (low, high)
        self.max_relative_snr_db = float(max_relative_snr_db)
        self.max_peak = float(max_peak)
        self.epoch = 0

        self.utterances = self._scan(speakers, min_seconds)
        self.speakers: List[str] = sorted(self.utterances)
        counts = np.array([len(self.utterances[s]) for s in self.speakers], dtype=float)
        self._speaker_weights = counts / counts.sum()

    # ------------------------------------------------------------------------ scan

    def _speaker_files(self, speaker_folder: str) -> List[str]:
        if self.layout == "wsj0":
            folders = [speaker_folder]
        else:
            folders = [
                os.path.join(speaker_folder, name)
                for name in sorted(os.listdir(speaker_folder))
                if os.path.isdir(os.path.join(speaker_folder, name))
            ]
        return [
            os.path.join(folder, name)
            for folder in folders
            for name in sorted(os.listdir(folder))
            if name.lower().endswith(AUDIO_EXTENSIONS) and os.path.isfile(os.path.join(folder, name))
        ]

    def _scan(self, speakers: Optional[Sequence[str]], min_seconds: Optional[float]) -> Dict[str, List[Utterance]]:
        root = self.source_folder
        if not os.path.isdir(root):
            raise FileNotFoundError(
                f"Dynamic-mixing source folder not found: {root} (expected layout {LAYOUTS[self.layout]})"
            )
        names = sorted(name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name)))
        if speakers is not None:
            if isinstance(speakers, str):
                raise ValueError(f"speakers: expected a list of speaker names, got the string {speakers!r}")
            wanted = [str(s) for s in speakers]
            unknown = sorted(set(wanted) - set(names))
            if unknown:
                raise ValueError(
                    f"speakers: {', '.join(unknown)} not found in {root} (expected layout {LAYOUTS[self.layout]})"
                )
            names = sorted(set(wanted))
        min_samples = 1
        if min_seconds is not None:
            min_samples = max(1, int(math.ceil(min_seconds * self.sample_rate)))

        found: Dict[str, List[Utterance]] = {}
        for speaker in names:
            utterances = []
            for path in self._speaker_files(os.path.join(root, speaker)):
                info = audio_info(path)  # names the file if unreadable
                num_samples = resampled_length(info.num_frames, info.sample_rate, self.sample_rate)
                if num_samples >= min_samples:
                    utterances.append(Utterance(path, speaker, info.sample_rate, num_samples))
            if utterances:
                found[speaker] = utterances
        if len(found) < self.num_spks:
            which = "the selected speakers" if speakers is not None else "speaker folders"
            raise ValueError(
                f"{root}: found {len(found)} speaker(s) with audio among {which}, "
                f"need at least num_spks={self.num_spks}; expected layout="
                f"{self.layout!r}: {LAYOUTS[self.layout]}"
                + (f", utterances of at least {min_seconds} s" if min_seconds else "")
            )
        return found

    # ----------------------------------------------------------------------- items

    def __len__(self) -> int:
        return self.num_examples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose mixtures the items are (new mixtures every epoch)."""
        if epoch < 0:
            raise ValueError(f"set_epoch: expected a non-negative epoch, got {epoch}")
        self.epoch = int(epoch)

    def plan(self, index: int, epoch: Optional[int] = None) -> MixturePlan:
        """Draw what item ``index`` of ``epoch`` (default: the current one) is made of,
        without reading any audio."""
        return self._draw(index, epoch)[0]

    def _draw(self, index: int, epoch: Optional[int] = None) -> Tuple[MixturePlan, List[Utterance]]:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"DynamicMixingDataset: index {index} out of range (num_examples={self.num_examples})")
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        picked = rng.choice(len(self.speakers), size=self.num_spks, replace=False, p=self._speaker_weights)
        utterances = []
        for s in picked:
            choices = self.utterances[self.speakers[s]]
            utterances.append(choices[int(rng.integers(len(choices)))])
        length = min(u.num_samples for u in utterances)
        if self.segment_seconds is not None:
            length = min(length, int(round(self.segment_seconds * self.sample_rate)))
        starts = [int(rng.integers(u.num_samples - length + 1)) for u in utterances]
        low, high = self.level_range_db
        if self.layout == "librispeech":
            levels = [float(rng.uniform(low, high)) for _ in utterances]
        else:
            reference = float(rng.uniform(low, high))
            snr = self.max_relative_snr_db
            levels = [reference] + [reference + float(rng.uniform(-snr, snr)) for _ in utterances[1:]]
        plan = MixturePlan(
            speakers=[u.speaker for u in utterances],
            files=[u.path for u in utterances],
            starts=starts,
            length=length,
            levels_db=levels,
        )
        return plan, utterances

    def __getitem__(self, index: int) -> Dict[str, Union[str, torch.Tensor]]:
        plan, utterances = self._draw(index)
        sources = []
        for utt, start, level in zip(utterances, plan.starts, plan.levels_db):
            signal = read_segment(utt.path, start, plan.length, self.sample_rate, utt.file_rate)
            current = rms_db(signal)
            if current > -200.0:  # not digital silence
                signal = signal * (10.0 ** ((level - current) / 20.0))
            sources.append(signal.float())
        stacked = torch.stack(sources)
        mixture = stacked.sum(0)
        peak = max(float(mixture.abs().max()), float(stacked.abs().max())) if plan.length else 0.0
        if peak > self.max_peak:
            scale = self.max_peak / peak
            stacked = stacked * scale
            mixture = stacked.sum(0)
        item: Dict[str, Union[str, torch.Tensor]] = {
            "id": f"dm_e{self.epoch}_i{index}_" + "_".join(os.path.splitext(os.path.basename(f))[0] for f in plan.files)
        }
        item["mix_sig"] = mixture.contiguous()
        for k in range(self.num_spks):
            item[f"s{k + 1}_sig"] = stacked[k].contiguous()
        return item

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.source_folder!r}, layout={self.layout!r}, "
            f"speakers={len(self.speakers)}, utterances="
            f"{sum(len(v) for v in self.utterances.values())}, num_spks={self.num_spks}, "
            f"num_examples={self.num_examples}, sample_rate={self.sample_rate}, "
            f"segment_seconds={self.segment_seconds})"
        )
