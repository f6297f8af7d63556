"""Separate recordings of any length in bounded memory: chunked overlap-add with
speaker alignment, and :class:`LongAudioSeparator` for tensors and files.

Long recordings are separated chunk by chunk with overlap-add. Separators trained
with permutation-invariant losses may output the speakers in a different order (and
at a different scale) in each chunk, so every chunk is aligned to what is already
separated before it is added: the speaker order (and per-speaker gain) that best
matches the previous output on the overlap is chosen, then the overlap is
cross-faded. The Brain evaluates long test mixtures the same way, and
``s4m-separate`` (:mod:`speechbrain_s4m.inference.separate_command`) is the command line over it.

Authors
 * speechbrain-s4m contributors
"""

import itertools
from typing import Callable, Optional

import torch

from speechbrain_s4m.data.audio import audio_info, non_finite_count, read_audio, resample
from speechbrain_s4m.lobes.encoder_masker_decoder import EncoderMaskerDecoder, encoder_kernel_size

SeparateBatch = Callable[[torch.Tensor], torch.Tensor]  # [batch, time] -> [batch, time, spks]
Progress = Callable[[int], None]  # samples of the mixture completed by the last chunk


def align_to_previous(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Reorder and rescale the speakers of ``current`` to match ``previous``.

    Arguments
    ---------
    previous : torch.Tensor
        ``[overlap, spks]``: the output already written on the overlap.
    current : torch.Tensor
        ``[time, spks]``: the new chunk, whose first ``overlap`` samples cover the
        same audio as ``previous``.

    Returns
    -------
    torch.Tensor
        ``current`` with its speakers permuted to maximise the summed normalised
        correlation with ``previous`` on the overlap, each scaled by the
        least-squares gain on the overlap (kept in ``[0.1, 10]``; 1 when silent).

    Example
    -------
    >>> previous = torch.stack([torch.sin(torch.arange(100.)), torch.cos(torch.arange(100.) / 3)], -1)
    >>> current = 2 * previous.flip(-1)  # swapped and louder
    >>> torch.allclose(align_to_previous(previous, current), previous, atol=1e-5)
    True
    """
    overlap, spks = previous.shape
    head = current[:overlap]
    norms = previous.norm(dim=0)[:, None] * head.norm(dim=0)[None, :] + 1e-8
    similarity = (previous.T @ head) / norms  # [spks (previous), spks (current)]
    best = max(
        itertools.permutations(range(spks)),
        key=lambda perm: sum(float(similarity[s, p]) for s, p in enumerate(perm)),
    )
    current = current[:, list(best)]
    head = current[:overlap]
    energy = head.pow(2).sum(dim=0)
    gain = (previous * head).sum(dim=0) / energy.clamp_min(1e-12)
    silent = (energy < 1e-10) | (previous.pow(2).sum(dim=0) < 1e-10)
    gain = torch.where(silent, torch.ones_like(gain), gain.clamp(0.1, 10.0))
    return current * gain


def separate_in_chunks(
    separate_batch: SeparateBatch,
    mix: torch.Tensor,
    chunk_samples: int,
    overlap_samples: int,
    progress: Optional[Progress] = None,
) -> torch.Tensor:
    """Separate a long mixture chunk by chunk, with aligned overlap-add.

    Arguments
    ---------
    separate_batch : callable
        ``[1, time] -> [1, time, spks]`` (e.g. an
        :class:`~speechbrain_s4m.lobes.encoder_masker_decoder.EncoderMaskerDecoder`).
    mix : torch.Tensor
        ``[time]``, mono.
    chunk_samples : int
        Length of each chunk; the whole mixture is separated at once when it is not
        longer than this.
    overlap_samples : int
        Overlap between consecutive chunks (``0 < overlap < chunk``).
    progress : callable, optional
        Called after each chunk with the number of samples of ``mix`` it completed
        (they add up to ``time``), e.g. to update a progress bar.

    Returns
    -------
    torch.Tensor
        ``[time, spks]`` on the CPU; memory grows with the output only, not with the
        model's activations.

    Example
    -------
    >>> halves = lambda mix: torch.stack([mix / 2, mix / 2], dim=-1)  # [1, T] -> [1, T, 2]
    >>> separate_in_chunks(halves, torch.randn(1000), chunk_samples=400, overlap_samples=100).shape
    torch.Size([1000, 2])
    """
    if mix.dim() != 1:
        raise ValueError(f"separate_in_chunks: expected a mono mixture [time], got {tuple(mix.shape)}")
    if not 0 < overlap_samples < chunk_samples:
        raise ValueError(
            f"separate_in_chunks: expected 0 < overlap_samples < chunk_samples, got "
            f"overlap_samples={overlap_samples}, chunk_samples={chunk_samples}"
        )
    T = mix.shape[0]
    report = progress or (lambda samples: None)
    if T <= chunk_samples:
        output = separate_batch(mix[None])[0].float().cpu()
        report(T)
        return output

    hop = chunk_samples - overlap_samples
    starts = list(range(0, T - overlap_samples, hop))
    # The last chunk ends at T; start it earlier if that keeps it full length.
    starts[-1] = max(min(starts[-1], T - chunk_samples), 0)
    output: Optional[torch.Tensor] = None
    written = 0  # samples of `output` that are final or hold a previous chunk
    for start in starts:
        stop = min(start + chunk_samples, T)
        estimate = separate_batch(mix[None, start:stop])[0].float().cpu()  # [chunk, spks]
        if output is None:
            output = torch.zeros(T, estimate.shape[-1])
            output[:stop] = estimate
        else:
            overlap = written - start  # >= overlap_samples except maybe the last chunk
            estimate = align_to_previous(output[start:written], estimate)
            fade = torch.linspace(0.0, 1.0, overlap + 2)[1:-1, None]  # [overlap, 1]
            output[start:written] = output[start:written] * (1 - fade) + estimate[:overlap] * fade
            output[written:stop] = estimate[overlap:]
        report(stop - written)
        written = stop
    return output


class LongAudioSeparator:
    """Separate tensors or files of any length with a SpeechBrain separator, in
    bounded memory, for batch jobs.

    Arguments
    ---------
    separator : speechbrain.inference.separation.SepformerSeparation
        A loaded separator (``SepformerSeparation.from_hparams(source=DIR, ...)``);
        anything with ``mods.encoder``, ``mods.masknet``, ``mods.decoder``, ``device``
        and ``hparams.sample_rate`` works. Chunks go through
        :class:`~speechbrain_s4m.lobes.encoder_masker_decoder.EncoderMaskerDecoder` over those modules.
        An :class:`~speechbrain_s4m.inference.onnx_runtime.OnnxSeparator` works too
        (:meth:`from_onnx`): chunks then go through its ``separator.onnx``; and a
        :class:`~speechbrain_s4m.inference.compiled_runtime.CompiledSeparator`
        (:meth:`from_compiled`), through its ``separator.pt2``.
    chunk_seconds : float
        Chunk length; recordings up to this long are separated in one pass.
    overlap_seconds : float
        Overlap between chunks, used to keep each speaker on the same output track.

    Example
    -------
    >>> from speechbrain.inference.separation import SepformerSeparation
    >>> from speechbrain.lobes.models.dual_path import Decoder
    >>> from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder
    >>> modules = {
    ...     "encoder": WaveformEncoder(32),
    ...     "masknet": S4MMaskNet(17, hidden_channels=16, num_blocks=1),
    ...     "decoder": Decoder(17, 1, 32, stride=8, bias=False),
    ... }
    >>> model = SepformerSeparation(modules, {"sample_rate": 8000, "num_spks": 2})
    >>> separator = LongAudioSeparator(model, chunk_seconds=1.0, overlap_seconds=0.25)
    >>> separator.separate_tensor(torch.randn(20000)).shape  # 2.5 s in 3 chunks
    torch.Size([20000, 2])

    An exported model folder loads with ``LongAudioSeparator.from_folder(DIR)``.
    """

    def __init__(self, separator, chunk_seconds: float = 10.0, overlap_seconds: float = 2.0):
        self.separator = separator
        if hasattr(separator, "mods"):  # SpeechBrain's
            mods = separator.mods
            self.sample_rate, self.num_spks = int(separator.hparams.sample_rate), int(separator.hparams.num_spks)
            self.model = EncoderMaskerDecoder(mods.encoder, mods.masknet, mods.decoder).eval()
            self.device, self.min_samples = torch.device(separator.device), encoder_kernel_size(mods.encoder)
        else:  # an OnnxSeparator or a CompiledSeparator: numpy in and out, on the CPU
            self.sample_rate, self.num_spks = separator.sample_rate, separator.num_spks
            self.model = lambda chunk: torch.from_numpy(separator.separate_batch(chunk.numpy()))
            self.device, self.min_samples = torch.device("cpu"), separator.min_samples
        self.chunk_samples = int(round(chunk_seconds * self.sample_rate))
        self.overlap_samples = int(round(overlap_seconds * self.sample_rate))
        if not 0 < self.overlap_samples < self.chunk_samples:
            raise ValueError(
                f"LongAudioSeparator: expected 0 < overlap_seconds < chunk_seconds, got "
                f"overlap_seconds={overlap_seconds}, chunk_seconds={chunk_seconds}"
            )

    @classmethod
    def from_folder(
        cls, model_dir: str, savedir: Optional[str] = None, device: str = "cpu", **kwargs
    ) -> "LongAudioSeparator":
        """Load an exported model folder with SpeechBrain's ``SepformerSeparation``."""
        from speechbrain_s4m.inference.model_folder import load_exported

        separator = load_exported(model_dir, savedir=savedir, device=device)
        return cls(separator, **kwargs)

    @classmethod
    def from_onnx(cls, onnx_dir: str, threads: Optional[int] = None, **kwargs) -> "LongAudioSeparator":
        """Separate with the ``separator.onnx`` of an ``s4m-export-onnx`` folder through
        onnxruntime (:class:`~speechbrain_s4m.inference.onnx_runtime.OnnxSeparator`), in the
        same chunks."""
        from speechbrain_s4m.inference.onnx_runtime import OnnxSeparator

        return cls(OnnxSeparator(onnx_dir, threads), **kwargs)

    @classmethod
    def from_compiled(cls, compiled_dir: str, **kwargs) -> "LongAudioSeparator":
        """Separate with the ``separator.pt2`` of an ``s4m-compile`` folder
        (:class:`~speechbrain_s4m.inference.compiled_runtime.CompiledSeparator`), in the same
        chunks."""
        from speechbrain_s4m.inference.compiled_runtime import CompiledSeparator

        return cls(CompiledSeparator(compiled_dir), **kwargs)

    def separate_tensor(self, mix: torch.Tensor, progress: Optional[Progress] = None) -> torch.Tensor:
        """``[time]`` (or ``[1, time]``) at the model's sample rate -> ``[time, spks]``;
        ``progress`` as in :func:`separate_in_chunks`."""
        if mix.dim() == 2 and mix.shape[0] == 1:
            mix = mix[0]
        if mix.dim() != 1:
            raise ValueError(f"LongAudioSeparator: expected a mono mixture [time] or [1, time], got {tuple(mix.shape)}")
        if mix.shape[0] < self.min_samples:
            raise ValueError(
                f"LongAudioSeparator: {mix.shape[0]} samples is shorter than the encoder "
                f"kernel ({self.min_samples} samples)"
            )
        bad = non_finite_count(mix)
        if bad:
            raise ValueError(
                f"LongAudioSeparator: {bad} of {mix.shape[0]} samples are not finite (NaN or "
                f"Inf); expected finite audio"
            )
        return self.separate_loaded(mix, progress)

    def separate_loaded(self, mix: torch.Tensor, progress: Optional[Progress] = None) -> torch.Tensor:
        """A mixture returned by :meth:`load` (already checked) -> ``[time, spks]`` on
        the CPU; ``progress`` as in :func:`separate_in_chunks`."""
        with torch.inference_mode():
            return separate_in_chunks(
                lambda chunk: self.model(chunk.to(self.device)),
                mix,
                self.chunk_samples,
                self.overlap_samples,
                progress,
            )

    def separate_file(self, path: str, progress: Optional[Progress] = None) -> torch.Tensor:
        """Read, down-mix to mono, resample to the model's rate and separate a file.

        Returns ``[time, spks]`` at the model's sample rate; ``progress`` gets the
        samples (at the model's rate) each chunk completed. Raises ``ValueError``
        naming the file when it is unreadable, empty, shorter than the encoder kernel or
        holds non-finite (NaN or Inf) samples.
        """
        return self.separate_loaded(self.load(path), progress)

    def load(self, path: str) -> torch.Tensor:
        """The mono mixture at the model's sample rate, with checks naming ``path``."""
        info = audio_info(path)
        if info.num_frames == 0:
            raise ValueError(f"{path}: the file is empty (no audio samples)")
        mix, rate = read_audio(path)
        bad = non_finite_count(mix)
        if bad:  # before resampling, which would spread them
            raise ValueError(
                f"{path}: {bad} of {mix.shape[0]} samples are not finite (NaN or Inf); nothing was separated"
            )
        if rate != self.sample_rate:
            mix = resample(mix, rate, self.sample_rate)
        if mix.shape[0] < self.min_samples:
            raise ValueError(
                f"{path}: {info.num_frames} samples at {rate} Hz is shorter than the "
                f"encoder kernel ({self.min_samples} samples at {self.sample_rate} Hz)"
            )
        return mix
