"""Real-time streaming with PyTorch: the stream step of a causal model compiled by
TorchInductor.

:class:`CompiledStreamingSeparator` runs the step of a
:class:`~speechbrain_s4m.streaming.StreamingSeparator` over a fixed number of frames
(:class:`~speechbrain_s4m.streaming.StreamStep`, the function ``stream_step.onnx`` is
traced from) compiled by :func:`~speechbrain_s4m.inductor_lowering.compile_step`, and
feeds it as :class:`~speechbrain_s4m.onnx_runtime.OnnxStreamingSeparator` feeds the
ONNX step (:class:`~speechbrain_s4m.step_stream.FixedStepStream`). Its output is the
offline causal separation, as the eager stream's is; a step waits for its whole
window, so the latency is that of a step (``F S + K - S - 1`` samples).

Legend: ``F`` frames per step, ``S`` encoder stride, ``K`` encoder kernel, ``C`` speakers.

Authors
 * speechbrain-s4m contributors
"""

import time
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from speechbrain_s4m.inductor_lowering import compile_step
from speechbrain_s4m.step_stream import FixedStepStream
from speechbrain_s4m.streaming import StreamingSeparator, StreamStep

__all__ = ["CompiledStreamingSeparator", "contiguous_strides", "standard_strides"]


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


def standard_strides(t: torch.Tensor, strides: Tuple[int, ...]) -> torch.Tensor:
    """``t`` with ``strides``, the :func:`contiguous_strides` of its shape, as the first
    step's state has them (a view where ``t`` is contiguous but strided differently
    along dimensions of size 1, as Inductor may leave its outputs): every step then
    meets the strides the step was compiled for, and runs the same graph.

    Example
    -------
    >>> t = torch.zeros(4, 1).T  # [1, 4] with strides (1, 1)
    >>> t.is_contiguous(), standard_strides(t, contiguous_strides(t.shape)).stride()
    (True, (4, 1))
    """
    t = t.contiguous()
    return t if t.stride() == strides else t.as_strided(t.shape, strides)


class CompiledStreamingSeparator(FixedStepStream):
    """Separate a stream chunk by chunk with the compiled step of a causal model.

    Compiling takes minutes for a full-size model (it happens here, once) and needs a
    C++ compiler; the compiled step runs on the CPU, on the torch threads of the time
    it was compiled.

    Arguments
    ---------
    streaming : StreamingSeparator
        The eager stream of a causal model (its lobes and sample rate).
    chunk_ms : float
        The step: whole blocks of ``2^(S-1)`` frames nearest to ``chunk_ms`` of audio.

    Attributes
    ----------
    compile_seconds : float
        How long compiling took.

    Example (compiling takes half a minute even for this small model, so it is not run
    as a doctest; ``tests/test_compiled_stream.py`` runs it)::

        from speechbrain_s4m.benchmark.streaming import build_stream

        eager = build_stream("S4M-tiny causal", {"num_blocks": 1, "hidden_channels": 16})
        stream = CompiledStreamingSeparator(eager, chunk_ms=16)
        mix = np.random.default_rng(0).standard_normal(3000).astype(np.float32)
        parts = [stream.process(chunk) for chunk in np.split(mix, [1000, 1100])]
        separated = np.concatenate(parts + [stream.flush()])  # [3000, 2], the offline separation
    """

    def __init__(self, streaming: StreamingSeparator, chunk_ms: float = 16.0):
        if streaming.device.type != "cpu":
            raise ValueError(f"CompiledStreamingSeparator: compiles for the CPU, got a model on {streaming.device}")
        if chunk_ms <= 0:
            raise ValueError(f"CompiledStreamingSeparator: chunk_ms must be positive, got {chunk_ms:g}")
        self.step = StreamStep(streaming, streaming.step_blocks(chunk_ms)).eval()
        self._strides = [contiguous_strides(shape) for shape in self.step.state_shapes]  # fixed: computed once
        self._compiled = compile_step(self.step)
        super().__init__(
            self.step.frames, streaming.kernel, streaming.stride, streaming.sample_rate, streaming.num_spks
        )
        start = time.perf_counter()
        self.run_step(np.zeros(self.window_samples, np.float32), self.frames)  # compiles
        self.compile_seconds = time.perf_counter() - start
        self.reset()

    @classmethod
    def from_folder(cls, model_dir: str, chunk_ms: float = 16.0, savedir: Optional[str] = None):
        """Compile the stream of an ``s4m-export`` folder of a causal model."""
        return cls(StreamingSeparator.from_folder(model_dir, savedir=savedir), chunk_ms)

    def reset_state(self) -> None:
        with torch.inference_mode():  # the kind of tensor every later step carries: one compiled graph
            self._state: List[torch.Tensor] = self.step.initial_state()

    @torch.inference_mode()
    def run_step(self, window: np.ndarray, signal_frames: int) -> np.ndarray:
        sources, *state = self._compiled(torch.from_numpy(window), torch.tensor(signal_frames), *self._state)
        self._state = [standard_strides(t, strides) for t, strides in zip(state, self._strides)]
        return sources.numpy()  # [F S, C]

    def decoder_tail(self) -> np.ndarray:
        return self._state[0].numpy()  # the first state tensor: the decoder's tail
