"""Compile a trained S4M / S4M-tiny once, ahead of time, for the CPU: ``s4m-compile``.

``s4m-compile MODEL_DIR OUT_DIR`` reads an ``s4m-export`` folder and writes
AOTInductor packages, machine code that :mod:`speechbrain_s4m.inference.compiled_runtime` loads
in a second with no compiler:

* ``separator.pt2``: the offline separation of one mixture, ``(mixture [1, T],
  signal_frames) -> sources [1, T, C]``, for any ``T`` of whole blocks of encoder frames
  (the runner pads the last chunk of a recording to whole blocks and says how many
  frames hold the signal, as the ONNX runner does). It is the graph ``separator.onnx``
  is traced from (:class:`~speechbrain_s4m.export.onnx_graphs.SeparatorGraph`: the lobes with
  their S4 layers scanned, real arithmetic only);
* for a causal model, ``stream_step_8ms.pt2`` and ``stream_step_16ms.pt2``: the stream
  step (:class:`~speechbrain_s4m.inference.streaming.StreamStep`, the function
  ``stream_step.onnx`` is traced from) over the whole blocks nearest to 8 and 16 ms;
* ``compiled_model.json``: sample rate, speakers, the model folder it came from, what
  it was built for (torch version, CPU instruction set, architecture, threads), and per
  package its file, geometry, compile time and parity figures.

Every package goes through the lowering of :mod:`speechbrain_s4m.export.inductor_lowering`
(:func:`~speechbrain_s4m.export.inductor_lowering.compile_package`: the lobes' operators
decomposed, frozen and shared weights, layer norms as moments). Before anything is
written, each package is run on a check signal against PyTorch, as ``s4m-export-onnx``
checks its graphs (:mod:`speechbrain_s4m.export.graph_folder`): on a difference over ``1e-4``
of the peak it refuses, exits 1 and writes nothing. Existing packages are kept unless
``--force``.

Compiling needs a C++ compiler and takes minutes for a full-size model.

Legend: ``T`` samples, ``C`` speakers.

Authors
 * speechbrain-s4m contributors
"""

import os
import sys
import tempfile
import time
from functools import partial
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from speechbrain_s4m.cli import command_parser, usage_error
from speechbrain_s4m.export.graph_folder import (
    FolderFormat,
    ParityCheck,
    ParityError,
    Tracer,
    check_signal,
    offline_parity,
    refuse_to_replace,
    stream_parity,
    write_graphs,
)
from speechbrain_s4m.export.inductor_lowering import compile_package, require_compiler
from speechbrain_s4m.export.onnx_graphs import SeparatorGraph
from speechbrain_s4m.export.speechbrain_folder import load_for_export
from speechbrain_s4m.inference.compiled_runtime import (
    FORMAT,
    METADATA,
    OFFLINE,
    STREAM_SECTION,
    CompiledSeparator,
    CompiledStreamingSeparator,
    build_stamp,
)
from speechbrain_s4m.inference.model_folder import require_model_folder, require_s4m
from speechbrain_s4m.inference.streaming import StreamingSeparator, StreamStep
from speechbrain_s4m.lobes.encoder_masker_decoder import EncoderMaskerDecoder
from speechbrain_s4m.lobes.s4_recurrence import MAX_CHUNK
from speechbrain_s4m.resources import set_torch_threads

DEFAULT_STEPS_MS = (8.0, 16.0)
OFFLINE_FILE = "separator.pt2"
STREAM_FILE = "stream_step_{:g}ms.pt2"


def compiled_folder_format() -> FolderFormat:
    """The folder of ``s4m-compile``, stamped with what this machine builds for."""
    return FolderFormat(
        metadata_file=METADATA,
        header={"format": FORMAT, "built_for": build_stamp()},
        graph_files=(OFFLINE_FILE, "stream_step_*ms.pt2"),
        staging_prefix=".compile-",
    )


