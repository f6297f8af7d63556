"""The streaming section of ``s4m-bench``: causal S4M-tiny and S4M from the LibriMix
recipe (8 kHz) run through :class:`~speechbrain_s4m.inference.streaming.StreamingSeparator`
chunk by chunk, timing every call.

Per model, thread count and chunk length: median and 99th-percentile compute time per
chunk, the real-time factor (compute per second of audio) and the algorithmic latency;
per model, the growth of the resident memory between the first minute and the end of
``memory_minutes`` of streamed audio. For the chunk lengths of ``compiled_chunks_ms``,
also the same stream with its step compiled ahead of time by TorchInductor as
``s4m-compile`` compiles it (:func:`~speechbrain_s4m.export.compiled_packages.compile_stream`, rows
``"<model>, compiled"``; each compiles once per thread count and chunk length, for that
thread count).

Authors
 * speechbrain-s4m contributors
"""

import statistics
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch

from speechbrain_s4m.benchmark.models import TRAIN_HPARAMS_DIR, load_recipe_model, recipe_hparams_file
from speechbrain_s4m.benchmark.report import COMPILED
from speechbrain_s4m.inference.streaming import StreamingSeparator
from speechbrain_s4m.resources import current_rss_bytes, set_torch_threads

if TYPE_CHECKING:
    from speechbrain_s4m.inference.compiled_runtime import CompiledStreamingSeparator

STREAMING_MODELS = ("S4M-tiny causal", "S4M causal")
Stream = Union[StreamingSeparator, "CompiledStreamingSeparator"]


def build_stream(name: str, overrides: Optional[Mapping[str, object]] = None) -> StreamingSeparator:
    """A :class:`StreamingSeparator` over the modules of model ``name``'s LibriMix
    hparams file (8 kHz).

    Example
    -------
    >>> stream = build_stream("S4M-tiny causal", {"num_blocks": 1, "hidden_channels": 16})
    >>> stream.sample_rate, stream.latency_samples
    (8000, 87)
    """
    setup = load_recipe_model(recipe_hparams_file(name, TRAIN_HPARAMS_DIR), overrides)
    model = setup.separator.eval()
    return StreamingSeparator(model.encoder, model.masknet, model.decoder, setup.sample_rate)


def time_stream(stream: "Stream", seconds: float, chunk_ms: float, seed: int = 0) -> Dict[str, float]:
    """Stream ``seconds`` of noise in chunks of ``chunk_ms``; per-call timings.

    Example
    -------
    >>> stream = build_stream("S4M-tiny causal", {"num_blocks": 1, "hidden_channels": 16})
    >>> row = time_stream(stream, seconds=0.5, chunk_ms=16)
    >>> row["chunks"], row["rtf"] > 0
    (32, True)
    """
    rate = stream.sample_rate
    chunk = max(1, int(round(chunk_ms * rate / 1000)))
    generator = torch.Generator().manual_seed(seed)
    audio = 0.1 * torch.randn(int(round(seconds * rate)), generator=generator)
    stream.reset()
    step = getattr(stream, "hop_samples", None) or stream.block_samples  # a compiled step's, or a block
    stream.process(audio[: 4 * step])  # warm-up: first calls allocate
    stream.reset()
    times = []
    for piece in audio.split(chunk):
        start = time.perf_counter()
        stream.process(piece)
        times.append(time.perf_counter() - start)
    stream.flush()
    ordered = sorted(times)
    return {
        "chunk_ms": chunk_ms,
        "chunks": len(times),
        "median_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "rtf": sum(times) / seconds,
        "latency_samples": stream.latency_samples,
        "latency_ms": 1000 * stream.latency_samples / rate,
    }


def memory_growth(stream: "Stream", minutes: float, chunk_ms: float = 64.0) -> Dict[str, float]:
    """Resident memory after the first minute and after ``minutes`` of streamed audio
    (MiB), a minute of noise at a time in chunks of ``chunk_ms``."""
    rate = stream.sample_rate
    chunk = max(1, int(round(chunk_ms * rate / 1000)))
    minute = 0.1 * torch.randn(60 * rate, generator=torch.Generator().manual_seed(1))
    stream.reset()
    rss = []
    for _ in range(max(1, int(round(minutes)))):
        for piece in minute.split(chunk):
            stream.process(piece)
        rss.append((current_rss_bytes() or 0) / 2**20)
    stream.flush()
    return {"minutes": len(rss), "chunk_ms": chunk_ms, "rss_first_minute_mib": rss[0], "rss_end_mib": rss[-1]}


def streaming_section(
    names: Sequence[str],
    chunks_ms: Sequence[float],
    threads: Sequence[int],
    seconds: float,
    memory_minutes: float,
    overrides: Optional[Mapping[str, Mapping[str, object]]] = None,
    log: Callable[[str], None] = print,
    compiled_chunks_ms: Sequence[float] = (),
) -> Dict[str, Dict[str, object]]:
    """Every row of the section: ``{model: {"rows": [...], "memory": {...}}}``, and
    ``{model + ", compiled": {"rows": [...]}}`` for ``compiled_chunks_ms``."""
    results: Dict[str, Dict[str, object]] = {}
    for name in names:
        torch.manual_seed(0)
        stream = build_stream(name, (overrides or {}).get(name))
        rows: List[Dict[str, float]] = []
        compiled_rows: List[Dict[str, float]] = []
        for count in threads:
            set_torch_threads(count)
            for chunk_ms in chunks_ms:
                rows.append(_timed_row(name, stream, count, seconds, chunk_ms, log))
            for chunk_ms in compiled_chunks_ms:
                from speechbrain_s4m.export.compiled_packages import compile_stream

                compiled = compile_stream(stream, chunk_ms)
                log(f"  {name}: compiled the {chunk_ms:g} ms step in {compiled.compile_seconds:.0f} s")
                row = _timed_row(name + COMPILED, compiled, count, seconds, chunk_ms, log)
                compiled_rows.append({**row, "compile_s": compiled.compile_seconds})
        results[name] = {"rows": rows}
        if compiled_rows:
            results[name + COMPILED] = {"rows": compiled_rows}
        if memory_minutes > 0:
            memory = memory_growth(stream, memory_minutes)
            results[name]["memory"] = memory
            log(
                f"  {name}: resident memory {memory['rss_first_minute_mib']:.0f} MiB after 1 min, "
                f"{memory['rss_end_mib']:.0f} MiB after {memory['minutes']} min"
            )
    return results


def _timed_row(
    name: str, stream: Stream, threads: int, seconds: float, chunk_ms: float, log: Callable[[str], None]
) -> Dict[str, float]:
    row = {"threads": threads, **time_stream(stream, seconds, chunk_ms)}
    log(
        f"  {name}, {threads} thread(s), {chunk_ms:g} ms chunks: median {row['median_ms']:.2f} ms, "
        f"p99 {row['p99_ms']:.2f} ms, RTF {row['rtf']:.3f}"
    )
    return row
