"""onnxruntime against PyTorch eager on the stream step of a causal model, in one
process: ``python -m speechbrain_s4m.benchmark.onnx_streaming [--chunks-ms 16,64]``.

For each step length the causal model of the LibriMix hparams (8 kHz, random weights:
speed does not depend on them) is exported with
:func:`~speechbrain_s4m.export.onnx_graphs.export_stream_step`; then the same noise is streamed
a step at a time through :class:`~speechbrain_s4m.inference.onnx_runtime.OnnxStreamingSeparator`
and through PyTorch's :class:`~speechbrain_s4m.inference.streaming.StreamingSeparator`, both on
``--threads`` threads. Run it alone on the machine.

Authors
 * speechbrain-s4m contributors
"""

import argparse
import tempfile
import time
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from speechbrain_s4m.benchmark.streaming import build_stream
from speechbrain_s4m.export.onnx_graphs import export_stream_step
from speechbrain_s4m.inference.onnx_runtime import OnnxStreamingSeparator


def _per_step_ms(process, steps: Sequence[np.ndarray]) -> np.ndarray:
    times = []
    for step in steps:
        start = time.perf_counter()
        process(step)
        times.append(time.perf_counter() - start)
    return 1e3 * np.array(times)


def compare_step(
    name: str, chunk_ms: float, steps: int = 100, threads: int = 1, overrides: Optional[Mapping[str, object]] = None
) -> Dict[str, float]:
    """Median and 99th-percentile milliseconds per step of onnxruntime and PyTorch."""
    previous = torch.get_num_threads()
    if threads == previous:  # changing torch's pool back and forth can hang later parallel work
        return _compare_step(name, chunk_ms, steps, threads, overrides)
    torch.set_num_threads(threads)
    try:
        return _compare_step(name, chunk_ms, steps, threads, overrides)
    finally:
        torch.set_num_threads(previous)


def _compare_step(name, chunk_ms, steps, threads, overrides) -> Dict[str, float]:
    stream = build_stream(name, overrides)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        parity = export_stream_step(stream, out, chunk_ms)
        export_seconds = time.perf_counter() - start
        runner = OnnxStreamingSeparator(out, threads=threads)
        hop, window = runner.hop_samples, runner.window_samples
        mix = np.random.default_rng(0).standard_normal(window + steps * hop).astype(np.float32)
        chunks = [mix[window + i * hop : window + (i + 1) * hop] for i in range(steps)]
        runner.process(mix[:window])  # the first step: warm-up
        onnx_ms = _per_step_ms(runner.process, chunks)
        stream.reset()
        stream.process(torch.from_numpy(mix[:window]))
        torch_ms = _per_step_ms(lambda c: stream.process(torch.from_numpy(c)), chunks)
    step_ms = 1e3 * hop / runner.sample_rate
    return {
        "step_ms": step_ms,
        "export_s": export_seconds,
        "parity": parity["max_difference_over_peak"],
        "onnx_median_ms": float(np.median(onnx_ms)),
        "onnx_p99_ms": float(np.percentile(onnx_ms, 99)),
        "torch_median_ms": float(np.median(torch_ms)),
        "torch_p99_ms": float(np.percentile(torch_ms, 99)),
        "onnx_rtf": float(np.median(onnx_ms)) / step_ms,
        "speedup": float(np.median(torch_ms) / np.median(onnx_ms)),
    }


def table(name: str, rows: List[Dict[str, float]], threads: int) -> str:
    """A Markdown table of :func:`compare_step` rows."""
    lines = [
        f"{name}, {threads} thread(s), 8 kHz",
        "",
        "| step | onnxruntime median / p99 | PyTorch eager median / p99 | onnxruntime RTF | speed-up |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['step_ms']:g} ms | {r['onnx_median_ms']:.1f} / {r['onnx_p99_ms']:.1f} ms | "
            f"{r['torch_median_ms']:.1f} / {r['torch_p99_ms']:.1f} ms | {r['onnx_rtf']:.2f} | {r['speedup']:.1f}x |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m speechbrain_s4m.benchmark.onnx_streaming", description=__doc__)
    parser.add_argument("--model", default="S4M-tiny causal", help="S4M-tiny causal or S4M causal")
    parser.add_argument("--chunks-ms", default="16,64", help="step lengths in ms, comma-separated")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per row")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    rows = [compare_step(args.model, float(ms), args.steps, args.threads) for ms in args.chunks_ms.split(",")]
    print(table(args.model, rows, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
