"""The benchmark as plots: ``scaling.png`` (forward time and peak memory against input
length, log-log) and ``speed.png`` (real-time factors as speed-ups over Sepformer),
drawn from a ``bench.json`` record.

Authors
 * speechbrain-s4m contributors
"""

import os
from typing import Dict, List, Optional

from speechbrain_s4m.benchmark.models import REFERENCE
from speechbrain_s4m.benchmark.report import summary_rows


def _measured(entries: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """The whole-input rows of one model (not the long-audio path), by length."""
    rows = [e for e in entries if not e.get("long_audio")]
    return sorted(rows, key=lambda e: float(e["seconds"]))


def plot_scaling(scaling: Dict[str, List[Dict[str, object]]], path: str) -> Optional[str]:
    """Forward time and peak memory against input length, log-log, one line per
    model; lengths that ran out of memory (or failed) are marked with an x at the top
    of the time panel; the dotted lines scale each model's shortest measured length
    linearly. Returns ``path``, or None when there is nothing to plot.

    Example
    -------
    >>> import tempfile
    >>> rows = [{"seconds": 1, "time_s": 0.2, "peak_mib": 50}, {"seconds": 4, "time_s": 0.9, "peak_mib": 190},
    ...         {"seconds": 16, "error": "out of memory (over the 1 GiB limit)"}]
    >>> out = plot_scaling({"S4M-tiny": rows}, os.path.join(tempfile.mkdtemp(), "scaling.png"))
    >>> open(out, "rb").read(4)
    b'\\x89PNG'
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {name: _measured(entries) for name, entries in scaling.items()}
    if not any("time_s" in e for rows in series.values() for e in rows):
        return None
    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(12, 4))
    # one color per model: matplotlib's 10 by default, tab20's 20 beyond that
    palette = plt.get_cmap("tab20").colors if len(series) > 10 else [f"C{index}" for index in range(10)]
    for index, (name, rows) in enumerate(series.items()):
        color = palette[index % len(palette)]
        ok = [e for e in rows if "time_s" in e]
        failed = [e for e in rows if "time_s" not in e]
        if ok:
            lengths = [float(e["seconds"]) for e in ok]
            time_ax.loglog(lengths, [e["time_s"] for e in ok], "o-", color=color, label=name)
            memory_ax.loglog(lengths, [max(float(e["peak_mib"]), 1e-3) for e in ok], "o-", color=color, label=name)
            base = ok[0]
            span = [float(base["seconds"]), float(rows[-1]["seconds"])]
            linear = [float(base["time_s"]) * s / span[0] for s in span]
            time_ax.loglog(span, linear, ":", color=color, linewidth=1)
        for e in failed:
            top = max(float(x["time_s"]) for rows_ in series.values() for x in rows_ if "time_s" in x)
            time_ax.plot(float(e["seconds"]), top * 2, "x", color=color, markersize=10, markeredgewidth=2)
            time_ax.annotate(
                "out of memory" if "memory" in str(e.get("error", "")) else "failed",
                (float(e["seconds"]), top * 2),
                textcoords="offset points",
                xytext=(-60, 8),
                fontsize=7,
                color=color,
            )
    time_ax.plot([], [], "k:", linewidth=1, label="linear from the shortest length")
    time_ax.set(xlabel="input length (s)", ylabel="forward time (s)", title="CPU forward time")
    memory_ax.set(xlabel="input length (s)", ylabel="peak memory (MiB)", title="peak memory of the forward")
    fig.legend(*time_ax.get_legend_handles_labels(), loc="center right", fontsize=8)
    lengths = sorted({float(e["seconds"]) for rows in series.values() for e in rows})
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    for ax in (time_ax, memory_ax):
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xticks(lengths)
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_major_formatter(plain)
    fig.tight_layout(rect=(0, 0, 0.84, 1))  # the legend beside the two plots
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_speed(models: Dict[str, Dict[str, object]], path: str) -> Optional[str]:
    """Speed-ups over Sepformer (Sepformer's time / the model's) of CPU-RTF-f and,
    when measured, GPU-RTF-f and GPU-RTF-b, as grouped bars. Returns ``path``, or
    None without Sepformer's CPU figure.

    Example
    -------
    >>> import tempfile
    >>> models = {"S4M-tiny": {"cpu": {"rtf": 0.2}}, "Sepformer": {"cpu": {"rtf": 1.5}}}
    >>> out = plot_speed(models, os.path.join(tempfile.mkdtemp(), "speed.png"))
    >>> open(out, "rb").read(4)
    b'\\x89PNG'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary_rows(models)
    columns = [("cpu_rtf_f_s", "CPU-RTF-f"), ("gpu_rtf_f_ms", "GPU-RTF-f"), ("gpu_rtf_b_ms", "GPU-RTF-b")]
    reference = rows.get(REFERENCE, {})
    columns = [(key, title) for key, title in columns if reference.get(key)]
    if not columns:
        return None
    names = list(rows)
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(names), 3.6))
    for c, (key, title) in enumerate(columns):
        speedups = [reference[key] / rows[n][key] if rows[n].get(key) else 0.0 for n in names]
        positions = [i + (c - (len(columns) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(positions, speedups, width, label=title)
        ax.bar_label(bars, labels=[f"{v:.1f}x" if v else "-" for v in speedups], fontsize=8)
    ax.axhline(1.0, color="k", linewidth=0.8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(f"times faster than {REFERENCE}")
    ax.set_title("Real-time factors as speed-ups over Sepformer (same run)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(record: Dict[str, object], out_dir: str) -> List[str]:
    """``scaling.png`` and ``speed.png`` in ``out_dir`` for what ``record`` holds;
    the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = [
        plot_scaling(record.get("scaling") or {}, os.path.join(out_dir, "scaling.png")),
        plot_speed(record.get("models") or {}, os.path.join(out_dir, "speed.png")),
    ]
    return [path for path in written if path]
