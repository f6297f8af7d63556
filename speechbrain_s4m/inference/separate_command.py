"""``s4m-separate``: separate the speakers of recordings of any length with an
exported model, in bounded memory (:class:`~speechbrain_s4m.inference.long_audio.LongAudioSeparator`),
or with ``--stream`` as a stream through a causal model, chunk by chunk in constant
memory (:class:`~speechbrain_s4m.inference.streaming.StreamingSeparator`; with ``--compile`` its
step compiled by TorchInductor first, :class:`~speechbrain_s4m.inference.compiled_runtime.
CompiledStreamingSeparator`). With ``--onnx`` the model is an ``s4m-export-onnx``
folder, run by onnxruntime: ``separator.onnx`` in the same chunks, or
``stream_step.onnx`` with ``--stream``. An ``s4m-compile`` folder as ``--model`` runs its
AOTInductor packages (:mod:`speechbrain_s4m.inference.compiled_runtime`): ``separator.pt2`` in the
same chunks, or a compiled stream step with ``--stream``, with no compiler.

Authors
 * speechbrain-s4m contributors
"""

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, List, Optional, Sequence

import numpy as np
import soundfile as sf

from speechbrain_s4m.cli import EXIT_OK, EXIT_SOME_INPUTS_FAILED, command_parser, usage_error
from speechbrain_s4m.data.audio import audio_info
from speechbrain_s4m.inference.compiled_runtime import CompiledStreamingSeparator, is_compiled_folder
from speechbrain_s4m.inference.html_report import (
    ReportEntry,
    check_report_folder,
    model_card_summary,
    plot_spectrograms,
    write_report,
)
from speechbrain_s4m.inference.long_audio import LongAudioSeparator
from speechbrain_s4m.inference.streaming import StreamingSeparator, stream_file
from speechbrain_s4m.resources import keep_freed_memory, set_torch_threads

if TYPE_CHECKING:
    from speechbrain_s4m.inference.fixed_step_stream import FixedStepStream

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


def _audio_files(inputs: Sequence[str]) -> List[str]:
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, name) for name in os.listdir(item) if name.lower().endswith(AUDIO_EXTENSIONS)
            )
            files.extend(found)
        else:
            files.append(item)
    return files


def _output_paths(out_dir: str, path: str, num_spks: int) -> List[str]:
    name = os.path.splitext(os.path.basename(path))[0]
    return [os.path.join(out_dir, f"{name}_s{s + 1}.wav") for s in range(num_spks)]


