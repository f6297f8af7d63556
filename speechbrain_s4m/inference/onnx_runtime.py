"""Run an exported S4M separator with numpy and onnxruntime alone (no PyTorch).

:class:`OnnxSeparator` separates whole recordings, or batches of equal-length ones,
with ``separator.onnx`` (written by ``s4m-export-onnx``): it pads each mixture to whole
blocks of encoder frames, as the offline model does, and trims the sources back.
:class:`OnnxStreamingSeparator` feeds ``stream_step.onnx`` (causal models) chunk by
chunk, as :class:`speechbrain_s4m.inference.streaming.StreamingSeparator` does with the PyTorch
lobes: it buffers samples until a step's window is complete, carries the state tensors
from one step to the next, and ends the stream with
:meth:`~OnnxStreamingSeparator.flush`.

This module imports numpy and onnxruntime, and soundfile for files; of this package
only the plain-Python :mod:`speechbrain_s4m.frame_geometry` and
:mod:`speechbrain_s4m.inference.fixed_step_stream` (the buffering of a fixed-size step), and not torch.

Example (with a folder written by ``s4m-export-onnx``)::

    from speechbrain_s4m.inference.onnx_runtime import OnnxSeparator
    sources = OnnxSeparator("onnx_dir").separate_file("mixture.wav")  # [time, spks]

Authors
 * speechbrain-s4m contributors
"""

import json
import os
from typing import List, Optional

import numpy as np
import onnxruntime as ort

from speechbrain_s4m.frame_geometry import encoder_frames, whole_blocks
from speechbrain_s4m.inference.fixed_step_stream import FixedStepStream, checked_signal

__all__ = ["OnnxSeparator", "OnnxStreamingSeparator"]

METADATA = "onnx_model.json"


def read_metadata(model_dir: str, graph: str) -> dict:
    """``onnx_model.json`` of an ``s4m-export-onnx`` folder and its section for
    ``graph`` (``"separator"`` or ``"stream_step"``), with a clear error when the
    folder is not one or lacks that graph."""
    path = os.path.join(model_dir, METADATA)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{model_dir} is not an s4m-export-onnx folder: expected {METADATA} and {graph}.onnx there "
            "(write them with s4m-export-onnx MODEL_DIR OUT_DIR)"
        )
    with open(path, encoding="utf-8") as f:
        metadata = json.load(f)
    missing = [key for key in ("sample_rate", "num_spks") if key not in metadata]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}; expected the file s4m-export-onnx writes")
    if graph not in metadata:
        why = {
            "stream_step": "stream_step.onnx is exported for causal models only (hparams/*_causal.yaml)",
            "separator": "export the model again with s4m-export-onnx --force to add separator.onnx",
        }[graph]
        raise ValueError(f"{model_dir} holds no {graph}.onnx: {why}")
    return metadata


