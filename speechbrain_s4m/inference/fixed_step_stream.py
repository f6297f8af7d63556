"""A stream that advances by steps of a fixed number of frames: the buffering shared by
the runners of a fixed-size stream step (``stream_step.onnx`` under onnxruntime, and
the step compiled by TorchInductor).

A step takes the ``window`` of samples of ``F`` encoder frames (``F S + K - S``;
consecutive windows overlap by ``K - S``), and returns the ``F S`` finished samples,
carrying its state to the next step. :class:`FixedStepStream` buffers the incoming
chunks until a window is complete, runs as many steps as the samples allow, and ends
the stream with :meth:`FixedStepStream.flush`, whose last step is zero-padded (its
frames from ``signal_frames`` on are padding), so that the output has the input's
length. Since a step waits for its whole window, the algorithmic latency is
``F S + K - S - 1`` samples.

This module imports numpy and, of this package, only the plain-Python
:mod:`speechbrain_s4m.frame_geometry`, and not torch.

Legend: ``F`` frames per step, ``S`` encoder stride, ``K`` encoder kernel, ``C`` speakers.

Authors
 * speechbrain-s4m contributors
"""

from typing import Optional

import numpy as np

from speechbrain_s4m.frame_geometry import final_frames


def checked_signal(signal: np.ndarray, what: str, shape: str = "[time]") -> np.ndarray:
    """``signal`` as float32 of the rank ``shape`` names (``"[time]"`` or ``"[batch,
    time]"``); ``ValueError`` naming the shape expected or the count of NaN / Inf
    samples.

    Example
    -------
    >>> checked_signal([0.0, float("nan")], "chunk 3")
    Traceback (most recent call last):
        ...
    ValueError: chunk 3 holds 1 non-finite (NaN or Inf) of 2 samples
    """
    signal = np.asarray(signal)
    if signal.ndim != shape.count(",") + 1:
        raise ValueError(f"{what}: expected mono samples of shape {shape}, got shape {signal.shape}")
    signal = signal.astype(np.float32, copy=False)
    bad = int(signal.size - np.isfinite(signal).sum())
    if bad:
        raise ValueError(f"{what} holds {bad} non-finite (NaN or Inf) of {signal.size} samples")
    return signal


class FixedStepStream:
    """Chunks in, separated samples out, through a step of ``frames`` frames.

    Subclasses set the geometry and implement :meth:`run_step`,
    :meth:`reset_state` and :meth:`decoder_tail`.

    Arguments
    ---------
    frames : int
        ``F``, encoder frames per step.
    kernel, stride : int
        The encoder's ``K`` and ``S``.
    sample_rate, num_spks : int
        The model's.

    Example
    -------
    >>> class Delay(FixedStepStream):  # a "model" whose two sources are the input
    ...     def reset_state(self): self.tail = np.zeros((2, 0), np.float32)
    ...     def run_step(self, window, signal_frames): return np.stack([window, window], 1)
    ...     def decoder_tail(self): return self.tail
    >>> stream = Delay(frames=4, kernel=1, stride=1, sample_rate=8000, num_spks=2)
    >>> parts = [stream.process(np.arange(c, dtype=np.float32)) for c in (3, 2, 6)]
    >>> [p.shape[0] for p in parts], stream.flush().shape, stream.latency_samples
    ([0, 4, 4], (3, 2), 3)
    """

    def __init__(self, frames: int, kernel: int, stride: int, sample_rate: int, num_spks: int):
        self.frames = int(frames)
        self.kernel, self.stride = int(kernel), int(stride)
        self.sample_rate, self.num_spks = int(sample_rate), int(num_spks)
        self.hop_samples = self.frames * self.stride
        self.window_samples = self.hop_samples + self.kernel - self.stride
        self.reset()

    # ----------------------------------------------------------- subclasses implement
    def run_step(self, window: np.ndarray, signal_frames: int) -> np.ndarray:
        """One step on ``window [F S + K - S]``, advancing the carried state; returns
        the finished samples ``[F S, C]``."""
        raise NotImplementedError

    def reset_state(self) -> None:
        """Set the carried state to the start of a stream."""
        raise NotImplementedError

    def decoder_tail(self) -> np.ndarray:
        """The decoder's overlap-add tail the state carries, ``[C, K - S]``."""
        raise NotImplementedError

    # ---------------------------------------------------------------------- stream
    @property
    def latency_samples(self) -> int:
        """Output sample ``u`` depends on input samples up to ``u + latency_samples``:
        a step waits for its whole window."""
        return self.window_samples - 1

    @property
    def latency_seconds(self) -> float:
        """:attr:`latency_samples` in seconds."""
        return self.latency_samples / self.sample_rate

    def reset(self) -> None:
        """Forget the stream: the next :meth:`process` starts a new signal."""
        self.reset_state()
        self._pending = np.zeros(0, np.float32)  # samples from the next step's first frame on
        self._received = 0
        self._emitted = 0
        self._chunks = 0

    def process(self, chunk: np.ndarray, what: Optional[str] = None) -> np.ndarray:
        """Feed the next samples ``[time]``; returns the separated samples they finish,
        ``[time_out, spks]`` (possibly none). A chunk of another rank, or holding NaN or
        Inf, is a ``ValueError`` that leaves the stream as it was."""
        index, self._chunks = self._chunks, self._chunks + 1
        chunk = checked_signal(chunk, what or f"{type(self).__name__}: chunk {index} (counting from 0)")
        self._received += chunk.shape[0]
        self._pending = np.concatenate([self._pending, chunk])
        finished = []
        while self._pending.shape[0] >= self.window_samples:
            finished.append(self.run_step(self._pending[: self.window_samples], self.frames))
            self._pending = self._pending[self.hop_samples :]
        out = np.concatenate(finished) if finished else np.zeros((0, self.num_spks), np.float32)
        self._emitted += out.shape[0]
        return out

    def flush(self) -> np.ndarray:
        """End the stream: separate what is buffered (the last frames zero-padded, as
        offline) and return the remaining samples, so that the output has the input's
        length. The stream is then reset."""
        pending, remaining = self._pending.shape[0], self._received - self._emitted
        frames = final_frames(self._received, pending, self.kernel, self.stride)
        finished = np.zeros((0, self.num_spks), np.float32)
        if frames > 0:
            window = np.concatenate([self._pending, np.zeros(self.window_samples - pending, np.float32)])
            finished = self.run_step(window, frames)
        out = np.concatenate([finished, self.decoder_tail().T])[:remaining]
        self.reset()
        return out