def _report_entry(out_dir: str, path: str, mix, sources, outputs: List[str], sample_rate: int) -> ReportEntry:
    """The page's entry for one separated input: the mixture copied beside the sources
    (so the folder plays wherever it is moved) and its spectrograms."""
    stem = os.path.splitext(os.path.basename(path))[0]
    mixture = os.path.join(out_dir, f"{stem}_mix.wav")
    sf.write(mixture, mix.numpy(), sample_rate, subtype="FLOAT")
    image = os.path.join(out_dir, f"{stem}_spectrograms.png")
    signals = {"mixture": mix.numpy()} | {f"source {s + 1}": sources[:, s].numpy() for s in range(sources.shape[1])}
    plot_spectrograms(signals, sample_rate, image)
    return ReportEntry(name=os.path.basename(path), mixture=mixture, sources=list(outputs), spectrogram=image)


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        prog="s4m-separate",
        description=(
            "Separate the speakers of recordings of any length with an exported model "
            "(see s4m-export). Writes <out>/<name>_s1.wav, <name>_s2.wav, ... at the "
            "model's sample rate; inputs at another rate are resampled to it and "
            "multi-channel inputs are down-mixed to mono."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders of audio files")
    parser.add_argument(
        "--model",
        required=True,
        help="exported model folder (hyperparams.yaml + *.ckpt), or an s4m-compile folder (compiled_model.json + "
        "*.pt2: run as compiled, on the CPU threads it was compiled for)",
    )
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
    parser.add_argument(
        "--stream",
        action="store_true",
        help="stream each file through a causal model (hparams/*_causal.yaml) chunk by chunk, in constant "
        "memory, as a real-time separator would; prints the algorithmic latency and the real-time factor. "
        "Inputs must be at the model's sample rate",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="--model is an s4m-export-onnx folder, run by onnxruntime: each file goes through its "
        "separator.onnx in chunks as without --onnx, or with --stream through its stream_step.onnx",
    )
    parser.add_argument(
        "--chunk-ms", type=float, default=16.0, help="with --stream: milliseconds of audio per chunk (default 16)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="with --stream: compile the stream step (whole blocks nearest to --chunk-ms) with TorchInductor "
        "first (minutes for a full-size model; needs a C++ compiler), for real-time speed on the CPU; "
        "its latency is that of a step. s4m-compile builds the same step once, into a folder to pass as --model",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write OUT/index.html: audio players for each mixture (copied as <name>_mix.wav) and its "
        "separated sources, spectrograms and the model card summary (opens offline)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (they are shown only when stderr is a terminal)",
    )
    return parser


class FileProgress:
    """A tqdm bar over one file's audio, in seconds, with the real-time factor
    (processing seconds per second of audio) in its postfix; a callback for
    :meth:`~speechbrain_s4m.inference.long_audio.LongAudioSeparator.separate_file`.

    Example
    -------
    >>> with FileProgress("x.wav", seconds=2.0, sample_rate=8000, enabled=False) as progress:
    ...     progress(8000)
    ...     progress(8000)
    >>> progress.seconds_done
    2.0
    """

    def __init__(self, name: str, seconds: float, sample_rate: int, enabled: bool):
        from tqdm import tqdm

        self.sample_rate = sample_rate
        self.seconds_done = 0.0
        self.start = time.perf_counter()
        self.bar = tqdm(
            total=seconds,
            desc=name,
            unit="s",
            unit_scale=False,
            leave=False,
            disable=not enabled,
            file=sys.stderr,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}{postfix}]",
        )

    def __call__(self, samples: int) -> None:
        self.seconds_done += samples / self.sample_rate
        self.bar.update(samples / self.sample_rate)
        if self.seconds_done > 0:
            rtf = (time.perf_counter() - self.start) / self.seconds_done
            self.bar.set_postfix_str(f"RTF {rtf:.3f}")

    def __enter__(self) -> "FileProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def show_progress(quiet: bool, stream=None) -> bool:
    """Progress bars only for a person watching: not with ``--quiet``, and not when
    stderr is redirected to a file or a pipe (logs stay clean)."""
    stream = sys.stderr if stream is None else stream
    return not quiet and hasattr(stream, "isatty") and stream.isatty()


