"""The ``s4m-bench`` command: options, the run of the selected sections into one JSON
record, and its report on stdout and in ``--out``.

Authors
 * speechbrain-s4m contributors
"""

import argparse
import gc
import json
import os
from typing import Callable, Dict, List, Optional, Sequence

import torch

from speechbrain_s4m.benchmark.macs import COUNTING_RULE, count_macs
from speechbrain_s4m.benchmark.models import (
    DEFAULT_MODELS,
    RECIPE_HPARAMS,
    SAMPLE_RATE,
    TRAIN_HPARAMS_DIR,
    build_model,
    check_overrides,
    count_parameters,
)
from speechbrain_s4m.benchmark.plots import write_plots
from speechbrain_s4m.benchmark.report import PAPER, check_targets, machine_info, report
from speechbrain_s4m.benchmark.scaling import (
    ScalingSpec,
    default_memory_limit_gib,
    scaling_section,
    scaling_worker,
)
from speechbrain_s4m.benchmark.streaming import STREAMING_MODELS, streaming_section
from speechbrain_s4m.benchmark.timing import cpu_rtf, gpu_rtf, training_section
from speechbrain_s4m.cli import command_parser, usage_error
from speechbrain_s4m.resources import keep_freed_memory, set_torch_threads

PROG = "s4m-bench"
SECTIONS = ("params", "macs", "cpu", "gpu", "train", "scaling", "streaming", "onnx", "compiled")
FORWARD_SECTIONS = ("params", "macs", "cpu", "gpu", "onnx", "compiled")  # on models built in this process


class UsageError(ValueError):
    """A bad option value: ``main`` reports it and returns 2."""