def compile_separator(model: EncoderMaskerDecoder, directory: str) -> Dict[str, object]:
    """Write ``directory/separator.pt2`` (:class:`SeparatorGraph` of ``model`` for one
    mixture of any whole number of blocks) and return its section of the metadata."""
    graph = SeparatorGraph(model).eval()
    P, S, K = graph.block_frames, graph.stride, graph.kernel
    blocks = torch.export.Dim("blocks", min=1, max=graph.max_frames // P)
    example_frames = (2 * MAX_CHUNK + 3) * P  # several scan chunks: no chunk count fixed to 1
    example = (torch.zeros(1, (example_frames - 1) * S + K), torch.tensor(example_frames - 3))
    start = time.perf_counter()
    compile_package(graph, example, os.path.join(directory, OFFLINE_FILE), ({1: P * S * blocks + K - S}, None))
    return {
        "file": OFFLINE_FILE,
        "inputs": ["mixture", "signal_frames"],
        "encoder_kernel": K,
        "encoder_stride": S,
        "block_frames": P,
        "max_frames": graph.max_frames,
        "compile_seconds": round(time.perf_counter() - start, 1),
    }


def compile_stream_step(streaming: StreamingSeparator, step_ms: float, directory: str) -> Dict[str, object]:
    """Write ``directory/stream_step_<step_ms>ms.pt2`` (:class:`StreamStep` over the
    whole blocks nearest to ``step_ms``) and return its section of the metadata."""
    step = StreamStep(streaming, streaming.step_blocks(step_ms)).eval()
    inputs = (torch.zeros(step.window_samples), torch.tensor(step.frames), *step.initial_state())
    name = STREAM_FILE.format(step_ms)
    start = time.perf_counter()
    compile_package(step, inputs, os.path.join(directory, name))
    return {
        "file": name,
        "frames": step.frames,
        "hop_samples": step.hop_samples,
        "window_samples": step.window_samples,
        "encoder_kernel": streaming.kernel,
        "encoder_stride": streaming.stride,
        "latency_samples": step.window_samples - 1,  # a step waits for its whole window
        "state": [{"name": n, "shape": list(shape)} for n, shape in zip(step.state_names, step.state_shapes)],
        "compile_seconds": round(time.perf_counter() - start, 1),
    }


def compile_model(
    model: EncoderMaskerDecoder,
    sample_rate: int,
    out_dir: str,
    steps_ms: Sequence[float] = DEFAULT_STEPS_MS,
    offline: bool = True,
    check_mix: Optional[np.ndarray] = None,
    source_model: Optional[str] = None,
) -> Dict[str, Dict[str, float]]:
    """The packages of an S4M / S4M-tiny ``model`` (the offline separator unless
    ``offline`` is False, and for a causal model a stream step per ``steps_ms``), each
    checked against PyTorch on ``check_mix`` (default: a synthetic 7.3 s) before
    anything is written to ``out_dir``. Returns the parity figures by section.

    Raises
    ------
    ValueError
        When the mask network is not an S4MMaskNet, or nothing would be compiled.
    ParityError
        When a package differs from PyTorch (``out_dir`` is then left as it was).
    """
    require_s4m(
        model.masknet,
        "s4m-compile",
        "Its packages are the graphs s4m-export-onnx exports, S4M's, compiled.",
    )
    require_compiler()
    model = model.eval()
    mix = check_signal(sample_rate) if check_mix is None else np.asarray(check_mix, dtype=np.float32)
    graphs: Dict[str, Tuple[Tracer, ParityCheck]] = {}
    if offline:
        graphs[OFFLINE] = (partial(compile_separator, model), partial(_offline_check, model=model, mix=mix))
    causal = bool(getattr(model.masknet, "causal", False))
    steps = sorted({float(ms) for ms in steps_ms}) if causal else []
    if causal:
        streaming = StreamingSeparator(model.encoder, model.masknet, model.decoder, sample_rate)
        for ms in steps:
            check = partial(_stream_check, step_ms=ms, streaming=streaming, mix=mix)
            graphs[STREAM_SECTION.format(ms)] = (partial(compile_stream_step, streaming, ms), check)
    if not graphs:
        raise ValueError("nothing to compile: --no-offline on a model that is not causal (it has no stream step)")
    metadata = {
        "sample_rate": int(sample_rate),
        "num_spks": int(model.masknet.num_spks),
        "source_model": source_model or "MODEL_DIR",
        "stream_steps": steps,
    }
    return write_graphs(out_dir, compiled_folder_format(), metadata, graphs)


def _offline_check(directory: str, model: EncoderMaskerDecoder, mix: np.ndarray) -> Dict[str, float]:
    return offline_parity(CompiledSeparator(directory), model, mix)


def _stream_check(directory: str, step_ms: float, streaming: StreamingSeparator, mix: np.ndarray) -> Dict[str, float]:
    return stream_parity(CompiledStreamingSeparator(directory, step_ms), streaming, mix)


def compile_folder(
    model_dir: str,
    out_dir: str,
    steps_ms: Sequence[float] = DEFAULT_STEPS_MS,
    offline: bool = True,
    force: bool = False,
    check_audio: Optional[str] = None,
) -> Dict[str, Dict[str, float]]:
    """``s4m-compile``: the packages of an ``s4m-export`` folder, checked against
    PyTorch. Returns the parity figures by section.

    Raises
    ------
    FileNotFoundError
        When ``model_dir`` is not an ``s4m-export`` folder.
    FileExistsError
        When ``out_dir`` holds packages and ``force`` is False.
    ValueError
        As :func:`compile_model`, or for a ``check_audio`` at another sample rate.
    """
    require_model_folder(model_dir)
    refuse_to_replace(out_dir, compiled_folder_format(), force)
    model, sample_rate, check_mix = load_for_export(model_dir, check_audio)
    source = os.path.abspath(model_dir)
    return compile_model(model, sample_rate, out_dir, steps_ms, offline, check_mix, source)


def compile_stream(streaming: StreamingSeparator, step_ms: float) -> CompiledStreamingSeparator:
    """The stream step of ``streaming`` (a causal model's eager stream) compiled now,
    through a temporary folder, and loaded: what ``s4m-compile`` builds once, built at
    every start (``s4m-separate --stream --compile``, the benchmark). The stream's
    ``compile_seconds`` says how long it took."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="s4m-compile-") as folder:
        out = os.path.join(folder, "compiled")
        compile_model(streaming.model, streaming.sample_rate, out, [step_ms], offline=False)
        stream = CompiledStreamingSeparator(out, step_ms)
    stream.compile_seconds = time.perf_counter() - start
    return stream


def _milliseconds(text: str) -> Tuple[float, ...]:
    values = tuple(float(v) for v in text.split(",") if v.strip())
    if not values or min(values) <= 0:
        raise ValueError(f"--steps-ms: expected positive milliseconds, e.g. 8,16; got {text!r}")
    return values


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``s4m-compile``; returns the exit status."""
    parser = command_parser(
        prog="s4m-compile",
        description=(
            "Compile an s4m-export folder of an S4M or S4M-tiny model ahead of time for this CPU "
            "(AOTInductor): separator.pt2 (offline, any length), for a causal model also stream steps "
            "(stream_step_8ms.pt2, stream_step_16ms.pt2), and compiled_model.json. Every package is checked "
            "against PyTorch before anything is written. s4m-separate --model OUT_DIR then runs them with no "
            "compiler. Needs a C++ compiler; minutes for a full-size model."
        ),
    )
    parser.add_argument("model_dir", help="an s4m-export model folder")
    parser.add_argument("out_dir", help="the folder to write the packages to")
    parser.add_argument(
        "--steps-ms",
        default=",".join(f"{ms:g}" for ms in DEFAULT_STEPS_MS),
        help="causal models: the stream steps to compile, in ms of audio (default %(default)s)",
    )
    parser.add_argument("--no-offline", action="store_true", help="causal models: compile the stream steps only")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="the CPU threads the packages are compiled for and run with (default: torch's, %d here)"
        % torch.get_num_threads(),
    )
    parser.add_argument("--check-audio", help="a mixture file for the parity check (default: a synthetic 7.3 s)")
    parser.add_argument("--force", action="store_true", help="replace existing packages in OUT_DIR")
    args = parser.parse_args(argv)
    try:
        steps = _milliseconds(args.steps_ms)
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be at least 1, got {args.threads}")
            set_torch_threads(args.threads)
        start = time.perf_counter()
        figures = compile_folder(args.model_dir, args.out_dir, steps, not args.no_offline, args.force, args.check_audio)
    except ParityError as error:
        print(f"s4m-compile: error: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as error:
        return usage_error("s4m-compile", error)
    for section, parity in figures.items():
        print(
            f"Compiled {section} of {args.model_dir} into {args.out_dir}: matches PyTorch within "
            f"{parity['max_difference_over_peak']:.2g} of the peak (SI-SNR against PyTorch "
            f"{parity['min_si_snr_db']:.1f} dB)"
        )
    print(f"s4m-compile: {time.perf_counter() - start:.0f} s; {torch.get_num_threads()} thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
