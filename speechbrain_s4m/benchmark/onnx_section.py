"""The ``onnx`` section of ``s4m-bench``: onnxruntime against PyTorch eager on the CPU,
from one run in one process.

* **Offline, CPU-RTF-f on the paper's protocol**: every S4M model of ``--models`` is
  exported to ``separator.onnx`` (:func:`~speechbrain_s4m.export.onnx_graphs.export_graphs`,
  which checks it against PyTorch), then the eager model and the onnxruntime graph
  separate the same 1 s tracks at 16 kHz one at a time, taking turns round by round
  (:func:`~speechbrain_s4m.benchmark.timing.cpu_rtf`).
* **Streaming, per step**: the causal models of ``--stream-models`` at 8 kHz, each
  step length exported to ``stream_step.onnx`` and timed step by step against
  PyTorch's ``StreamingSeparator``
  (:func:`~speechbrain_s4m.benchmark.onnx_streaming.compare_step`).

Both runtimes use ``--threads`` intra-op threads. Random weights: speed does not depend
on them.

Authors
 * speechbrain-s4m contributors
"""

import os
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

from torch import nn

from speechbrain_s4m.benchmark.models import SAMPLE_RATE
from speechbrain_s4m.benchmark.onnx_streaming import compare_step
from speechbrain_s4m.benchmark.timing import RunnerModule, cpu_rtf
from speechbrain_s4m.export.onnx_graphs import export_graphs
from speechbrain_s4m.inference.onnx_runtime import OnnxSeparator
from speechbrain_s4m.lobes.encoder_masker_decoder import EncoderMaskerDecoder
from speechbrain_s4m.lobes.s4m import S4MMaskNet

ONNX_SUFFIX = " (onnxruntime)"


def offline_rows(
    models: Dict[str, EncoderMaskerDecoder],
    threads: int,
    tracks: int,
    repeats: int,
    log: Callable[[str], None] = lambda message: None,
) -> Dict[str, Dict[str, float]]:
    """CPU-RTF-f of each S4M model and of its ``separator.onnx``, interleaved.

    Returns
    -------
    dict
        ``{model: {"eager_rtf", "onnx_rtf", "speedup", "export_s", "parity"}}``, or
        ``{model: {"refused": the export's error}}`` when its parity check refused the
        graph; models that are not S4M (Sepformer) are left out.
    """
    exportable = {name: model for name, model in models.items() if isinstance(model.masknet, S4MMaskNet)}
    rows: Dict[str, Dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as root:
        timed: Dict[str, nn.Module] = {}
        for i, (name, model) in enumerate(exportable.items()):
            log(f"  exporting {name} to separator.onnx ...")
            folder, start = os.path.join(root, str(i)), time.perf_counter()
            try:
                figures = export_graphs(model, SAMPLE_RATE, folder)["separator"]
            except ValueError as error:  # the export's parity check refused the graph
                rows[name] = {"refused": str(error)}
                log(f"  {name}: {error}")
                continue
            rows[name] = {"export_s": time.perf_counter() - start, "parity": figures["max_difference_over_peak"]}
            timed[name] = model
            timed[name + ONNX_SUFFIX] = RunnerModule(OnnxSeparator(folder, threads))
        rtf = cpu_rtf(timed, tracks=tracks, repeats=repeats, log=log)
    for name, row in rows.items():
        if "refused" in row:
            continue
        row["eager_rtf"] = rtf[name]["rtf"]
        row["onnx_rtf"] = rtf[name + ONNX_SUFFIX]["rtf"]
        row["speedup"] = row["eager_rtf"] / row["onnx_rtf"]
    return rows


def onnx_section(
    models: Dict[str, EncoderMaskerDecoder],
    stream_names: Sequence[str],
    chunks_ms: Sequence[float],
    threads: int,
    tracks: int = 10,
    repeats: int = 5,
    steps: int = 100,
    overrides: Optional[Dict[str, Dict[str, object]]] = None,
    log: Callable[[str], None] = lambda message: None,
) -> Dict[str, object]:
    """The section's record: ``{"threads", "offline": offline_rows(...), "stream": {model:
    [compare_step rows]}}``."""
    log(f"onnxruntime vs PyTorch eager, {threads} thread(s): CPU-RTF-f ({tracks} x 1 s, 16 kHz) ...")
    offline = offline_rows(models, threads, tracks, repeats, log)
    stream: Dict[str, List[Dict[str, float]]] = {}
    for name in stream_names:
        for chunk_ms in chunks_ms:
            log(f"  {name}: stream step of {chunk_ms:g} ms, {steps} steps ...")
            row = compare_step(name, chunk_ms, steps, threads, (overrides or {}).get(name))
            stream.setdefault(name, []).append(row)
    return {"threads": threads, "offline": offline, "stream": stream}