def build_parser() -> argparse.ArgumentParser:
    """The options of ``s4m-bench``; ``--help`` ends with the MAC counting rule and
    the exit statuses.

    Example
    -------
    >>> args = build_parser().parse_args(["--sections", "params"])
    >>> args.sections, args.models
    ('params', 'S4M-tiny,S4M,Sepformer')
    """
    parser = command_parser(
        PROG,
        "Efficiency of S4M, S4M-tiny and SpeechBrain's separators (Sepformer by default; --models all adds "
        "Conv-TasNet, DPRNN, SkiM and RE-SepFormer), as in the paper's Table 4, and how it scales with input length.",
        epilog=COUNTING_RULE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated, from {sorted(RECIPE_HPARAMS)}, or 'all' for every one (default: %(default)s)",
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated, from %s (default: all)" % ",".join(SECTIONS)
    )
    parser.add_argument(
        "--model-overrides",
        type=json.loads,
        default={},
        help="hparams overrides per model for the params, macs, cpu, gpu and scaling sections (LRS2Mix recipe), "
        'as JSON, e.g. \'{"S4M": {"num_blocks": 1}}\' (default: none)',
    )
    parser.add_argument(
        "--lengths", default="1,4,16,60", help="scaling input lengths in seconds (default: %(default)s)"
    )
    parser.add_argument("--scaling-models", default=None, help="models for the scaling section (default: --models)")
    parser.add_argument(
        "--long-seconds",
        type=float,
        default=600.0,
        help="audio for the S4M-tiny long-audio row; 0 skips it (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="CPU threads (default: torch.get_num_threads() = %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="rounds of the CPU/GPU RTF measurements, median reported (default: %(default)s)",
    )
    parser.add_argument("--tracks", type=int, default=10, help="1 s tracks per RTF round (default: %(default)s)")
    parser.add_argument(
        "--train-rounds",
        type=int,
        default=5,
        help="rounds of the train section (one step per model each), median reported (default: %(default)s)",
    )
    parser.add_argument("--train-batch", type=int, default=2, help="mixtures per training step (default: %(default)s)")
    parser.add_argument(
        "--train-seconds", type=float, default=2.0, help="seconds per training mixture (default: %(default)s)"
    )
    parser.add_argument(
        "--train-hparams-dir",
        default=TRAIN_HPARAMS_DIR,
        help="folder of the recipe hparams files of the train section (default: the LibriMix recipe's)",
    )
    parser.add_argument(
        "--train-overrides",
        type=json.loads,
        default={},
        help="hparams overrides per model for the train section, as JSON, "
        'e.g. \'{"S4M-tiny": {"num_blocks": 1}}\' (default: none)',
    )
    parser.add_argument(
        "--scaling-repeats",
        type=int,
        default=3,
        help="forwards per scaling length, median reported; stops after 60 s (default: %(default)s)",
    )
    parser.add_argument(
        "--max-memory-gib",
        type=float,
        default=default_memory_limit_gib(),
        help="cap on what one scaling measurement may allocate; beyond it the row reports 'out of memory' "
        "(default: 70%% of available memory = %(default)s)",
    )
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc only: keep freed memory for reuse instead of returning it to the OS (mallopt), "
        "for every model and section; see keep_freed_memory()",
    )
    parser.add_argument(
        "--out", default="results/bench/", help="folder for bench.json and bench.md (default: %(default)s)"
    )
    parser.add_argument(
        "--stream-models",
        default=",".join(STREAMING_MODELS),
        help="causal models of the streaming section (LibriMix recipe, 8 kHz; default: %(default)s)",
    )
    parser.add_argument(
        "--stream-chunks-ms", default="8,16,32,64", help="streaming chunk lengths in ms (default: %(default)s)"
    )
    parser.add_argument("--stream-threads", default="1,2", help="streaming thread counts (default: %(default)s)")
    parser.add_argument(
        "--stream-seconds", type=float, default=30.0, help="audio streamed per row (default: %(default)s)"
    )
    parser.add_argument(
        "--stream-memory-minutes",
        type=float,
        default=10.0,
        help="audio streamed (64 ms chunks) to measure resident-memory growth per model; 0 skips it "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--stream-compiled-chunks-ms",
        default="",
        help="streaming section: also time the --stream-models with their step compiled by TorchInductor, "
        "for these chunk lengths in ms (each compiles once per thread count: minutes at full size; "
        "default: none)",
    )
    parser.add_argument(
        "--onnx-chunks-ms",
        default="16",
        help="onnx section: stream-step lengths in ms for the --stream-models, each exported once "
        "(default: %(default)s; empty: offline rows only)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # a ScalingSpec as JSON
    return parser


def _split(text: str) -> List[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _check_names(names: Sequence[str], known: Sequence[str], shown: str, what: str) -> None:
    for name in names:
        if name not in known:
            raise UsageError(f"unknown {what} {name!r}; choose from {shown}")


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> Dict[str, object]:
    """Run the selected sections and return the JSON record (see :func:`main`).

    Raises
    ------
    UsageError
        For an unknown model or section, or bad model or training overrides.
    """
    names = list(RECIPE_HPARAMS) if args.models.strip() == "all" else _split(args.models)
    sections = _split(args.sections)
    scaling_names = _split(args.scaling_models) if args.scaling_models else names
    stream_names = _split(args.stream_models)
    _check_names(names + scaling_names + stream_names, list(RECIPE_HPARAMS), str(sorted(RECIPE_HPARAMS)), "model")
    _check_names(sections, SECTIONS, ",".join(SECTIONS), "section")
    try:
        check_overrides(args.model_overrides, "model overrides")
    except ValueError as error:
        raise UsageError(error) from error
    set_torch_threads(args.threads)
    kept = keep_freed_memory() if args.keep_freed_memory else False
    record: Dict[str, object] = {
        "machine": machine_info(args.threads),
        "settings": {
            "models": names,
            "sections": sections,
            "sample_rate": SAMPLE_RATE,
            "threads": args.threads,
            "repeats": args.repeats,
            "tracks": args.tracks,
            "lengths": args.lengths,
            "scaling_repeats": args.scaling_repeats,
            "long_seconds": args.long_seconds,
            "max_memory_gib": args.max_memory_gib,
            "keep_freed_memory": kept,
            "model_overrides": args.model_overrides,
            "train_rounds": args.train_rounds,
            "train_batch": args.train_batch,
            "train_seconds": args.train_seconds,
            "train_overrides": args.train_overrides,
            "stream_models": stream_names,
            "stream_chunks_ms": args.stream_chunks_ms,
            "stream_threads": args.stream_threads,
            "stream_seconds": args.stream_seconds,
            "stream_memory_minutes": args.stream_memory_minutes,
            "stream_compiled_chunks_ms": args.stream_compiled_chunks_ms,
            "onnx_chunks_ms": args.onnx_chunks_ms,
        },
        "counting_rule": COUNTING_RULE,
        "paper": PAPER,
        "models": {name: {} for name in names},
        "scaling": {},
        "streaming": {},
        "notes": [],
    }
    log(f"{PROG}: {', '.join(names)}; sections {', '.join(sections)}; {args.threads} CPU threads")
    _forward_sections(args, names, sections, record, log)
    if "train" in sections:
        _train_section(args, names, record, log)
    if "scaling" in sections:
        record["scaling"] = scaling_section(
            scaling_names,
            [float(v) for v in _split(args.lengths)],
            args.long_seconds,
            threads=args.threads,
            repeats=args.scaling_repeats,
            memory_limit_gib=args.max_memory_gib,
            keep_freed=kept,
            overrides=args.model_overrides,
            log=log,
        )
    if "streaming" in sections:
        log(
            f"Streaming: {', '.join(stream_names)}; chunks of {args.stream_chunks_ms} ms, "
            f"{args.stream_seconds:g} s of audio per row, threads {args.stream_threads} ..."
        )
        try:
            record["streaming"] = streaming_section(
                stream_names,
                [float(v) for v in _split(args.stream_chunks_ms)],
                [int(v) for v in _split(args.stream_threads)],
                args.stream_seconds,
                args.stream_memory_minutes,
                overrides=args.model_overrides,
                log=log,
                compiled_chunks_ms=[float(v) for v in _split(args.stream_compiled_chunks_ms)],
            )
        except ValueError as error:
            raise UsageError(error) from error
        set_torch_threads(args.threads)
    record["targets"] = check_targets(record)
    record["machine"]["load_average_end"] = machine_info(args.threads).get("load_average")
    return record


def _forward_sections(
    args: argparse.Namespace,
    names: Sequence[str],
    sections: Sequence[str],
    record: Dict[str, object],
    log: Callable[[str], None],
) -> None:
    """params, macs, cpu and gpu, on the models built once here."""
    if not set(FORWARD_SECTIONS) & set(sections):
        return
    torch.manual_seed(0)
    try:
        models = {name: build_model(name, SAMPLE_RATE, args.model_overrides.get(name)) for name in names}
    except ValueError as error:  # an override the recipe's file lacks
        raise UsageError(error) from error
    results = record["models"]
    if "params" in sections:
        for name, model in models.items():
            results[name]["params"] = count_parameters(model)
    if "macs" in sections:
        log("MACs (thop + counting rule) ...")
        for name, model in models.items():
            results[name]["macs"] = count_macs(model)
            counted = results[name]["macs"]
            log(f"  {name}: thop {counted['thop'] / 1e9:.2f} G, all {counted['all'] / 1e9:.2f} G")
    if "cpu" in sections:
        log(f"CPU-RTF-f: {args.tracks} x 1 s tracks, median of {args.repeats} rounds, {args.threads} threads ...")
        for name, value in cpu_rtf(models, tracks=args.tracks, repeats=args.repeats, log=log).items():
            results[name]["cpu"] = value
    if "gpu" in sections:
        if torch.cuda.is_available():
            log(f"GPU-RTF on {torch.cuda.get_device_name(0)} ...")
            for name, value in gpu_rtf(models, tracks=args.tracks, repeats=args.repeats, log=log).items():
                results[name]["gpu"] = value
        else:
            record["notes"].append("GPU section skipped: CUDA is not available on this machine.")
            log("GPU section skipped: CUDA is not available on this machine.")
    if "onnx" in sections:
        from speechbrain_s4m.benchmark.onnx_section import onnx_section

        record["onnx"] = onnx_section(
            models,
            _split(args.stream_models),
            [float(v) for v in _split(args.onnx_chunks_ms)],
            args.threads,
            tracks=args.tracks,
            repeats=args.repeats,
            overrides=args.model_overrides,
            log=log,
        )
    if "compiled" in sections:
        from speechbrain_s4m.benchmark.compiled_section import compiled_section

        record["compiled"] = compiled_section(models, args.threads, tracks=args.tracks, repeats=args.repeats, log=log)
    del models
    gc.collect()


def _train_section(
    args: argparse.Namespace, names: Sequence[str], record: Dict[str, object], log: Callable[[str], None]
) -> None:
    log(
        f"CPU training step: batch {args.train_batch} x {args.train_seconds:g} s, 1 warm-up step, "
        f"median of {args.train_rounds} rounds, {args.threads} threads ..."
    )
    try:
        trained = training_section(
            names,
            rounds=args.train_rounds,
            batch=args.train_batch,
            seconds=args.train_seconds,
            hparams_dir=args.train_hparams_dir,
            overrides=args.train_overrides,
            log=log,
        )
    except ValueError as error:
        raise UsageError(error) from error
    for name, value in trained.items():
        record["models"][name]["train"] = value
        log(f"  {name}: {value['step_s']:.3f} s per step, {value['audio_s_per_s']:.2f} audio s / s")
    gc.collect()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``s4m-bench``: run, print the report, write ``bench.json`` and
    ``bench.md`` to ``--out``; with ``--worker SPEC``, one scaling measurement
    (:func:`~speechbrain_s4m.benchmark.scaling.scaling_worker`) printed as JSON.

    Returns
    -------
    int
        0, or 2 for a usage error (unknown model or section, bad overrides).
    """
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        try:
            spec = ScalingSpec.from_json(args.worker)
        except ValueError as error:
            return usage_error(PROG, error)
        print(json.dumps(scaling_worker(spec)), flush=True)
        return 0
    try:
        record = run(args, log=lambda message: print(message, flush=True))
    except UsageError as error:
        return usage_error(PROG, error)
    text = report(record)
    print()
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    with open(os.path.join(args.out, "bench.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    plots = write_plots(record, args.out)
    names = ", ".join(["bench.md"] + [os.path.basename(path) for path in plots])
    print(f"Wrote {os.path.join(args.out, 'bench.json')}, {names}")
    return 0
