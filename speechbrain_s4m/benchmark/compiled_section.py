"""The ``compiled`` section of ``s4m-bench``: ahead-of-time compiled models against
PyTorch eager on the CPU, on the paper's protocol, from one run in one process.

Every S4M model of ``--models`` is compiled as ``s4m-compile`` compiles it (its offline
``separator.pt2``, :func:`~speechbrain_s4m.export.compiled_packages.compile_model`, which checks it
against PyTorch), for ``--threads``; Sepformer, which ``s4m-compile`` does not take, is
compiled by ``torch.compile`` (TorchInductor, its defaults), so that compiled stands
beside compiled as eager beside eager. Then every model, eager and compiled, separates
the same 1 s tracks at 16 kHz one at a time, all taking turns round by round
(:func:`~speechbrain_s4m.benchmark.timing.cpu_rtf`). Random weights: speed does not
depend on them.

Authors
 * speechbrain-s4m contributors
"""

import os
import tempfile
import time
from typing import Callable, Dict

import torch
from torch import nn

from speechbrain_s4m.benchmark.models import SAMPLE_RATE
from speechbrain_s4m.benchmark.timing import RunnerModule, cpu_rtf
from speechbrain_s4m.lobes.encoder_masker_decoder import EncoderMaskerDecoder
from speechbrain_s4m.lobes.s4m import S4MMaskNet

COMPILED_SUFFIX = " (compiled)"


def compile_for_timing(name: str, model: EncoderMaskerDecoder, folder: str, log: Callable[[str], None]):
    """``(compiled module, row)``: an S4M model's ``separator.pt2`` (with its parity) or
    Sepformer under ``torch.compile`` (compiled by a first call here)."""
    start = time.perf_counter()
    if isinstance(model.masknet, S4MMaskNet):
        from speechbrain_s4m.export.compiled_packages import compile_model
        from speechbrain_s4m.inference.compiled_runtime import CompiledSeparator

        figures = compile_model(model, SAMPLE_RATE, folder, steps_ms=())["separator"]
        compiled: nn.Module = RunnerModule(CompiledSeparator(folder))
        row = {"how": "s4m-compile (AOTInductor)", "parity": figures["max_difference_over_peak"]}
    else:
        compiled = torch.compile(model, dynamic=False)
        with torch.inference_mode():
            compiled(torch.zeros(1, SAMPLE_RATE))  # compiles
        row = {"how": "torch.compile (Inductor)"}
    row["compile_s"] = time.perf_counter() - start
    log(f"  {name}: compiled with {row['how']} in {row['compile_s']:.0f} s")
    return compiled, row


def compiled_section(
    models: Dict[str, EncoderMaskerDecoder],
    threads: int,
    tracks: int = 10,
    repeats: int = 5,
    log: Callable[[str], None] = lambda message: None,
) -> Dict[str, object]:
    """The section's record: ``{"threads", "rows": {model: {"how", "compile_s",
    "eager_rtf", "compiled_rtf", "speedup", ["parity"]}}}``."""
    log(f"Compiled vs eager, {threads} thread(s): CPU-RTF-f ({tracks} x 1 s, 16 kHz) ...")
    rows: Dict[str, Dict[str, object]] = {}
    timed: Dict[str, nn.Module] = {}
    with tempfile.TemporaryDirectory(prefix="s4m-bench-compiled-") as root:
        for i, (name, model) in enumerate(models.items()):
            compiled, rows[name] = compile_for_timing(name, model, os.path.join(root, str(i)), log)
            timed[name] = model
            timed[name + COMPILED_SUFFIX] = compiled
        rtf = cpu_rtf(timed, tracks=tracks, repeats=repeats, log=log)
    for name, row in rows.items():
        row["eager_rtf"] = rtf[name]["rtf"]
        row["compiled_rtf"] = rtf[name + COMPILED_SUFFIX]["rtf"]
        row["speedup"] = row["eager_rtf"] / row["compiled_rtf"]
    return {"threads": threads, "rows": rows}
