"""The record's report: the machine it ran on, the Table 4-shaped tables (figures and
ratios to Sepformer's), MACs by part, the training step, the scaling rows, and the
efficiency issue's targets (PASS / MISS / SKIP).

Authors
 * speechbrain-s4m contributors
"""

import contextlib
import datetime
import math
import os
import platform
from typing import Dict, List, Mapping, Optional, Sequence

import torch

from speechbrain_s4m.benchmark.macs import COUNTING_RULE
from speechbrain_s4m.benchmark.models import REFERENCE

STREAM_TARGET_MODEL = "S4M-tiny causal"  # the streaming targets' model
COMPILED = ", compiled"  # the suffix of a streaming model's compiled rows

TRAIN_SPEEDUP_TARGET = 6.0  # S4M-tiny's training step, times faster than Sepformer's

# The paper's Table 4 (LRS2-2Mix, 16 kHz) and its parameter counts (Tables 1-3).
PAPER = {
    "S4M-tiny": {"params_m": 1.8, "macs_g": 8.0, "cpu_rtf_f_s": 1.34, "gpu_rtf_f_ms": 18.19, "gpu_rtf_b_ms": 73.62},
    "S4M": {"params_m": 3.6, "macs_g": 38.7, "cpu_rtf_f_s": 2.57, "gpu_rtf_f_ms": 40.15, "gpu_rtf_b_ms": 132.83},
    "Sepformer": {"params_m": 26.0, "macs_g": 86.9, "cpu_rtf_f_s": 7.55, "gpu_rtf_f_ms": 65.61, "gpu_rtf_b_ms": 184.91},
    # the paper's DPRNN (params from its Table 1) is the DPRNN paper's size, not SpeechBrain's recipe
    "DPRNN": {"params_m": 2.6, "macs_g": 85.3, "cpu_rtf_f_s": 8.13, "gpu_rtf_f_ms": 88.79, "gpu_rtf_b_ms": 241.54},
}