def inference_session(model_dir: str, file: str, threads: Optional[int]) -> ort.InferenceSession:
    """An onnxruntime CPU session on ``model_dir/file``, with ``threads`` intra-op
    threads (onnxruntime's default when None). Its log shows errors only: the
    warnings it prints while optimising these graphs (a ``CastLike`` it cannot fold
    ahead of time) leave the results unchanged."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(os.path.join(model_dir, file), options, providers=["CPUExecutionProvider"])


class OnnxStreamingSeparator(FixedStepStream):
    """Separate a stream chunk by chunk with ``stream_step.onnx``.

    Arguments
    ---------
    model_dir : str
        A folder written by ``s4m-export-onnx``.
    threads : int, optional
        onnxruntime's intra-op threads (its default when omitted).

    Attributes
    ----------
    sample_rate, num_spks : int
        The model's.
    latency_samples : int
        Output sample ``u`` depends on input samples up to ``u + latency_samples``.
    hop_samples : int
        Samples per step.
    """

    def __init__(self, model_dir: str, threads: Optional[int] = None):
        metadata = read_metadata(model_dir, "stream_step")
        step = metadata["stream_step"]
        self.session = inference_session(model_dir, step["file"], threads)
        self._state_names = [entry["name"] for entry in step["state"]]
        self._state_shapes = [tuple(entry["shape"]) for entry in step["state"]]
        super().__init__(
            step["frames"],
            step["encoder_kernel"],
            step["encoder_stride"],
            metadata["sample_rate"],
            metadata["num_spks"],
        )
        if self.window_samples != int(step["window_samples"]):
            raise ValueError(f"{model_dir}: onnx_model.json's stream step has an inconsistent window")

    def reset_state(self) -> None:
        self._state: List[np.ndarray] = [np.zeros(shape, np.float32) for shape in self._state_shapes]

    def run_step(self, window: np.ndarray, signal_frames: int) -> np.ndarray:
        feeds = {"window": window, "signal_frames": np.array(signal_frames, dtype=np.int64)}
        feeds.update(zip(self._state_names, self._state))
        sources, *self._state = self.session.run(None, feeds)
        return sources  # [hop, spks]

    def decoder_tail(self) -> np.ndarray:
        return self._state[0]  # the first state tensor: the decoder's tail


class OnnxSeparator:
    """Separate whole recordings with ``separator.onnx``.

    Arguments
    ---------
    model_dir : str
        A folder written by ``s4m-export-onnx``.
    threads : int, optional
        onnxruntime's intra-op threads (its default when omitted).

    Attributes
    ----------
    sample_rate, num_spks : int
        The model's.
    min_samples : int
        The shortest mixture: one encoder kernel.
    max_samples : int
        The longest mixture the graph's S4 scans cover.
    """

    def __init__(self, model_dir: str, threads: Optional[int] = None):
        metadata = read_metadata(model_dir, "separator")
        graph = metadata["separator"]
        self.session = inference_session(model_dir, graph["file"], threads)
        self.sample_rate = int(metadata["sample_rate"])
        self.num_spks = int(metadata["num_spks"])
        self.kernel, self.stride = int(graph["encoder_kernel"]), int(graph["encoder_stride"])
        self.block_frames = int(graph["block_frames"])
        self.min_samples = self.kernel
        self.max_samples = (int(graph["max_frames"]) - 1) * self.stride + self.kernel

    def separate_batch(self, mix: np.ndarray) -> np.ndarray:
        """``mix [batch, time]`` at :attr:`sample_rate` -> sources ``[batch, time, spks]``."""
        mix = checked_signal(mix, "OnnxSeparator: the mixture", "[batch, time]")
        batch, samples = mix.shape
        if not self.min_samples <= samples <= self.max_samples:
            raise ValueError(
                f"OnnxSeparator: a mixture of {samples} samples; expected [batch, time] with "
                f"{self.min_samples} <= time <= {self.max_samples} (one encoder kernel, and the longest "
                f"signal the graph's S4 scans cover, {self.max_samples / self.sample_rate / 3600:.1f} h); "
                "separate longer recordings in chunks (s4m-separate --onnx)"
            )
        frames = encoder_frames(samples, self.kernel, self.stride)
        padded = np.zeros(
            (batch, (whole_blocks(frames, self.block_frames) - 1) * self.stride + self.kernel), np.float32
        )
        padded[:, :samples] = mix  # whole blocks of frames, zeros after the signal
        feeds = {"mixture": padded, "signal_frames": np.array(frames, dtype=np.int64)}
        return self.session.run(None, feeds)[0][:, :samples]

    def separate(self, mix: np.ndarray) -> np.ndarray:
        """``mix [time]`` at :attr:`sample_rate` -> sources ``[time, spks]``."""
        return self.separate_batch(checked_signal(mix, "OnnxSeparator: the mixture")[None])[0]

    def separate_file(self, path: str) -> np.ndarray:
        """Read ``path`` (mono, or averaged to mono) and separate it."""
        import soundfile as sf

        if not os.path.isfile(path):
            raise FileNotFoundError(f"Audio file not found: {path}")
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        if rate != self.sample_rate:
            raise ValueError(f"{path}: {rate} Hz, expected the model's {self.sample_rate} Hz")
        mix = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        try:
            return self.separate(mix)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
