"""Run an ``s4m-compile`` folder: AOTInductor packages of an S4M separator, loaded in
a second with no compiler and no model code.

:class:`CompiledSeparator` separates whole recordings, or chunks of them, with
``separator.pt2``: as :class:`~speechbrain_s4m.inference.onnx_runtime.OnnxSeparator` does with
``separator.onnx``, it pads each mixture to whole blocks of encoder frames, says how many
frames hold the signal, and trims the sources back, so that its output is the offline
model's for any length. :class:`CompiledStreamingSeparator` feeds a compiled stream step
(``stream_step_<N>ms.pt2``, causal models) chunk by chunk
(:class:`~speechbrain_s4m.inference.fixed_step_stream.FixedStepStream`, the buffering the ONNX stream
shares).

A package is machine code for one torch version and one CPU instruction set, with its
thread count fixed: ``compiled_model.json`` records what it was built for
(:func:`build_stamp`), and :func:`read_compiled_metadata` refuses a folder built for
anything else with the command that builds it again, before any package is loaded.

This module imports torch (the packages' runtime) and, of this package, only the
plain-Python :mod:`speechbrain_s4m.frame_geometry` and :mod:`speechbrain_s4m.inference.fixed_step_stream`,
not the lobes.

Legend: ``B`` batch, ``T`` samples, ``F`` frames per step, ``S`` encoder stride, ``K``
encoder kernel, ``C`` speakers.

Authors
 * speechbrain-s4m contributors
"""

import json
import os
import platform
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from speechbrain_s4m.frame_geometry import encoder_frames, whole_blocks
from speechbrain_s4m.inference.fixed_step_stream import FixedStepStream, checked_signal

__all__ = [
    "CompiledSeparator",
    "CompiledStreamingSeparator",
    "build_stamp",
    "is_compiled_folder",
    "read_compiled_metadata",
]

METADATA = "compiled_model.json"
FORMAT = "speechbrain-s4m compiled 1"
OFFLINE = "separator"  # the offline package's section of compiled_model.json
STREAM_SECTION = "stream_step_{:g}ms"  # a stream step's section, by its milliseconds


def build_stamp() -> Dict[str, object]:
    """What a package compiled now is tied to: the torch version, the CPU's
    instruction set as torch dispatches on it, the machine architecture and the torch
    threads its kernels are written for.

    Example
    -------
    >>> sorted(build_stamp())
    ['cpu_capability', 'machine', 'threads', 'torch']
    """
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
    }


def is_compiled_folder(path: str) -> bool:
    """Whether ``path`` is an ``s4m-compile`` folder (it holds ``compiled_model.json``)."""
    return os.path.isfile(os.path.join(path, METADATA))


def read_compiled_metadata(model_dir: str) -> Dict[str, object]:
    """``compiled_model.json`` of an ``s4m-compile`` folder, checked against this
    machine.

    Raises
    ------
    FileNotFoundError
        When ``model_dir`` is not such a folder.
    ValueError
        When it was compiled for another torch version, CPU instruction set or
        architecture: its packages would not load, or would run wrong code.
    """
    path = os.path.join(model_dir, METADATA)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{model_dir} is not an s4m-compile folder: expected {METADATA} and *.pt2 packages there "
            "(build them with s4m-compile MODEL_DIR OUT_DIR)"
        )
    with open(path, encoding="utf-8") as f:
        metadata = json.load(f)
    if metadata.get("format") != FORMAT or not isinstance(metadata.get("built_for"), dict):
        raise ValueError(f"{path}: not a {FORMAT!r} file; build the folder again with s4m-compile")
    built, here = metadata["built_for"], build_stamp()
    differ = [key for key in ("torch", "cpu_capability", "machine") if built.get(key) != here[key]]
    if differ:
        then = ", ".join(f"{key} {built.get(key)}" for key in differ)
        now = ", ".join(f"{key} {here[key]}" for key in differ)
        source = metadata.get("source_model", "MODEL_DIR")
        raise ValueError(
            f"{model_dir} was compiled for {then}; this machine has {now}. A compiled package runs only "
            f"where it was built: compile it again here with s4m-compile {source} {model_dir} --force"
        )
    return metadata


class Package:
    """A loaded AOTInductor package, called on its flat input tensors; returns the list of
    its output tensors. It goes to torch's C++ loader directly: importing TorchInductor's
    Python side (``torch._inductor.aoti_load_package``) would take seconds of the start."""

    def __init__(self, path: str):
        self.path = path
        self.loader = torch._C._aoti.AOTIModelPackageLoader(path, "model", False, 1, -1)

    def __call__(self, *inputs: torch.Tensor) -> List[torch.Tensor]:
        return self.loader.boxed_run(list(inputs))


def load_package(model_dir: str, section: Dict[str, object]) -> Package:
    """The loaded package of one section of ``compiled_model.json``."""
    path = os.path.join(model_dir, str(section["file"]))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the package {METADATA} names is missing; build the folder again")
    return Package(path)


