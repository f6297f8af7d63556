"""Real-time separation: a causal S4M separator fed audio as it arrives.

:class:`StreamingSeparator` runs the lobes of a causal model (``S4MMaskNet(...,
causal=True)``) on a stream, a chunk of samples at a time. It separates whole blocks of
``2^(S-1)`` encoder frames as soon as their samples have arrived and buffers the rest;
it carries the causal convolutions' last frames and every S4 layer's state
(:class:`~speechbrain_s4m.lobes.stream_state.StreamState`), and overlap-adds the
decoder's output. Everything it returns, followed by :meth:`StreamingSeparator.flush`,
is the offline separation of the whole signal by the same lobes
(:class:`~speechbrain_s4m.lobes.encoder_masker_decoder.EncoderMaskerDecoder`). Each call costs the same
however much audio came before, and memory stays constant.

:class:`StreamStep` is one step over a fixed number of frames as a pure function of
the carried tensors: ``stream_step.onnx`` is traced from it, and
``s4m-compile`` compiles it (:mod:`speechbrain_s4m.export.compiled_packages`).

Legend: ``T`` samples, ``E`` encoder channels, ``L`` frames, ``C`` speakers, ``K``
encoder kernel, ``S`` encoder stride, ``P`` frames per block.

Authors
 * speechbrain-s4m contributors
"""

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from speechbrain_s4m.data.audio import audio_info, non_finite_count
from speechbrain_s4m.frame_geometry import final_frames, whole_blocks
from speechbrain_s4m.inference.model_folder import require_s4m
from speechbrain_s4m.lobes.encoder_masker_decoder import EncoderMaskerDecoder, first_layer
from speechbrain_s4m.lobes.stream_state import StreamState
from speechbrain_s4m.resources import current_rss_bytes

if TYPE_CHECKING:
    from speechbrain_s4m.inference.fixed_step_stream import FixedStepStream

__all__ = ["StreamingSeparator", "StreamStep", "StreamReport", "stream_file"]