def machine_info(threads: int) -> Dict[str, object]:
    """CPU model, cores, threads, library versions, GPU (if any) and load average.

    Example
    -------
    >>> info = machine_info(threads=1)
    >>> {"cpu_model", "logical_cpus", "threads", "torch"} <= set(info)
    True
    """
    cpu_model, physical = platform.processor() or "unknown", set()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            physical_id = "0"
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name":
                    cpu_model = value
                elif key == "physical id":
                    physical_id = value
                elif key == "core id":
                    physical.add((physical_id, value))
    info: Dict[str, object] = {
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "physical_cores": len(physical) or None,
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    for package in ("speechbrain", "thop"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            info[package] = version(package)
    with contextlib.suppress(OSError):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    else:
        info["gpu"] = None
    return info


# ---------------------------------------------------------------------- reports
def _fmt(value: Optional[float], digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table.

    Example
    -------
    >>> print(markdown_table(["a", "b"], [["1", "2"]]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


MAIN_COLUMNS = [
    ("params_m", "params (M)", 2),
    ("macs_thop_g", "MACs thop (G/s)", 2),
    ("macs_all_g", "MACs all (G/s)", 2),
    ("cpu_rtf_f_s", "CPU-RTF-f (s)", 3),
    ("gpu_rtf_f_ms", "GPU-RTF-f (ms)", 2),
    ("gpu_rtf_b_ms", "GPU-RTF-b (ms)", 2),
]


def summary_rows(models: Dict[str, Dict[str, object]]) -> Dict[str, Dict[str, Optional[float]]]:
    """Table 4 figures per model, in the table's units, from the raw results."""
    rows = {}
    for name, result in models.items():
        macs = result.get("macs") or {}
        cpu = result.get("cpu") or {}
        gpu = result.get("gpu") or {}
        rows[name] = {
            "params_m": result["params"] / 1e6 if "params" in result else None,
            "macs_thop_g": macs["thop"] / 1e9 if macs else None,
            "macs_all_g": macs["all"] / 1e9 if macs else None,
            "cpu_rtf_f_s": cpu.get("rtf"),
            "gpu_rtf_f_ms": gpu.get("forward_ms"),
            "gpu_rtf_b_ms": gpu.get("backward_ms"),
        }
    return rows


def ratios(
    rows: Dict[str, Dict[str, Optional[float]]], reference: str = REFERENCE
) -> Dict[str, Dict[str, Optional[float]]]:
    """Every figure divided by the reference model's (``None`` where either is
    missing).

    Example
    -------
    >>> ratios({"a": {"x": 1.0}, "Sepformer": {"x": 4.0}})["a"]["x"]
    0.25
    """
    base = rows.get(reference, {})
    return {
        name: {key: (value / base[key] if value is not None and base.get(key) else None) for key, value in row.items()}
        for name, row in rows.items()
    }


def main_table(models: Dict[str, Dict[str, object]]) -> str:
    """The Table 4-shaped markdown table: figures, then ratios to Sepformer."""
    rows = summary_rows(models)
    rel = ratios(rows)
    header = ["model"] + [title for _, title, _ in MAIN_COLUMNS]
    header += [f"{title.split(' (')[0]} / Sep" for _, title, _ in MAIN_COLUMNS]
    body = []
    for name, row in rows.items():
        line = [name] + [_fmt(row[key], digits) for key, _, digits in MAIN_COLUMNS]
        line += [_fmt(rel[name][key], 3) for key, _, _ in MAIN_COLUMNS]
        body.append(line)
    return markdown_table(header, body)


def paper_table(names: Sequence[str]) -> str:
    """The paper's Table 4 figures for the same models, for reference."""
    header = ["model (paper)"] + [title for key, title, _ in MAIN_COLUMNS if key != "macs_all_g"]
    body = []
    for name in names:
        if name in PAPER:
            p = PAPER[name]
            body.append(
                [
                    name,
                    _fmt(p["params_m"], 1),
                    _fmt(p["macs_g"], 1),
                    _fmt(p["cpu_rtf_f_s"], 2),
                    _fmt(p["gpu_rtf_f_ms"], 2),
                    _fmt(p["gpu_rtf_b_ms"], 2),
                ]
            )
    return markdown_table(header, body)


MAC_PARTS = [
    ("thop", "thop"),
    ("group_norm", "gLN"),
    ("s4_fft_convolution", "S4 FFT conv"),
    ("s4_kernel_generation", "S4 kernels"),
    ("attention", "attention"),
    ("all", "all"),
]


def macs_table(models: Dict[str, Dict[str, object]]) -> str:
    """MACs per second of audio by part of the counting rule (G/s)."""
    header = ["model"] + [f"{title} (G/s)" for _, title in MAC_PARTS] + ["paper (G/s)", "thop / paper", "all / paper"]
    body = []
    for name, result in models.items():
        macs = result.get("macs")
        if not macs:
            continue
        paper = PAPER.get(name, {}).get("macs_g")
        body.append(
            [name]
            + [_fmt(macs[key] / 1e9, 3) for key, _ in MAC_PARTS]
            + [
                _fmt(paper, 1),
                _fmt(macs["thop"] / 1e9 / paper if paper else None, 2),
                _fmt(macs["all"] / 1e9 / paper if paper else None, 2),
            ]
        )
    return markdown_table(header, body)


def training_rows(models: Dict[str, Dict[str, object]]) -> Dict[str, Dict[str, Optional[float]]]:
    """Training-step figures per model that has them: ``step_s`` and
    ``audio_s_per_s``.

    Example
    -------
    >>> training_rows({"a": {"train": {"step_s": 0.5, "audio_s_per_s": 8.0}}, "b": {}})
    {'a': {'step_s': 0.5, 'audio_s_per_s': 8.0}}
    """
    return {
        name: {"step_s": result["train"]["step_s"], "audio_s_per_s": result["train"]["audio_s_per_s"]}
        for name, result in models.items()
        if result.get("train")
    }


def training_table(models: Dict[str, Dict[str, object]]) -> str:
    """The CPU training step per model, with Sepformer's step time / the model's."""
    rows = training_rows(models)
    rel = ratios(rows)
    header = [
        "model",
        "hparams",
        "params (M)",
        "batch x s",
        "step (s)",
        "audio s / s",
        "Sep / model (step time)",
        "loss first -> last",
    ]
    body = []
    for name, row in rows.items():
        train = models[name]["train"]
        losses = train["losses"]
        body.append(
            [
                name,
                os.path.basename(str(train["hparams_file"])),
                _fmt(train["params"] / 1e6, 2),
                f"{train['batch']} x {train['seconds']:g}",
                _fmt(row["step_s"], 3),
                _fmt(row["audio_s_per_s"], 2),
                _fmt(1 / rel[name]["step_s"] if rel[name]["step_s"] else None, 2),
                f"{_fmt(losses[0], 2)} -> {_fmt(losses[-1], 2)}" if losses else "-",
            ]
        )
    return markdown_table(header, body)


def scaling_table(scaling: Dict[str, List[Dict[str, object]]]) -> str:
    """Forward time and peak memory per model and input length."""
    header = [
        "model",
        "input (s)",
        "forward (s)",
        "RTF (s/s)",
        "time / linear from 4 s",
        "peak memory (MiB)",
        "page faults / run (k)",
        "method",
    ]
    body = []
    for name, entries in scaling.items():
        four = next((e for e in entries if e.get("seconds") == 4 and "time_s" in e and not e.get("long_audio")), None)
        for e in entries:
            label = name + (" (long-audio path)" if e.get("long_audio") else "")
            if "error" in e:
                body.append([label, _fmt(e["seconds"], 0), "error", "-", "-", "-", "-", str(e["error"])])
                continue
            linear = e["time_s"] / (four["time_s"] * e["seconds"] / 4) if four and not e.get("long_audio") else None
            body.append(
                [
                    label,
                    _fmt(e["seconds"], 0),
                    _fmt(e["time_s"], 3),
                    _fmt(e["time_s"] / e["seconds"], 3),
                    _fmt(linear, 2),
                    _fmt(e["peak_mib"], 0),
                    _fmt(e["page_faults_per_run"] / 1e3 if "page_faults_per_run" in e else None, 0),
                    str(e["method"]),
                ]
            )
    return markdown_table(header, body)


# ---------------------------------------------------------------------- targets
def streaming_table(streaming: Dict[str, Dict[str, object]]) -> str:
    """The streaming rows: per model, threads and chunk length.

    Example
    -------
    >>> row = {"threads": 1, "chunk_ms": 16, "chunks": 10, "median_ms": 1.0, "p99_ms": 2.0, "rtf": 0.1,
    ...     "latency_samples": 87, "latency_ms": 10.875}
    >>> print(streaming_table({"S4M-tiny causal": {"rows": [row]}}).splitlines()[2])
    | S4M-tiny causal | 1 | 16 | 1.00 | 2.00 | 0.100 | 87 (10.9 ms) | - |
    """
    rows = []
    for name, result in streaming.items():
        memory = result.get("memory")
        growth = "-"
        if memory:
            growth = (
                f"{memory['rss_end_mib'] - memory['rss_first_minute_mib']:+.1f} MiB "
                f"({memory['rss_first_minute_mib']:.0f} -> {memory['rss_end_mib']:.0f}, 1 -> {memory['minutes']} min)"
            )
        for i, row in enumerate(result["rows"]):
            rows.append(
                [
                    name,
                    str(row["threads"]),
                    f"{row['chunk_ms']:g}",
                    f"{row['median_ms']:.2f}",
                    f"{row['p99_ms']:.2f}",
                    f"{row['rtf']:.3f}",
                    f"{row['latency_samples']} ({row['latency_ms']:.1f} ms)",
                    growth if i == 0 else "",
                ]
            )
    header = [
        "model",
        "threads",
        "chunk (ms)",
        "median per chunk (ms)",
        "p99 per chunk (ms)",
        "RTF",
        "algorithmic latency (samples)",
        "resident memory growth",
    ]
    return markdown_table(header, rows)


def onnx_table(section: Mapping[str, object]) -> str:
    """The onnx section's rows: offline CPU-RTF-f and stream steps, onnxruntime beside
    PyTorch eager from the same run.

    Example
    -------
    >>> offline = {"S4M-tiny": {"eager_rtf": 0.2, "onnx_rtf": 0.1, "speedup": 2.0, "export_s": 60.0,
    ...     "parity": 1e-6}}
    >>> print(onnx_table({"threads": 2, "offline": offline, "stream": {}}).splitlines()[2])
    | S4M-tiny | CPU-RTF-f, 1 s tracks | 0.200 | 0.100 | 2.0x | 1e-06 | 60 |
    """
    rows = [
        [name, "CPU-RTF-f, 1 s tracks", f"{r['eager_rtf']:.3f}", f"{r['onnx_rtf']:.3f}", f"{r['speedup']:.1f}x"]
        + [f"{r['parity']:.2g}", f"{r['export_s']:.0f}"]
        if "refused" not in r
        else [name, "CPU-RTF-f, 1 s tracks", "-", "export refused: " + r["refused"], "-", "-", "-"]
        for name, r in section.get("offline", {}).items()
    ]
    for name, steps in section.get("stream", {}).items():
        for r in steps:
            rows.append(
                [name, f"stream step of {r['step_ms']:g} ms, median / p99 (ms)"]
                + [f"{r['torch_median_ms']:.1f} / {r['torch_p99_ms']:.1f}"]
                + [f"{r['onnx_median_ms']:.1f} / {r['onnx_p99_ms']:.1f}", f"{r['speedup']:.1f}x"]
                + [f"{r['parity']:.2g}", f"{r['export_s']:.0f}"]
            )
    header = ["model", "measure", "PyTorch eager", "onnxruntime", "speed-up", "parity (of peak)", "export (s)"]
    return markdown_table(header, rows)


ONNX_SPEEDUP_TARGET = 1.5


def onnx_targets(section: Mapping[str, object]) -> List[Dict[str, str]]:
    """The ONNX issue's goal, onnxruntime at least 1.5x faster than eager on the CPU,
    for every row of the onnx section (none without it).

    Example
    -------
    >>> onnx_targets({"offline": {"S4M": {"speedup": 1.2}}, "stream": {}})[0]["status"]
    'FAIL'
    """
    offline = section.get("offline", {})
    measured = [(name, "CPU-RTF-f", r["speedup"]) for name, r in offline.items() if "refused" not in r]
    measured += [
        (n, f"{r['step_ms']:g} ms stream step", r["speedup"])
        for n, rows in section.get("stream", {}).items()
        for r in rows
    ]
    return [
        {
            "target": f"{name} {what}: onnxruntime >= {ONNX_SPEEDUP_TARGET:g}x faster than PyTorch eager",
            "status": "PASS" if speedup >= ONNX_SPEEDUP_TARGET else "FAIL",
            "detail": f"{speedup:.2f}x",
        }
        for name, what, speedup in measured
    ]


STREAM_TARGETS = (  # (chunk ms, measure, limit, label): causal S4M-tiny, 1 thread, 8 kHz
    (8, "p99_ms", 8.0, "causal S4M-tiny, 1 thread, 8 ms chunks: p99 per chunk < 8 ms"),
    (16, "p99_ms", 12.0, "causal S4M-tiny, 1 thread, 16 ms chunks: p99 per chunk < 12 ms"),
    (64, "rtf", 0.3, "causal S4M-tiny, 1 thread, 64 ms chunks: RTF <= 0.3"),
)


def streaming_targets(streaming: Mapping[str, Mapping[str, object]]) -> List[Dict[str, str]]:
    """The streaming targets for causal S4M-tiny at 8 kHz on one thread
    (:data:`STREAM_TARGETS`), each judged on the better of the eager and the compiled
    stream, when both ran.

    Example
    -------
    >>> [t["status"] for t in streaming_targets({})]
    ['SKIP', 'SKIP', 'SKIP']
    >>> row = {"threads": 1, "chunk_ms": 16, "p99_ms": 30.0, "median_ms": 28.0, "rtf": 1.8}
    >>> fast = {**row, "p99_ms": 11.5, "median_ms": 11.0, "rtf": 0.7}
    >>> target = streaming_targets({"S4M-tiny causal": {"rows": [row]},
    ...     "S4M-tiny causal, compiled": {"rows": [fast]}})[1]
    >>> target["status"], target["detail"]
    ('PASS', 'S4M-tiny causal, compiled: p99 11.50 ms, median 11.00 ms per chunk, RTF 0.700')
    """
    names = [STREAM_TARGET_MODEL, STREAM_TARGET_MODEL + COMPILED]
    targets = []
    for chunk_ms, measure, limit, label in STREAM_TARGETS:
        found = [
            {**r, "model": n}
            for n in names
            for r in streaming.get(n, {}).get("rows", [])
            if r["threads"] == 1 and r["chunk_ms"] == chunk_ms
        ]
        if not found:
            detail = f"needs the streaming section, 1 thread, {chunk_ms} ms chunks"
            targets.append({"target": label, "status": "SKIP", "detail": detail})
            continue
        row = min(found, key=lambda r: r[measure])
        met = row[measure] <= limit if measure == "rtf" else row[measure] < limit
        detail = (
            f"{row['model']}: p99 {row['p99_ms']:.2f} ms, median {row['median_ms']:.2f} ms per chunk, "
            f"RTF {row['rtf']:.3f}"
        )
        targets.append({"target": label, "status": "PASS" if met else "MISS", "detail": detail})
    return targets


COMPILED_TARGETS = (  # (model, against, factor): compiled CPU-RTF-f at least `factor` times faster
    ("S4M-tiny", "Sepformer", 10.0),
    ("S4M-tiny", "S4M-tiny", 2.0),
    ("S4M", "Sepformer", 4.0),
)


def compiled_targets(section: Mapping[str, object]) -> List[Dict[str, str]]:
    """The compiled models' targets (:data:`COMPILED_TARGETS`): the compiled model's
    CPU-RTF-f against the eager one of the other model (or of itself), with the
    compiled-against-compiled ratio beside it; none without the compiled section.

    Example
    -------
    >>> rows = {"S4M-tiny": {"eager_rtf": 0.2, "compiled_rtf": 0.05}, "S4M": {"eager_rtf": 0.6,
    ...     "compiled_rtf": 0.2}, "Sepformer": {"eager_rtf": 1.0, "compiled_rtf": 0.5}}
    >>> first = compiled_targets({"rows": rows})[0]
    >>> first["status"], first["detail"].split(": ", 1)[1]
    ('PASS', '20.0x (against compiled Sepformer: 10.0x)')
    """
    rows = section.get("rows", {}) if section else {}
    if not rows:
        return []
    targets = []
    for name, against, factor in COMPILED_TARGETS:
        label = f"compiled {name} >= {factor:g}x faster than eager {against} (CPU-RTF-f)"
        if name not in rows or against not in rows:
            targets.append({"target": label, "status": "SKIP", "detail": f"needs {name} and {against} in --models"})
            continue
        mine, theirs = rows[name], rows[against]
        speedup = theirs["eager_rtf"] / mine["compiled_rtf"]
        detail = (
            f"compiled {name} {mine['compiled_rtf']:.4f} s per 1 s track against eager {against} "
            f"{theirs['eager_rtf']:.4f}: {speedup:.1f}x"
        )
        if against != name:
            detail += f" (against compiled {against}: {theirs['compiled_rtf'] / mine['compiled_rtf']:.1f}x)"
        targets.append({"target": label, "status": "PASS" if speedup >= factor else "MISS", "detail": detail})
    return targets


def compiled_table(section: Mapping[str, object]) -> str:
    """The compiled section's rows: eager and compiled CPU-RTF-f from the same run.

    Example
    -------
    >>> rows = {"S4M-tiny": {"how": "s4m-compile (AOTInductor)", "compile_s": 300.0, "eager_rtf": 0.2,
    ...     "compiled_rtf": 0.05, "speedup": 4.0, "parity": 1e-6}}
    >>> print(compiled_table({"threads": 2, "rows": rows}).splitlines()[2])
    | S4M-tiny | s4m-compile (AOTInductor) | 0.2000 | 0.0500 | 4.0x | 1e-06 | 300 |
    """
    rows = [
        [name, r["how"], f"{r['eager_rtf']:.4f}", f"{r['compiled_rtf']:.4f}", f"{r['speedup']:.1f}x"]
        + [f"{r['parity']:.2g}" if "parity" in r else "-", f"{r['compile_s']:.0f}"]
        for name, r in section.get("rows", {}).items()
    ]
    header = ["model", "compiled by", "eager CPU-RTF-f", "compiled CPU-RTF-f", "speed-up", "parity (of peak)"]
    return markdown_table(header + ["compile (s)"], rows)


def check_targets(record: Dict[str, object]) -> List[Dict[str, str]]:
    """The efficiency issue's targets: PASS, MISS (with the numbers) or SKIP.

    Example
    -------
    >>> [t["status"] for t in check_targets({"models": {}, "scaling": {}})]
    ['SKIP', 'SKIP', 'SKIP', 'SKIP', 'SKIP', 'SKIP', 'SKIP', 'SKIP', 'SKIP']
    """
    models = record.get("models", {})
    rows = summary_rows(models)
    targets = []

    def add(name: str, status: str, detail: str) -> None:
        targets.append({"target": name, "status": status, "detail": detail})

    sep = rows.get(REFERENCE, {}).get("cpu_rtf_f_s")
    for name, factor in (("S4M-tiny", 10.0), ("S4M", 4.0)):
        mine = rows.get(name, {}).get("cpu_rtf_f_s")
        label = f"{name} CPU forward >= {factor:g}x faster than Sepformer"
        if mine and sep:
            speedup = sep / mine
            add(
                label,
                "PASS" if speedup >= factor else "MISS",
                f"{speedup:.2f}x (Sepformer {sep:.3f} s, {name} {mine:.3f} s per 1 s track)",
            )
        else:
            add(label, "SKIP", "needs the cpu section with both models")
    steps = training_rows(models)
    label = f"CPU training step: S4M-tiny >= {TRAIN_SPEEDUP_TARGET:g}x Sepformer"
    if "S4M-tiny" in steps and REFERENCE in steps:
        mine, sep = steps["S4M-tiny"]["step_s"], steps[REFERENCE]["step_s"]
        train = models["S4M-tiny"]["train"]
        add(
            label,
            "PASS" if sep / mine >= TRAIN_SPEEDUP_TARGET else "MISS",
            f"{sep / mine:.2f}x (Sepformer {sep:.3f} s, S4M-tiny {mine:.3f} s per step of "
            f"{train['batch']} x {train['seconds']:g} s at {train['sample_rate'] / 1000:g} kHz)",
        )
    else:
        add(label, "SKIP", "needs the train section with both models")
    for name in ("S4M-tiny", "S4M"):
        macs = models.get(name, {}).get("macs")
        label = f"{name} MACs within 10% of the paper's {PAPER[name]['macs_g']} G/s"
        if macs:
            paper = PAPER[name]["macs_g"] * 1e9
            diff = macs["thop"] / paper - 1
            detail = (
                f"thop {macs['thop'] / 1e9:.2f} G/s ({diff:+.1%}); "
                f"all {macs['all'] / 1e9:.2f} G/s ({macs['all'] / paper - 1:+.1%})"
            )
            add(label, "PASS" if abs(diff) <= 0.10 else "MISS", detail)
        else:
            add(label, "SKIP", "needs the macs section")
    entries = record.get("scaling", {}).get("S4M-tiny", [])
    four = next((e for e in entries if e.get("seconds") == 4 and "time_s" in e and not e.get("long_audio")), None)
    sixty = next((e for e in entries if e.get("seconds") == 60 and "time_s" in e and not e.get("long_audio")), None)
    label = "S4M-tiny 60 s on CPU: peak memory <= 8 GiB, time <= 1.3x linear from 4 s"
    if four and sixty:
        linear = sixty["time_s"] / (four["time_s"] * 15)
        ok = sixty["peak_mib"] <= 8 * 1024 and linear <= 1.3
        faults = ""
        if "page_faults_per_run" in sixty and "page_faults_per_run" in four:
            faults = (
                f"; page faults per forward {sixty['page_faults_per_run'] / 1e6:.2f} M vs "
                f"{four['page_faults_per_run'] / 1e6:.2f} M at 4 s (see --keep-freed-memory)"
            )
        add(
            label,
            "PASS" if ok else "MISS",
            f"peak {sixty['peak_mib']:.0f} MiB, {sixty['time_s']:.2f} s = {linear:.2f}x linear from 4 s "
            f"({four['time_s']:.2f} s){faults}",
        )
    else:
        add(label, "SKIP", "needs the scaling section with lengths 4 and 60")
    targets += compiled_targets(record.get("compiled", {}))
    return targets + streaming_targets(record.get("streaming", {})) + onnx_targets(record.get("onnx", {}))


MACS_VERSUS_PAPER = (
    "Why the MACs differ from the paper's (thop on the authors' code): docs/benchmarks.md, "
    "section 'What the misses come from'."
)


def report(record: Dict[str, object]) -> str:
    """The printed / markdown report of a record (:func:`speechbrain_s4m.benchmark.cli.run`).

    Example
    -------
    >>> record = {"machine": machine_info(threads=1), "settings": {}, "models": {}, "scaling": {}}
    >>> record["targets"] = check_targets(record)
    >>> text = report(record)
    >>> text.splitlines()[0], "SKIP: S4M-tiny CPU forward >= 10x faster than Sepformer" in text
    ('# s4m-bench', True)
    """
    machine = record["machine"]
    parts = [
        "# s4m-bench",
        "",
        f"Machine: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs "
        f"({machine.get('physical_cores') or '?'} physical cores), {machine['threads']} threads; "
        f"torch {machine['torch']}, speechbrain {machine.get('speechbrain', '?')}, thop {machine.get('thop', '?')}; "
        f"GPU: {machine.get('gpu') or 'none'}; "
        f"load average {machine.get('load_average')} -> {machine.get('load_average_end')}; {machine['date']}",
        "",
        "Allocator: "
        + (
            "freed memory kept for reuse (--keep-freed-memory, glibc mallopt), for every model"
            if record["settings"].get("keep_freed_memory")
            else "glibc malloc defaults (freed blocks over 32 MiB go back to the OS)"
        ),
        "",
    ]
    if any(value is not None for row in summary_rows(record["models"]).values() for value in row.values()):
        parts += [
            "## Efficiency (paper Table 4 layout; 1 s of 16 kHz audio, batch 1)",
            "",
            main_table(record["models"]),
            "",
            "'X / Sep' columns: the figure divided by Sepformer's in this run (lower is better).",
            f"CPU-RTF-f: seconds per 1 s track ({record['settings'].get('tracks', 10)} tracks one at a time, "
            f"median of {record['settings'].get('repeats', 5)} rounds).",
            "",
            paper_table(list(record["models"])),
            "",
        ]
    if any(result.get("macs") for result in record["models"].values()):
        parts += ["## MACs by part (counting rule below)", "", macs_table(record["models"]), ""]
    if training_rows(record["models"]):
        parts += [
            "## CPU training step (LibriMix recipes' hparams)",
            "",
            training_table(record["models"]),
            "",
            "One step: forward, uPIT SI-SNR loss, backward, one Adam step of the recipe's optimizer, "
            "zero_grad; random mixtures of 2 random sources (fixed seed). Median over rounds in which "
            "the models take one step each in turn, after one warm-up step each, in one process.",
            "",
        ]
    if record.get("scaling"):
        parts += [
            "## Scaling with input length (CPU, fresh process per row)",
            "",
            scaling_table(record["scaling"]),
            "",
            "Peak memory: peak resident set size (VmHWM, the process's ru_maxrss without what Linux carries "
            "over from the parent across exec) during the timed forwards minus the resident set size before "
            "them (after building the model and a 0.25 s warm-up; the peak is reset there through "
            "/proc/self/clear_refs). 'time / linear from 4 s': forward time divided by the 4 s time scaled "
            "to the same length.",
            "",
        ]
    if record.get("streaming"):
        parts += [
            "## Streaming (causal models, LibriMix recipe, 8 kHz; StreamingSeparator)",
            "",
            streaming_table(record["streaming"]),
            "",
            "Per chunk: compute time of one StreamingSeparator.process call (a chunk that completes no "
            "block is only buffered). RTF: compute time per second of audio. Algorithmic latency: output "
            "sample u depends on input samples up to u + latency (the rest of its block plus the encoder "
            "kernel), before the chunk's own buffering. Memory growth: resident memory after the last "
            "minute minus after the first, streaming 64 ms chunks.",
            "",
        ]
    if record.get("onnx"):
        parts += [
            f"## onnxruntime against PyTorch eager (CPU, {record['onnx']['threads']} thread(s) each)",
            "",
            onnx_table(record["onnx"]),
            "",
            "CPU-RTF-f: seconds per 1 s track at 16 kHz of the eager model and of its separator.onnx, "
            "the two taking turns round by round (median of rounds). Stream steps: causal models at 8 kHz, "
            "stream_step.onnx against StreamingSeparator.process. Parity: the export's own check, the "
            "largest difference over the peak. Export: s4m-export-onnx's time for that graph.",
            "",
        ]
    if record.get("compiled"):
        parts += [
            f"## Compiled against eager (CPU, {record['compiled']['threads']} thread(s))",
            "",
            compiled_table(record["compiled"]),
            "",
            "CPU-RTF-f: seconds per 1 s track at 16 kHz, eager and compiled models all taking turns round by "
            "round (median of rounds). S4M models: separator.pt2 as s4m-compile builds it, loaded from disk; "
            "parity is its check against eager. Sepformer: torch.compile with TorchInductor's defaults.",
            "",
        ]
    if record.get("notes"):
        parts += ["## Notes", ""] + [f"- {note}" for note in record["notes"]] + [""]
    parts += (
        ["## Targets", ""] + [f"{t['status']}: {t['target']}: {t['detail']}" for t in record.get("targets", [])] + [""]
    )
    parts += ["```", COUNTING_RULE, "```", "", MACS_VERSUS_PAPER, ""]
    return "\n".join(parts)
