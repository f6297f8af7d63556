"""Training curves from the ``train_log.txt`` that SpeechBrain's FileTrainLogger
writes for every run of the recipes: read them, and plot one or several runs in one
figure (``s4m-plot-curves``), e.g. S4M-tiny against Sepformer at equal budget.

Usage
-----
    s4m-plot-curves results/s4m_tiny/1234 results/sepformer/1234 --out curves.png \\
        --labels S4M-tiny Sepformer --x minutes

Authors
 * speechbrain-s4m contributors
"""

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from speechbrain_s4m.cli import command_parser

_EPOCH_LINE = re.compile(r"epoch: (\d+),(.*) - train (.*) - valid (.*)$")
_STAT = re.compile(r"(\S+): ([-+\d.eE]+|nan|inf)")


def read_training_curve(train_log: Path) -> List[Dict[str, float]]:
    """One point per epoch from ``train_log.txt``: ``epoch``, ``train`` and ``valid``
    SI-SNR in dB (positive is better; the log holds the loss, -SI-SNR), plus the
    Brain's training statistics when logged (``minutes``, ``audio_s_per_s``,
    ``peak_mem_GB``).

    Example
    -------
    >>> import tempfile
    >>> log = Path(tempfile.mkdtemp()) / "train_log.txt"
    >>> _ = log.write_text(
    ...     "epoch: 1, lr: 1.00e-03 - train si-snr: 3.5 - valid si-snr: -2.25\\n"
    ...     "epoch: 2, lr: 1.00e-03 - train si-snr: -1.5, train audio_s_per_s: 4.2, "
    ...     "train minutes: 3.5, train peak_mem_GB: 1.1 - valid si-snr: -4\\n"
    ...     "Epoch loaded: 2 - test loss: -4.0\\n")
    >>> points = read_training_curve(log)
    >>> points[0]
    {'epoch': 1.0, 'train': -3.5, 'valid': 2.25}
    >>> points[1]["valid"], points[1]["minutes"], points[1]["audio_s_per_s"]
    (4.0, 3.5, 4.2)
    """
    points = []
    for line in Path(train_log).read_text().splitlines():
        match = _EPOCH_LINE.search(line)
        if not match:
            continue
        train = dict(_STAT.findall(match.group(3)))
        valid = dict(_STAT.findall(match.group(4)))
        if "si-snr" not in train or "si-snr" not in valid:
            continue
        point = {
            "epoch": float(match.group(1)),
            "train": -float(train.pop("si-snr")),
            "valid": -float(valid.pop("si-snr")),
        }
        point.update({key: float(value) for key, value in train.items()})
        points.append(point)
    return points


def plot_training_curves(
    runs: Dict[str, List[Dict[str, float]]],
    path: Path,
    title: str = "",
    x: str = "epoch",
) -> None:
    """Plot validation (solid) and training (dashed) SI-SNR of each run against
    ``x`` (``"epoch"`` or ``"minutes"``, wall-clock time since training started)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for index, (label, points) in enumerate(runs.items()):
        usable = [p for p in points if x in p]
        if len(usable) < len(points):
            raise ValueError(
                f"run {label!r}: its train_log.txt has no '{x}' for some epochs "
                f"(logged by speechbrain_s4m's SeparationBrain); use --x epoch"
            )
        xs = [p[x] for p in usable]
        colour = f"C{index}"
        prefix = f"{label}: " if len(runs) > 1 else ""
        ax.plot(xs, [p["valid"] for p in usable], "s-", color=colour, label=f"{prefix}validation")
        ax.plot(xs, [p["train"] for p in usable], "o--", color=colour, alpha=0.6, label=f"{prefix}train")
    ax.set_xlabel({"epoch": "epoch", "minutes": "wall-clock minutes (validation included)"}.get(x, x))
    ax.set_ylabel("SI-SNR (dB)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = command_parser(
        prog="s4m-plot-curves",
        description="Plot the training curves (train and validation SI-SNR) of recipe runs in one PNG.",
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (holding train_log.txt) or train_log.txt files")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--labels", nargs="+", default=None, help="one label per run (default: the folder names)")
    parser.add_argument("--x", choices=["epoch", "minutes"], default="epoch", help="x axis (default: epoch)")
    parser.add_argument("--title", default="")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.runs):
        parser.error(f"--labels: expected {len(args.runs)} labels (one per run), got {len(args.labels)}")
    if args.out.exists() and not args.force:
        parser.error(f"--out: {args.out} exists; pass --force to replace it")
    runs = {}
    for index, run in enumerate(args.runs):
        log = run / "train_log.txt" if run.is_dir() else run
        if not log.is_file():
            parser.error(f"{run}: expected a run folder holding train_log.txt, or the log file itself")
        points = read_training_curve(log)
        if not points:
            parser.error(f"{log}: no epoch lines with train and valid SI-SNR")
        label = args.labels[index] if args.labels else (run.name if run.is_dir() else run.parent.name)
        runs[label] = points
    try:
        plot_training_curves(runs, args.out, args.title, args.x)
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
