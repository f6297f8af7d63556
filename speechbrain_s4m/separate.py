"""Separate real recordings of any length, in bounded memory, and the ``s4m-separate``
command-line tool.

Long recordings are separated chunk by chunk with overlap-add. Separators trained
with permutation-invariant losses may output the speakers in a different order (and
at a different scale) in each chunk, so every chunk is aligned to what is already
separated before it is added: the speaker order (and per-speaker gain) that best
matches the previous output on the overlap is chosen, then the overlap is
cross-faded.

Authors
 * speechbrain-s4m contributors
"""

import argparse
import itertools
import logging
import os
import sys
import tempfile
from typing import Callable, List, Optional, Sequence

import soundfile as sf
import torch

from speechbrain_s4m.data.audio import audio_info, read_audio, resample
from speechbrain_s4m.resources import keep_freed_memory

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
SeparateBatch = Callable[[torch.Tensor], torch.Tensor]  # [batch, time] -> [batch, time, spks]


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
) -> torch.Tensor:
    """Separate a long mixture chunk by chunk, with aligned overlap-add.

    Arguments
    ---------
    separate_batch : callable
        ``[1, time] -> [1, time, spks]`` (e.g. ``SepformerSeparation.separate_batch``).
    mix : torch.Tensor
        ``[time]``, mono.
    chunk_samples : int
        Length of each chunk; the whole mixture is separated at once when it is not
        longer than this.
    overlap_samples : int
        Overlap between consecutive chunks (``0 < overlap < chunk``).

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
    if T <= chunk_samples:
        return separate_batch(mix[None])[0].float().cpu()

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
            written = stop
            continue
        overlap = written - start  # >= overlap_samples except maybe the last chunk
        estimate = align_to_previous(output[start:written], estimate)
        fade = torch.linspace(0.0, 1.0, overlap + 2)[1:-1, None]  # [overlap, 1]
        output[start:written] = output[start:written] * (1 - fade) + estimate[:overlap] * fade
        output[written:stop] = estimate[overlap:]
        written = stop
    return output


class LongAudioSeparator:
    """Separate tensors or files of any length with a SpeechBrain separator, in
    bounded memory, for batch jobs.

    Arguments
    ---------
    separator : speechbrain.inference.separation.SepformerSeparation
        A loaded separator (``SepformerSeparation.from_hparams(source=DIR, ...)``);
        anything with ``separate_batch`` and ``hparams.sample_rate`` works.
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
        self.sample_rate = int(separator.hparams.sample_rate)
        self.chunk_samples = int(round(chunk_seconds * self.sample_rate))
        self.overlap_samples = int(round(overlap_seconds * self.sample_rate))
        if not 0 < self.overlap_samples < self.chunk_samples:
            raise ValueError(
                f"LongAudioSeparator: expected 0 < overlap_seconds < chunk_seconds, got "
                f"overlap_seconds={overlap_seconds}, chunk_seconds={chunk_seconds}"
            )
        self.min_samples = encoder_kernel_size(separator.mods.encoder)

    @classmethod
    def from_folder(
        cls, model_dir: str, savedir: Optional[str] = None, device: str = "cpu", **kwargs
    ) -> "LongAudioSeparator":
        """Load an exported model folder with SpeechBrain's ``SepformerSeparation``."""
        from speechbrain.inference.separation import SepformerSeparation

        if not os.path.isfile(os.path.join(model_dir, "hyperparams.yaml")):
            raise FileNotFoundError(
                f"{model_dir} is not a model folder: expected hyperparams.yaml, "
                "encoder.ckpt, masknet.ckpt and decoder.ckpt there (see s4m-export)"
            )
        savedir = savedir or tempfile.mkdtemp(prefix="s4m-model-")
        separator = SepformerSeparation.from_hparams(
            source=os.path.abspath(model_dir), savedir=savedir, run_opts={"device": device}
        )
        return cls(separator, **kwargs)

    def separate_tensor(self, mix: torch.Tensor) -> torch.Tensor:
        """``[time]`` (or ``[1, time]``) at the model's sample rate -> ``[time, spks]``."""
        if mix.dim() == 2 and mix.shape[0] == 1:
            mix = mix[0]
        if mix.dim() != 1:
            raise ValueError(
                f"LongAudioSeparator: expected a mono mixture [time] or [1, time], got "
                f"{tuple(mix.shape)}"
            )
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
        with torch.inference_mode():
            return separate_in_chunks(
                self.separator.separate_batch, mix, self.chunk_samples, self.overlap_samples
            )

    def separate_file(self, path: str) -> torch.Tensor:
        """Read, down-mix to mono, resample to the model's rate and separate a file.

        Returns ``[time, spks]`` at the model's sample rate. Raises ``ValueError``
        naming the file when it is unreadable, empty, shorter than the encoder kernel or
        holds non-finite (NaN or Inf) samples.
        """
        mix = self.load(path)
        return self.separate_tensor(mix)

    def load(self, path: str) -> torch.Tensor:
        """The mono mixture at the model's sample rate, with checks naming ``path``."""
        info = audio_info(path)
        if info.num_frames == 0:
            raise ValueError(f"{path}: the file is empty (no audio samples)")
        mix, rate = read_audio(path)
        bad = non_finite_count(mix)
        if bad:  # before resampling, which would spread them
            raise ValueError(
                f"{path}: {bad} of {mix.shape[0]} samples are not finite (NaN or Inf); "
                f"nothing was separated"
            )
        if rate != self.sample_rate:
            mix = resample(mix, rate, self.sample_rate)
        if mix.shape[0] < self.min_samples:
            raise ValueError(
                f"{path}: {info.num_frames} samples at {rate} Hz is shorter than the "
                f"encoder kernel ({self.min_samples} samples at {self.sample_rate} Hz)"
            )
        return mix


