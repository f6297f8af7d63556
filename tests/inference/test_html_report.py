"""The listening page: players for every signal with working relative links (spaces
and non-ASCII names included), the model card summary, no overwriting without force,
and, where Chromium is installed, the page as a browser renders it."""

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf

from speechbrain_s4m.inference.html_report import ReportEntry, model_card_summary, plot_spectrograms, write_report

CARD = """# s4m_tiny speech separator

| | |
|---|---|
| backbone | s4m_tiny |
| sample rate | 8000 Hz |

## Test results (100 utterances, mean)

| SI-SNR | SI-SNRi |
|---|---|
| 4.33 dB | 4.32 dB |
"""


def make_page(folder: Path, name: str = "ünïcode mix 1.wav"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    stem = os.path.splitext(name)[0]
    paths = {key: folder / f"{stem}_{key}.wav" for key in ("mix", "s1", "s2", "r1", "r2")}
    for path in paths.values():
        sf.write(path, 0.1 * rng.standard_normal(4000), 8000)
    image = folder / f"{stem}_spectrograms.png"
    plot_spectrograms({"mixture": sf.read(paths["mix"])[0], "source 1": sf.read(paths["s1"])[0]}, 8000, str(image))
    entry = ReportEntry(
        name=name,
        mixture=str(paths["mix"]),
        sources=[str(paths["s1"]), str(paths["s2"])],
        references=[str(paths["r1"]), str(paths["r2"])],
        spectrogram=str(image),
        metrics={"SI-SNRi (dB)": [9.5, 8.25]},
    )
    return write_report(str(folder), "test page", [entry], {"backbone": "s4m_tiny"})


def linked_files(page: Path):
    text = page.read_text(encoding="utf-8")
    return [page.parent / unquote(src) for src in re.findall(r'src="([^"]+)"', text)]


def test_page_links_every_signal_with_escaped_relative_paths(tmp_path):
    page = Path(make_page(tmp_path / "report folder"))
    text = page.read_text(encoding="utf-8")
    assert text.count("<audio controls") == 5 and "<img" in text
    links = linked_files(page)
    assert len(links) == 6 and all(path.is_file() for path in links)
    assert "%20" in text and "%C3%BC" in text and " mix 1_s1.wav" not in text  # escaped
    assert "9.50" in text and "8.25" in text and "s4m_tiny" in text
    assert "<script" not in text and "http" not in text  # offline, no framework
    moved = tmp_path / "moved"
    shutil.move(str(page.parent), moved)
    assert all(path.is_file() for path in linked_files(moved / "index.html"))  # relative links


def test_another_report_is_not_overwritten_without_force(tmp_path):
    page = Path(make_page(tmp_path))
    before = page.read_bytes()
    with pytest.raises(FileExistsError, match="--force"):
        write_report(str(tmp_path), "other", [], {})
    assert page.read_bytes() == before
    write_report(str(tmp_path), "other", [], {}, force=True)
    assert "other" in page.read_text() and not list(tmp_path.glob("*.tmp"))


def test_model_card_summary(tmp_path):
    (tmp_path / "README.md").write_text(CARD)
    assert model_card_summary(str(tmp_path)) == {
        "backbone": "s4m_tiny",
        "sample rate": "8000 Hz",
        "test SI-SNR": "4.33 dB",
        "test SI-SNRi": "4.32 dB",
    }
    assert model_card_summary(str(tmp_path / "missing")) == {}


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on the PATH (Debian: apt-get install chromium)")
def test_page_in_headless_chromium(tmp_path):
    page = Path(make_page(tmp_path / "report"))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    sources = re.findall(r'<audio controls="" preload="metadata" src="([^"]+)"', dom)
    assert len(sources) == 5 and all((page.parent / unquote(src)).is_file() for src in sources)
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()], timeout=120, check=True)
    from matplotlib import image

    pixels = image.imread(str(shot))
    assert pixels.shape[:2] == (900, 1200) and pixels[..., :3].std() > 0.05  # not blank
