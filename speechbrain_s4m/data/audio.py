"""Small audio helpers shared by data preparation and dynamic mixing.

Every function names the file it was given when something goes wrong, so that a bad
file in a large dataset can be found from the error message alone.

Authors
 * speechbrain-s4m contributors
"""

import math
import os
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np
import soundfile as sf
import torch

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says.

    Arguments
    ---------
    path : str
        The file.
    sample_rate : int
        Samples per second.
    num_frames : int
        Samples per channel.
    channels : int
        Number of channels.
    """

    path: str
    sample_rate: int
    num_frames: int
    channels: int

    @property
    def duration(self) -> float:
        """Duration in seconds (``num_frames / sample_rate``)."""
        return self.num_frames / self.sample_rate


def audio_info(path: PathLike) -> AudioInfo:
    """Read an audio file's header (sample rate, length, channels) without decoding it.

    Arguments
    ---------
    path : str or os.PathLike
        Any file soundfile can read (wav, flac, ...).

    Returns
    -------
    AudioInfo
        The header values.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a readable audio file.

    Example
    -------
    >>> import os, tempfile
    >>> import numpy as np, soundfile as sf
    >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> sf.write(path, np.zeros(4000), 8000)
    >>> info = audio_info(path)
    >>> info.sample_rate, info.num_frames, info.duration
    (8000, 4000, 0.5)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Audio file not found: {path}")
    try:
        info = sf.info(path)
    except Exception as error:  # soundfile raises several types for bad files
        raise ValueError(
            f"Could not read the audio header of {path}: {error}. "
            "Expected an audio file readable by soundfile (e.g. wav or flac)."
        ) from error
    return AudioInfo(path, int(info.samplerate), int(info.frames), int(info.channels))


def read_audio(path: PathLike, start: int = 0, stop: Optional[int] = None) -> Tuple[torch.Tensor, int]:
    """Read (part of) an audio file as a mono float32 tensor.

    Multi-channel files are averaged to mono.

    Arguments
    ---------
    path : str or os.PathLike
        The audio file.
    start : int
        First sample to read.
    stop : int, optional
        One past the last sample to read; None reads to the end.

    Returns
    -------
    signal : torch.Tensor
        ``[time]``, float32, in [-1, 1] for PCM files.
    sample_rate : int
        The file's sample rate.

    Example
    -------
    >>> import os, tempfile
    >>> import numpy as np, soundfile as sf
    >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> sf.write(path, np.full((800, 2), 0.25), 8000)
    >>> signal, rate = read_audio(path, start=100, stop=300)
    >>> signal.shape, signal.dtype, rate, float(signal[0])
    (torch.Size([200]), torch.float32, 8000, 0.25)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Audio file not found: {path}")
    try:
        data, sample_rate = sf.read(path, start=start, stop=stop, dtype="float32", always_2d=True)
    except Exception as error:
        raise ValueError(
            f"Could not read audio from {path} (samples {start} to {stop}): {error}. "
            "Expected an audio file readable by soundfile (e.g. wav or flac)."
        ) from error
    signal = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32)), int(sample_rate)


def resample(signal: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample along the last dimension (band-limited sinc interpolation).

    Arguments
    ---------
    signal : torch.Tensor
        ``[..., time]``.
    orig_rate : int
        The signal's sample rate.
    new_rate : int
        The wanted sample rate.

    Returns
    -------
    torch.Tensor
        ``[..., ceil(time * new_rate / orig_rate)]``; the input itself when the rates
        are equal.

    Example
    -------
    >>> resample(torch.zeros(8000), 8000, 16000).shape
    torch.Size([16000])
    """
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"resample: sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return signal
    import torchaudio.functional  # imported lazily: only needed when rates differ

    return torchaudio.functional.resample(signal, int(orig_rate), int(new_rate))


def resampled_length(num_frames: int, orig_rate: int, new_rate: int) -> int:
    """Number of samples that ``num_frames`` samples at ``orig_rate`` make at
    ``new_rate``, rounded down (so that it never exceeds what :func:`resample` gives).

    Example
    -------
    >>> resampled_length(16001, 16000, 8000)
    8000
    """
    return (num_frames * new_rate) // orig_rate


def read_segment(
    path: PathLike,
    start: int,
    length: int,
    sample_rate: int,
    file_rate: Optional[int] = None,
) -> torch.Tensor:
    """Read ``length`` samples starting at sample ``start``, both counted at
    ``sample_rate``, from a file that may be stored at another rate.

    Only the needed part of the file (plus a small margin for the resampling filter)
    is decoded. Samples past the end of the file are zeros.

    Arguments
    ---------
    path : str or os.PathLike
        The audio file.
    start : int
        First sample, at ``sample_rate``.
    length : int
        Number of samples, at ``sample_rate``.
    sample_rate : int
        The rate ``start``, ``length`` and the result are at.
    file_rate : int, optional
        The file's rate, if already known (saves a header read).

    Returns
    -------
    torch.Tensor
        ``[length]``, float32, mono.

    Example
    -------
    >>> import os, tempfile
    >>> import numpy as np, soundfile as sf
    >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> sf.write(path, np.full(16000, 0.5), 16000)
    >>> segment = read_segment(path, start=1000, length=2000, sample_rate=8000)
    >>> segment.shape, round(float(segment[1000]), 3)
    (torch.Size([2000]), 0.5)
    """
    if start < 0 or length < 0:
        raise ValueError(
            f"read_segment({os.fspath(path)}): start and length must be >= 0, got start={start}, length={length}"
        )
    if file_rate is None:
        file_rate = audio_info(path).sample_rate
    if file_rate == sample_rate:
        signal, _ = read_audio(path, start=start, stop=start + length)
    else:
        # Read from a file sample that falls exactly on a target sample, so that
        # the resampled signal's sample 0 is a known target index.
        gcd = math.gcd(file_rate, sample_rate)
        file_step, target_step = file_rate // gcd, sample_rate // gcd
        margin = 64 * file_step  # covers the resampling filter's support
        first = (start * file_rate) // sample_rate - margin
        first = max(first // file_step, 0) * file_step
        last = -(-((start + length) * file_rate) // sample_rate) + margin
        chunk, _ = read_audio(path, start=first, stop=last)
        chunk = resample(chunk, file_rate, sample_rate)
        offset = start - (first // file_step) * target_step
        signal = chunk[offset : offset + length]
    if signal.numel() < length:
        signal = torch.nn.functional.pad(signal, (0, length - signal.numel()))
    return signal.contiguous()


def non_finite_count(signal: torch.Tensor) -> int:
    """Number of NaN or infinite samples in ``signal``.

    Example
    -------
    >>> non_finite_count(torch.tensor([0.0, float("nan"), 1.0, float("inf")]))
    2
    """
    return int((~torch.isfinite(signal)).sum())