def non_finite_count(signal: torch.Tensor) -> int:
    """Number of NaN or infinite samples in ``signal``.

    Example
    -------
    >>> non_finite_count(torch.tensor([0.0, float("nan"), 1.0, float("inf")]))
    2
    """
    return int((~torch.isfinite(signal)).sum())


def encoder_kernel_size(encoder: torch.nn.Module) -> int:
    """Kernel size of the first Conv1d of an encoder (ours or SpeechBrain's)."""
    for module in encoder.modules():
        if isinstance(module, torch.nn.Conv1d):
            return int(module.kernel_size[0])
    raise ValueError(f"encoder {type(encoder).__name__} has no Conv1d layer")


def _audio_files(inputs: Sequence[str]) -> List[str]:
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, name)
                for name in os.listdir(item)
                if name.lower().endswith(AUDIO_EXTENSIONS)
            )
            files.extend(found)
        else:
            files.append(item)
    return files


def _output_paths(out_dir: str, path: str, num_spks: int) -> List[str]:
    name = os.path.splitext(os.path.basename(path))[0]
    return [os.path.join(out_dir, f"{name}_s{s + 1}.wav") for s in range(num_spks)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s4m-separate",
        description=(
            "Separate the speakers of recordings of any length with an exported model "
            "(see s4m-export). Writes <out>/<name>_s1.wav, <name>_s2.wav, ... at the "
            "model's sample rate; inputs at another rate are resampled to it and "
            "multi-channel inputs are down-mixed to mono."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders of audio files")
    parser.add_argument("--model", required=True, help="exported model folder (hyperparams.yaml + *.ckpt)")
    parser.add_argument("--out", required=True, help="output folder (created if needed)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_false",
        help="do not peak-normalise the outputs (by default each track is scaled to a peak of 0.99)",
    )
    parser.add_argument("--chunk-seconds", type=float, default=10.0, help="chunk length (default 10 s)")
    parser.add_argument("--overlap-seconds", type=float, default=2.0, help="chunk overlap (default 2 s)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``s4m-separate``; returns the exit status."""
    args = build_parser().parse_args(argv)
    # Long chunks make activations over 32 MiB, which glibc would return to the OS
    # and fault back in on every use (super-linear time); keep them for reuse.
    keep_freed_memory()
    files = _audio_files(args.inputs)
    if not files:
        print("s4m-separate: no audio files found in the inputs", file=sys.stderr)
        return 2
    try:
        separator = LongAudioSeparator.from_folder(
            args.model,
            device=args.device,
            chunk_seconds=args.chunk_seconds,
            overlap_seconds=args.overlap_seconds,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"s4m-separate: {error}", file=sys.stderr)
        return 2
    num_spks = int(separator.separator.hparams.num_spks)
    os.makedirs(args.out, exist_ok=True)

    from tqdm import tqdm

    failures = 0
    for path in tqdm(files, desc="separating", unit="file", disable=len(files) < 2):
        outputs = _output_paths(args.out, path, num_spks)
        existing = [p for p in outputs if os.path.exists(p)]
        if existing and not args.force:
            print(
                f"{path}: skipped, {existing[0]} already exists (use --force to overwrite)",
                file=sys.stderr,
            )
            failures += 1
            continue
        try:
            channels = audio_info(path).channels
            if channels > 1:
                print(f"{path}: {channels} channels, down-mixed to mono", file=sys.stderr)
            sources = separator.separate_file(path)  # [time, spks]
        except (FileNotFoundError, ValueError) as error:
            print(f"{path}: {error}", file=sys.stderr)
            failures += 1
            continue
        if args.normalize:
            sources = 0.99 * sources / sources.abs().amax(dim=0).clamp_min(1e-8)
        for s, out_path in enumerate(outputs):
            sf.write(out_path, sources[:, s].numpy(), separator.sample_rate, subtype="PCM_16")
    if failures:
        print(f"s4m-separate: {failures} of {len(files)} input(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