class CompiledSeparator:
    """Separate whole recordings with the compiled offline separator (``separator.pt2``).

    Arguments
    ---------
    model_dir : str
        A folder written by ``s4m-compile``.

    Attributes
    ----------
    sample_rate, num_spks : int
        The model's.
    min_samples, max_samples : int
        The shortest mixture (one encoder kernel) and the longest (the S4 scans').
    threads : int
        The torch threads its kernels were compiled for.
    """

    def __init__(self, model_dir: str):
        metadata = read_compiled_metadata(model_dir)
        if OFFLINE not in metadata:
            raise ValueError(f"{model_dir} holds no {OFFLINE}.pt2: compile it again without --no-offline")
        section = metadata[OFFLINE]
        self.package = load_package(model_dir, section)
        self.sample_rate, self.num_spks = int(metadata["sample_rate"]), int(metadata["num_spks"])
        self.kernel, self.stride = int(section["encoder_kernel"]), int(section["encoder_stride"])
        self.block_frames = int(section["block_frames"])
        self.min_samples = self.kernel
        self.max_samples = (int(section["max_frames"]) - 1) * self.stride + self.kernel
        self.threads = int(metadata["built_for"]["threads"])

    def separate_tensor(self, mix: torch.Tensor) -> torch.Tensor:
        """``mix [1, T]`` (float32, CPU) -> sources ``[1, T, C]``."""
        if mix.dim() != 2 or mix.shape[0] != 1:
            raise ValueError(f"CompiledSeparator: expected one mixture [1, time], got {tuple(mix.shape)}")
        samples = mix.shape[1]
        if not self.min_samples <= samples <= self.max_samples:
            raise ValueError(
                f"CompiledSeparator: a mixture of {samples} samples; expected {self.min_samples} <= time <= "
                f"{self.max_samples} (one encoder kernel, and the longest signal the S4 scans cover); "
                "separate longer recordings in chunks (s4m-separate)"
            )
        frames = encoder_frames(samples, self.kernel, self.stride)
        padded = (whole_blocks(frames, self.block_frames) - 1) * self.stride + self.kernel
        window = torch.nn.functional.pad(mix.float(), (0, padded - samples))  # whole blocks, zeros after the signal
        with torch.inference_mode():
            (sources,) = self.package(window, torch.tensor(frames))
        return sources[:, :samples]

    def separate_batch(self, mix: np.ndarray) -> np.ndarray:
        """``mix [B, T]`` -> sources ``[B, T, C]``, one mixture at a time."""
        mix = checked_signal(mix, "CompiledSeparator: the mixture", "[batch, time]")
        return np.stack([self.separate_tensor(torch.from_numpy(row[None]))[0].numpy() for row in mix])

    def separate(self, mix: np.ndarray) -> np.ndarray:
        """``mix [T]`` at :attr:`sample_rate` -> sources ``[T, C]``."""
        return self.separate_batch(checked_signal(mix, "CompiledSeparator: the mixture")[None])[0]


def contiguous_strides(shape: Sequence[int]) -> Tuple[int, ...]:
    """The strides of a new tensor of ``shape``.

    Example
    -------
    >>> contiguous_strides((1, 4, 3))
    (12, 3, 1)
    """
    strides, step = [], 1
    for size in reversed(shape):
        strides.insert(0, step)
        step *= max(size, 1)
    return tuple(strides)


class CompiledStreamingSeparator(FixedStepStream):
    """Separate a stream chunk by chunk with a compiled stream step of a causal model.

    Its output is the offline causal separation, as the eager stream's is; a step
    waits for its whole window, so the latency is that of a step (``F S + K - S - 1``
    samples).

    Arguments
    ---------
    model_dir : str
        A folder written by ``s4m-compile``.
    step_ms : float
        Which of its stream steps: the longest one not longer than ``step_ms`` (the
        shortest when all are longer).
    """

    def __init__(self, model_dir: str, step_ms: float = 16.0):
        if step_ms <= 0:
            raise ValueError(f"CompiledStreamingSeparator: step_ms must be positive, got {step_ms:g}")
        metadata = read_compiled_metadata(model_dir)
        steps = sorted(metadata.get("stream_steps", []))
        if not steps:
            raise ValueError(
                f"{model_dir} holds no stream step: streaming needs a causal model (hparams/*_causal.yaml)"
            )
        shorter = [ms for ms in steps if ms <= step_ms]
        self.step_ms = max(shorter) if shorter else min(steps)
        section = metadata[STREAM_SECTION.format(self.step_ms)]
        self.package = load_package(model_dir, section)
        self._shapes = [tuple(entry["shape"]) for entry in section["state"]]
        self._strides = [contiguous_strides(shape) for shape in self._shapes]
        self.threads = int(metadata["built_for"]["threads"])
        super().__init__(
            section["frames"],
            section["encoder_kernel"],
            section["encoder_stride"],
            metadata["sample_rate"],
            metadata["num_spks"],
        )

    def reset_state(self) -> None:
        self._state: List[torch.Tensor] = [torch.zeros(shape) for shape in self._shapes]

    def run_step(self, window: np.ndarray, signal_frames: int) -> np.ndarray:
        with torch.inference_mode():
            sources, *state = self.package(torch.from_numpy(window), torch.tensor(signal_frames), *self._state)
        # a package may return a state tensor contiguous but strided otherwise along a
        # dimension of size 1; the next step gets the strides it was compiled for
        self._state = [t if t.stride() == s else t.as_strided(t.shape, s) for t, s in zip(state, self._strides)]
        return sources.numpy()  # [F S, C]

    def decoder_tail(self) -> np.ndarray:
        return self._state[0].numpy()  # the first state tensor: the decoder's tail
