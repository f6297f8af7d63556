"""A self-contained HTML page to listen to separations: for each input, audio players
for the mixture, every separated source and, when known, the references, with the
spectrograms beside them, the metrics when references are known, and a summary of the
model card.

The page uses no JavaScript, fonts or anything online: it opens offline, and audio and
images are referenced by relative, URL-escaped paths, so the folder can be moved or
served as it is. ``s4m-separate --report`` and ``make demo`` write it.

Authors
 * speechbrain-s4m contributors
"""

import html
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence
from urllib.parse import quote

REPORT_FILE = "index.html"


@dataclass
class ReportEntry:
    """One input of the page.

    Arguments
    ---------
    name : str
        The input's name (its file name).
    mixture : str
        The mixture's audio file.
    sources : list of str
        The separated sources' audio files.
    references : list of str
        The reference sources, when known (same order as ``sources``).
    spectrogram : str, optional
        An image of the spectrograms.
    metrics : dict, optional
        Per-source figures, e.g. ``{"SI-SNRi (dB)": [9.1, 8.7]}``.
    """

    name: str
    mixture: str
    sources: List[str]
    references: List[str] = field(default_factory=list)
    spectrogram: Optional[str] = None
    metrics: Optional[Dict[str, List[float]]] = None


def model_card_summary(model_dir: str) -> Dict[str, str]:
    """The key-value rows and the test results of an ``s4m-export`` model card
    (``MODEL_DIR/README.md``); empty when there is none.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = open(os.path.join(folder, "README.md"), "w").write(
    ...     "| | |\\n|---|---|\\n| backbone | s4m_tiny |\\n\\n| SI-SNRi | SDRi |\\n|---|---|\\n| 4.3 dB | 4.7 dB |\\n")
    >>> model_card_summary(folder)
    {'backbone': 's4m_tiny', 'test SI-SNRi': '4.3 dB', 'test SDRi': '4.7 dB'}
    """
    path = os.path.join(model_dir, "README.md")
    if not os.path.isfile(path):
        return {}
    tables: List[List[List[str]]] = [[]]
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("|"):
                tables[-1].append([cell.strip() for cell in line.strip().strip("|").split("|")])
            elif tables[-1]:
                tables.append([])
    summary: Dict[str, str] = {}
    for table in tables:
        if len(table) < 3:  # header, separator, at least one row
            continue
        header, body = table[0], table[2:]
        for row in body:
            if not any(header):  # the key-value table
                if len(row) == 2:
                    summary[row[0]] = row[1]
            else:  # the test results
                summary.update({f"test {name}": value for name, value in zip(header, row)})
    return summary


def plot_spectrograms(signals: Dict[str, "object"], sample_rate: int, path: str) -> None:
    """One spectrogram per named signal, stacked, saved as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(len(signals), 1, figsize=(8, 1.9 * len(signals)), sharex=True)
    for ax, (title, signal) in zip(axes, signals.items()):
        with np.errstate(divide="ignore"):  # digital silence
            ax.specgram(np.asarray(signal), NFFT=256, Fs=sample_rate, noverlap=192, cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("Hz")
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _link(path: str, folder: str) -> str:
    return quote(os.path.relpath(path, folder).replace(os.sep, "/"))


def _audio(path: str, folder: str, label: str) -> str:
    return (
        f"<figure><figcaption>{html.escape(label)}</figcaption>"
        f'<audio controls preload="metadata" src="{_link(path, folder)}"></audio></figure>'
    )


def render_report(folder: str, title: str, entries: Sequence[ReportEntry], card: Dict[str, str]) -> str:
    """The page's HTML for files in (or below) ``folder``."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "section{border-top:1px solid #ccc;padding:1em 0}.row{display:flex;gap:2em;flex-wrap:wrap}"
        "figure{margin:0 0 .6em 0}figcaption{font-size:.85em;color:#444}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
        "img{max-width:560px;height:auto}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if card:
        parts.append("<h2>Model</h2><table>")
        parts += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in card.items()]
        parts.append("</table>")
    for entry in entries:
        parts.append(f"<section><h2>{html.escape(entry.name)}</h2><div class='row'><div>")
        parts.append(_audio(entry.mixture, folder, "mixture"))
        for s, source in enumerate(entry.sources):
            parts.append(_audio(source, folder, f"separated source {s + 1}"))
        for s, reference in enumerate(entry.references):
            parts.append(_audio(reference, folder, f"reference source {s + 1}"))
        parts.append("</div>")
        if entry.spectrogram:
            alt = f"spectrograms of {entry.name}"
            parts.append(f'<div><img src="{_link(entry.spectrogram, folder)}" alt="{html.escape(alt)}"></div>')
        parts.append("</div>")
        if entry.metrics:
            count = len(entry.sources)
            parts.append("<table><tr><th></th>" + "".join(f"<th>source {s + 1}</th>" for s in range(count)) + "</tr>")
            for name, values in entry.metrics.items():
                cells = "".join(f"<td>{value:.2f}</td>" for value in values)
                parts.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
            parts.append("</table>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def check_report_folder(folder: str, force: bool) -> str:
    """The page's path in ``folder``; raises ``FileExistsError`` when another report is
    there and ``force`` is not set (call it before writing anything)."""
    path = os.path.join(folder, REPORT_FILE)
    if os.path.exists(path) and not force:
        raise FileExistsError(f"{path} already exists (another report); use --force to replace it")
    return path


def write_report(
    folder: str, title: str, entries: Sequence[ReportEntry], card: Dict[str, str], force: bool = False
) -> str:
    """Write ``folder/index.html`` atomically; returns its path.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> entry = ReportEntry("a b.wav", os.path.join(folder, "a b.wav"), [os.path.join(folder, "a b_s1.wav")])
    >>> page = open(write_report(folder, "demo", [entry], {"backbone": "s4m_tiny"})).read()
    >>> page.count("<audio"), 'src="a%20b_s1.wav"' in page
    (2, True)
    """
    path = check_report_folder(folder, force)
    os.makedirs(folder, exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(render_report(folder, title, entries, card))
    os.replace(temporary, path)
    return path