class StreamingSeparator:
    """Separate a stream chunk by chunk with a causal encoder / mask net / decoder.

    Arguments
    ---------
    encoder : torch.nn.Module
        ``[B, T] -> [B, E, L]``, a ``Conv1d`` with kernel ``K`` and stride ``S``
        (:class:`~speechbrain_s4m.lobes.WaveformEncoder`).
    masknet : torch.nn.Module
        A causal mask network, ``S4MMaskNet(..., causal=True)``.
    decoder : torch.nn.Module
        SpeechBrain's ``Decoder`` (``ConvTranspose1d`` with the encoder's kernel and
        stride).
    sample_rate : int, optional
        The model's sample rate, for :attr:`latency_seconds`.

    Example
    -------
    >>> from speechbrain.lobes.models.dual_path import Decoder
    >>> from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder
    >>> lobes = (WaveformEncoder(32), S4MMaskNet(17, hidden_channels=16, num_blocks=1, causal=True),
    ...     Decoder(17, 1, 32, stride=8, bias=False))
    >>> stream = StreamingSeparator(*lobes)
    >>> mix = torch.randn(3000)
    >>> parts = [stream.process(chunk) for chunk in mix.split(128)] + [stream.flush()]
    >>> separated = torch.cat(parts)  # [time, spks]
    >>> separated.shape, stream.latency_samples
    (torch.Size([3000, 2]), 87)
    >>> offline = EncoderMaskerDecoder(*lobes)(mix[None])[0]
    >>> bool(torch.allclose(separated, offline, atol=1e-5))
    True
    """

    def __init__(self, encoder: nn.Module, masknet: nn.Module, decoder: nn.Module, sample_rate: Optional[int] = None):
        require_s4m(
            masknet,
            "streaming",
            "The stream carries S4M's own state from chunk to chunk (its S4 recurrences and causal "
            "convolutions); SpeechBrain's separators keep none.",
        )
        if not masknet.causal:
            raise ValueError(
                f"StreamingSeparator: streaming needs a causal=True model; got a non-causal "
                f"{type(masknet).__name__} (train one with hparams/s4m_causal.yaml or "
                f"s4m_tiny_causal.yaml, or build S4MMaskNet(..., causal=True))"
            )
        convolution = first_layer(encoder, nn.Conv1d, "StreamingSeparator: encoder")
        transposed = first_layer(decoder, nn.ConvTranspose1d, "StreamingSeparator: decoder")
        self.kernel, self.stride = int(convolution.kernel_size[0]), int(convolution.stride[0])
        if (transposed.kernel_size[0], transposed.stride[0]) != (self.kernel, self.stride):
            raise ValueError(
                f"StreamingSeparator: the decoder's kernel and stride ({transposed.kernel_size[0]}, "
                f"{transposed.stride[0]}) must equal the encoder's ({self.kernel}, {self.stride})"
            )
        self.model = EncoderMaskerDecoder(encoder, masknet, decoder).eval()
        self.num_spks = int(masknet.num_spks)
        self.block_frames = int(masknet.block_frames)
        self.sample_rate = sample_rate
        self._decoder_bias = transposed.bias
        self.device = next(masknet.parameters()).device
        self.reset()

    @classmethod
    def from_folder(cls, model_dir: str, savedir: Optional[str] = None, device: str = "cpu") -> "StreamingSeparator":
        """Load an ``s4m-export`` folder of a causal model (through SpeechBrain's
        ``SepformerSeparation``, as for offline use)."""
        from speechbrain_s4m.inference.model_folder import load_exported

        separator = load_exported(model_dir, savedir=savedir, device=device)
        mods = separator.mods
        return cls(mods.encoder, mods.masknet, mods.decoder, int(separator.hparams.sample_rate))

    # ------------------------------------------------------------------ geometry
    @property
    def latency_samples(self) -> int:
        """Algorithmic latency: output sample ``u`` depends on input samples up to
        ``u + latency_samples`` (the rest of its block of ``P`` frames, ``(P - 1) S``
        samples, plus the encoder kernel's ``K - 1``)."""
        return (self.block_frames - 1) * self.stride + self.kernel - 1

    @property
    def latency_seconds(self) -> Optional[float]:
        """:attr:`latency_samples` in seconds, when the sample rate is known."""
        return None if self.sample_rate is None else self.latency_samples / self.sample_rate

    @property
    def block_samples(self) -> int:
        """Samples per block: the stream advances by whole blocks."""
        return self.block_frames * self.stride

    def step_blocks(self, chunk_ms: float) -> int:
        """Blocks in a fixed step of about ``chunk_ms`` (at least one): the step of
        ``stream_step.onnx`` and of a compiled stream (:class:`StreamStep`).

        Example
        -------
        >>> from speechbrain_s4m.benchmark.streaming import build_stream
        >>> stream = build_stream("S4M-tiny causal", {"num_blocks": 1, "hidden_channels": 16})
        >>> stream.step_blocks(16), stream.step_blocks(1)  # 8 ms blocks at 8 kHz
        (2, 1)
        """
        if self.sample_rate is None:
            raise ValueError("StreamingSeparator: a step of chunk_ms needs the model's sample_rate")
        return max(1, round(chunk_ms / 1000 * self.sample_rate / self.block_samples))

    # -------------------------------------------------------------------- stream
    def reset(self) -> None:
        """Forget the stream: the next :meth:`process` starts a new signal."""
        self._state = StreamState()
        self._pending = torch.zeros(0, device=self.device)  # samples from the next frame's start on
        self._tail = self.initial_tail()
        self._received = 0
        self._emitted = 0
        self._chunks = 0

    def state_bytes(self) -> int:
        """Bytes the stream carries (constant once the first block has passed)."""
        carried = self._state.nbytes() + self._tail.numel() * self._tail.element_size()
        return carried + self._pending.numel() * self._pending.element_size()

    def _check_chunk(self, chunk: Union[torch.Tensor, np.ndarray], index: int) -> torch.Tensor:
        chunk = torch.as_tensor(chunk)
        if chunk.dim() != 1:
            raise ValueError(
                f"StreamingSeparator: expected a chunk of shape [time] (mono samples at the "
                f"model's rate), got {tuple(chunk.shape)}"
            )
        chunk = chunk.to(self.device, torch.float32)
        bad = non_finite_count(chunk)
        if bad:
            raise ValueError(
                f"StreamingSeparator: chunk {index} (counting from 0) holds {bad} non-finite (NaN or Inf) "
                f"of {chunk.shape[0]} samples; it was not used, and the stream continues with the next chunk"
            )
        return chunk

    def initial_tail(self) -> torch.Tensor:
        """The decoder's overlap-add tail at the start of a stream: zeros ``[C, K - S]``."""
        return torch.zeros(self.num_spks, self.kernel - self.stride, device=self.device)

    def step(
        self,
        samples: torch.Tensor,
        frames: int,
        state: StreamState,
        tail: torch.Tensor,
        signal_frames: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One step as a function of what a stream carries: encode ``frames`` frames from
        ``samples`` (exactly ``(frames - 1) S + K``), mask them continuing ``state``
        (which the step advances), decode, and overlap-add onto ``tail`` (``[C, K - S]``,
        see :meth:`initial_tail`). In the last chunk, the frames from
        ``signal_frames`` on are padding (their masks are zero).

        :meth:`process` and :meth:`flush` run it on the stream's own state; the ONNX
        stream step traces it.

        Returns
        -------
        tuple of torch.Tensor
            The finished samples ``[frames * S, C]`` and the new tail ``[C, K - S]``.
        """
        separated = self.model.separate_frames(samples[None], stream=state, signal_frames=signal_frames)
        waveforms = separated[0].T  # [C, (frames - 1) S + K]
        waveforms[:, : self.kernel - self.stride] += tail
        done = frames * self.stride
        tail = waveforms[:, done:].clone()
        if self._decoder_bias is not None:  # added once per sample, not once per chunk
            tail -= self._decoder_bias
        return waveforms[:, :done].T, tail  # [frames * S, C], [C, K - S]

    @torch.inference_mode()
    def process(self, chunk: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        """Feed the next samples ``[time]``; returns the separated samples finished by
        them, ``[time_out, spks]`` (possibly none: a partial block is buffered)."""
        index, self._chunks = self._chunks, self._chunks + 1  # every call counts, refused or not
        chunk = self._check_chunk(chunk, index)
        self._received += chunk.shape[0]
        self._pending = torch.cat([self._pending, chunk])
        ready = self._pending.shape[0] - self.kernel  # samples past the next frame's kernel
        frames = 0 if ready < 0 else (ready // self.stride + 1) // self.block_frames * self.block_frames
        if frames == 0:
            return torch.zeros(0, self.num_spks)
        samples = self._pending[: (frames - 1) * self.stride + self.kernel]
        out, self._tail = self.step(samples, frames, self._state, self._tail)
        self._pending = self._pending[frames * self.stride :].clone()
        self._emitted += out.shape[0]
        return out.cpu()

    @torch.inference_mode()
    def flush(self) -> torch.Tensor:
        """End the stream: separate what is buffered (zero-padded as the offline
        encoder and mask net pad the end of a signal) and return the remaining samples
        ``[time_out, spks]``, so that the stream's output has the input's length. The
        separator is then reset for a new stream."""
        pending, remaining = self._pending.shape[0], self._received - self._emitted
        frames = final_frames(self._received, pending, self.kernel, self.stride)
        finished = self._tail.T.new_zeros(0, self.num_spks)
        if frames:  # whole blocks, the frames after the signal's zeroed
            whole = whole_blocks(frames, self.block_frames)
            needed = (whole - 1) * self.stride + self.kernel
            samples = torch.cat([self._pending, self._pending.new_zeros(needed - pending)])
            signal_frames = torch.tensor(frames, device=self.device)
            finished, self._tail = self.step(samples, whole, self._state, self._tail, signal_frames)
        out = torch.cat([finished, self._tail.T])[:remaining]
        self.reset()
        return out.cpu()


class StreamStep(nn.Module):
    """One step of a :class:`StreamingSeparator` over ``F`` frames, with its state as
    explicit tensors in and out: the function the ONNX export traces
    (``stream_step.onnx``) and TorchInductor compiles
    (``s4m-compile``, :mod:`speechbrain_s4m.export.compiled_packages`).

    It runs the separator's own :meth:`~speechbrain_s4m.inference.streaming.StreamingSeparator.step`:
    a warm-up step on zeros, from a state of its own, finds the state tensors the
    stream carries (their modules, unfolded passes and shapes) and builds the S4
    recurrences, which the traced step then holds as constants.

    Arguments
    ---------
    streaming : StreamingSeparator
        The stream of a causal model.
    blocks : int
        Blocks of ``2^(S-1)`` frames per step.

    Example
    -------
    >>> from speechbrain.lobes.models.dual_path import Decoder
    >>> from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder
    >>> stream = StreamingSeparator(WaveformEncoder(32), S4MMaskNet(17, hidden_channels=16,
    ...     num_blocks=1, causal=True), Decoder(17, 1, 32, stride=8, bias=False))
    >>> step = StreamStep(stream, blocks=2)
    >>> step.window_samples, len(step.state_names)
    (152, 18)
    >>> out, *state = step(torch.zeros(152), torch.tensor(16), *step.initial_state())
    >>> out.shape
    torch.Size([128, 2])
    """

    def __init__(self, streaming: StreamingSeparator, blocks: int):
        super().__init__()
        if blocks < 1:
            raise ValueError(f"StreamStep: expected at least one block per step, got {blocks}")
        self.streaming = streaming
        self.model = streaming.model  # registered, so that the traced graph holds its weights
        self.frames = blocks * streaming.block_frames
        self.hop_samples = self.frames * streaming.stride
        self.window_samples = self.hop_samples + streaming.kernel - streaming.stride
        state, tail = StreamState(), streaming.initial_tail()  # the stream's own state is left as it is
        with torch.no_grad():
            streaming.step(torch.zeros(self.window_samples, device=streaming.device), self.frames, state, tail)
        self._warm = state
        self._keys = state.keys()  # (unfolded pass, module), in the order the step sets them
        names = {module: name for name, module in self.model.masknet.named_modules()}
        self.state_names = ["decoder_tail"] + [f"pass{scope}.{names[module]}" for scope, module in self._keys]
        self.state_shapes = [tuple(tail.shape)] + [tuple(state.tensor(k).shape) for k in self._keys]

    def initial_state(self) -> List[torch.Tensor]:
        """The state at the start of a stream: zeros."""
        return [torch.zeros(shape, device=self.streaming.device) for shape in self.state_shapes]

    def forward(
        self, window: torch.Tensor, signal_frames: torch.Tensor, *state: torch.Tensor
    ) -> Tuple[torch.Tensor, ...]:
        """``window [F S + K - S]``, ``signal_frames`` (``F``, or fewer in the last step,
        whose later frames are padding) and the state -> ``sources [F S, C]`` and the
        new state."""
        carried = self._warm.continued(dict(zip(self._keys, state[1:])))  # the S4 recurrences built once
        sources, tail = self.streaming.step(window, self.frames, carried, state[0], signal_frames)
        # contiguous state (a convolution keeps a slice of its input): the next step's
        # inputs then have the strides of the first step's, and a compiled step one graph
        return (sources, tail, *[carried.tensor(k).contiguous() for k in self._keys])


@dataclass
class StreamReport:
    """What :func:`stream_file` measured.

    Attributes
    ----------
    seconds : float
        Audio streamed.
    chunks : int
        Chunks fed to :meth:`StreamingSeparator.process`.
    compute_seconds : List[float]
        Time of each call (``process`` and the final ``flush``).
    rss_mib : List[float]
        Resident memory of the process after each 10 minutes of audio (and at the
        end), in MiB.
    """

    seconds: float = 0.0
    chunks: int = 0
    compute_seconds: List[float] = field(default_factory=list)
    rss_mib: List[float] = field(default_factory=list)

    @property
    def real_time_factor(self) -> float:
        """Compute time per second of audio."""
        return sum(self.compute_seconds) / max(self.seconds, 1e-9)


RSS_EVERY_SECONDS = 600.0  # resident memory is sampled after each 10 minutes of audio


def _rss_mib() -> float:
    return (current_rss_bytes() or 0) / 2**20


def stream_file(
    separator: "StreamingSeparator | FixedStepStream",
    path: str,
    outputs: Sequence[str],
    chunk_samples: int,
    normalize: bool = True,
) -> StreamReport:
    """Separate an audio file as a stream: read ``chunk_samples`` at a time, push each
    block through ``separator`` and write the separated samples as they come, so that
    memory stays constant for recordings of any length.

    The outputs (one per speaker, 16-bit WAV) appear only when the whole file is
    done: the samples go to temporary float files beside them, which a second pass
    copies, peak-normalised to 0.99 when ``normalize``, to the final names. Multi-
    channel files are down-mixed to mono. Raises ``ValueError`` naming ``path`` when
    the file is unreadable, empty, at another rate than the model's, or holds NaN or
    Inf samples (no output is left behind then).
    """
    import soundfile as sf

    info = audio_info(path)
    if info.num_frames == 0:
        raise ValueError(f"{path}: the file is empty (no audio samples)")
    if separator.sample_rate is not None and info.sample_rate != separator.sample_rate:
        raise ValueError(
            f"{path}: {info.sample_rate} Hz; --stream needs audio at the model's rate "
            f"({separator.sample_rate} Hz): resample the file, or separate it without --stream"
        )
    rate = info.sample_rate
    raw = [f"{out}.stream.part" for out in outputs]
    report = StreamReport()
    separator.reset()
    writers = [sf.SoundFile(p, "w", samplerate=rate, channels=1, subtype="FLOAT", format="WAV") for p in raw]
    try:
        peaks = np.zeros(len(outputs))

        def write(separated: torch.Tensor) -> None:
            block = np.asarray(separated)  # a CPU tensor, or numpy from a FixedStepStream
            if block.shape[0]:
                peaks[:] = np.maximum(peaks, np.abs(block).max(axis=0))
                for s, writer in enumerate(writers):
                    writer.write(block[:, s])

        next_rss = RSS_EVERY_SECONDS
        with sf.SoundFile(path) as audio:
            for block in audio.blocks(blocksize=chunk_samples, dtype="float32", always_2d=True):
                mono = torch.from_numpy(block.mean(axis=1))
                bad = non_finite_count(mono)
                if bad:
                    raise ValueError(
                        f"{path}: {bad} non-finite (NaN or Inf) samples in the {mono.shape[0]} from "
                        f"{report.seconds:.2f} s on; nothing was written"
                    )
                start = time.perf_counter()
                separated = separator.process(mono)
                report.compute_seconds.append(time.perf_counter() - start)
                report.chunks += 1
                report.seconds += mono.shape[0] / rate
                write(separated)
                if report.seconds >= next_rss:
                    report.rss_mib.append(_rss_mib())
                    next_rss += RSS_EVERY_SECONDS
        start = time.perf_counter()
        write(separator.flush())
        report.compute_seconds.append(time.perf_counter() - start)
        report.rss_mib.append(_rss_mib())
    except BaseException:
        for writer, part in zip(writers, raw):
            writer.close()
            os.remove(part)
        separator.reset()
        raise
    for writer in writers:
        writer.close()
    for s, (part, out) in enumerate(zip(raw, outputs)):
        scale = 0.99 / max(peaks[s], 1e-8) if normalize else 1.0
        final = f"{out}.part"
        with (
            sf.SoundFile(part) as source,
            sf.SoundFile(final, "w", samplerate=rate, channels=1, subtype="PCM_16", format="WAV") as sink,
        ):
            for block in source.blocks(blocksize=1 << 16, dtype="float32"):
                sink.write(block * scale)
        os.replace(final, out)
        os.remove(part)
    return report