def _stream_one(
    separator: "StreamingSeparator | FixedStepStream", path: str, outputs: List[str], args: argparse.Namespace
) -> bool:
    """Stream one file; print its summary line (or its error line) and say whether it
    was separated."""
    chunk = max(1, int(round(args.chunk_ms * separator.sample_rate / 1000)))
    try:
        channels = audio_info(path).channels
        if channels > 1:
            print(f"{path}: {channels} channels, down-mixed to mono", file=sys.stderr)
        report = stream_file(separator, path, outputs, chunk, normalize=args.normalize)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"{path}: {error}", file=sys.stderr)
        return False
    latency = separator.latency_samples
    memory = ", ".join(f"{m:.0f}" for m in report.rss_mib)
    per_chunk = np.asarray(report.compute_seconds[:-1] or report.compute_seconds) * 1000  # the flush left out
    print(
        f"{path}: streamed {report.seconds:.1f} s in {report.chunks} chunks of {args.chunk_ms:g} ms; "
        f"algorithmic latency {latency} samples ({1000 * separator.latency_seconds:.1f} ms); "
        f"compute per chunk median {np.median(per_chunk):.2f} ms, p99 {np.percentile(per_chunk, 99):.2f} ms; "
        f"real-time factor {report.real_time_factor:.3f}; resident memory (MiB, every 10 min of audio "
        f"and at the end): {memory}"
    )
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``s4m-separate``; returns the exit status."""
    args = build_parser().parse_args(argv)
    # Long chunks make activations over 32 MiB, which glibc would return to the OS
    # and fault back in on every use (super-linear time); keep them for reuse.
    keep_freed_memory()
    files = _audio_files(args.inputs)
    if not files:
        return usage_error("s4m-separate", "no audio files found in the inputs")
    if args.stream and args.report:
        return usage_error("s4m-separate", "--report needs whole recordings in memory; use it without --stream")
    if args.chunk_ms <= 0:
        return usage_error("s4m-separate", f"--chunk-ms must be positive, got {args.chunk_ms:g}")
    if args.compile and (not args.stream or args.onnx or args.device != "cpu"):
        return usage_error(
            "s4m-separate", "--compile compiles the PyTorch stream on the CPU: use it with --stream alone"
        )
    compiled = is_compiled_folder(args.model)
    if compiled and (args.onnx or args.compile or args.device != "cpu"):
        return usage_error(
            "s4m-separate",
            f"{args.model} is an s4m-compile folder, already compiled for the CPU: use it without --onnx, "
            "--compile and --device",
        )
    try:
        chunks = {"chunk_seconds": args.chunk_seconds, "overlap_seconds": args.overlap_seconds}
        if compiled:
            start = time.perf_counter()
            separator = (
                CompiledStreamingSeparator(args.model, args.chunk_ms)
                if args.stream
                else LongAudioSeparator.from_compiled(args.model, **chunks)
            )
            threads = separator.threads if args.stream else separator.separator.threads
            set_torch_threads(threads)  # the packages' kernels are written for it
            print(f"loaded {args.model} in {time.perf_counter() - start:.1f} s; {threads} thread(s)", file=sys.stderr)
        elif args.onnx and args.stream:
            from speechbrain_s4m.inference.onnx_runtime import OnnxStreamingSeparator

            separator = OnnxStreamingSeparator(args.model)
        elif args.onnx:
            separator = LongAudioSeparator.from_onnx(args.model, **chunks)
        elif args.stream and args.compile:
            from speechbrain_s4m.export.compiled_packages import compile_stream

            separator = compile_stream(StreamingSeparator.from_folder(args.model), args.chunk_ms)
            print(
                f"compiled the stream step of {separator.hop_samples} samples in {separator.compile_seconds:.0f} s "
                f"(s4m-compile {args.model} OUT_DIR compiles it once, for --model OUT_DIR)",
                file=sys.stderr,
            )
        elif args.stream:
            separator = StreamingSeparator.from_folder(args.model, device=args.device)
        else:
            separator = LongAudioSeparator.from_folder(args.model, device=args.device, **chunks)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        return usage_error("s4m-separate", error)
    num_spks = separator.num_spks
    if args.report:
        try:
            check_report_folder(args.out, args.force)  # before anything is written
        except FileExistsError as error:
            return usage_error("s4m-separate", error)
    os.makedirs(args.out, exist_ok=True)
    entries: List[ReportEntry] = []

    from tqdm import tqdm

    show = show_progress(args.quiet)
    failures = 0
    for path in tqdm(files, desc="separating", unit="file", disable=not show or len(files) < 2, file=sys.stderr):
        outputs = _output_paths(args.out, path, num_spks)
        existing = [p for p in outputs if os.path.exists(p)]
        if existing and not args.force:
            print(
                f"{path}: skipped, {existing[0]} already exists (use --force to overwrite)",
                file=sys.stderr,
            )
            failures += 1
            continue
        if args.stream:
            failures += not _stream_one(separator, path, outputs, args)
            continue
        try:
            channels = audio_info(path).channels
            if channels > 1:
                print(f"{path}: {channels} channels, down-mixed to mono", file=sys.stderr)
            mix = separator.load(path)  # [time] at the model's rate
            seconds = mix.shape[0] / separator.sample_rate  # the bar's total
            with FileProgress(os.path.basename(path), seconds, separator.sample_rate, show) as progress:
                sources = separator.separate_loaded(mix, progress)  # [time, spks]
        except (FileNotFoundError, ValueError) as error:
            print(f"{path}: {error}", file=sys.stderr)
            failures += 1
            continue
        if args.normalize:
            sources = 0.99 * sources / sources.abs().amax(dim=0).clamp_min(1e-8)
        for s, out_path in enumerate(outputs):
            sf.write(out_path, sources[:, s].numpy(), separator.sample_rate, subtype="PCM_16")
        if args.report:
            entries.append(_report_entry(args.out, path, mix, sources, outputs, separator.sample_rate))
    if args.report:
        card = model_card_summary(args.model)
        title = f"s4m-separate: {os.path.basename(os.path.abspath(args.model))}"
        page = write_report(args.out, title, entries, card, force=True)  # checked before separating
        print(f"report: {page}", file=sys.stderr)
    if failures:
        print(f"s4m-separate: {failures} of {len(files)} input(s) failed", file=sys.stderr)
        return EXIT_SOME_INPUTS_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
