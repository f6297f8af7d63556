"""The demo pipeline (make demo) end to end, with the quick budget: same code path,
seconds instead of minutes."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the demo (see tests/conftest.py)

REPO = Path(__file__).resolve().parents[1]


def run_demo(workdir):
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "speechbrain_s4m.demo", "--quick", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_demo_runs_every_step_and_reuses_its_data(tmp_path):
    workdir = tmp_path / "demo"
    stdout = run_demo(workdir)
    last = stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"test SI-SNRi: -?\d+\.\d\d dB", last), last

    report = workdir / "report"
    summary = json.loads((report / "metrics.json").read_text())
    assert f"{summary['test_metrics_db']['si-snr_i']:.2f}" in last
    for name in ("training_curve.png", "spectrograms.png", "README.md"):
        assert (report / name).stat().st_size > 1000 or name == "README.md"
    assert (report / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (report / "index.html").read_text(encoding="utf-8")  # mixture, 2 separated, 2 references
    assert page.count("<audio") == 5 and "SI-SNRi (dB)" in page and "test SI-SNRi" in page
    for path in summary["paths"]["separated_outputs"]:
        assert Path(path).is_file()
    assert sorted(os.listdir(workdir / "model")) == [
        "README.md",
        "decoder.ckpt",
        "encoder.ckpt",
        "hyperparams.yaml",
        "masknet.ckpt",
    ]

    # Dynamic mixing drew from links to every training source, by speaker.
    train = workdir / "data" / "Libri2Mix" / "wav8k" / "min" / "train-100"
    links = sorted((workdir / "dm_sources").glob("*/0/*.wav"))
    assert len(links) == 2 * len(list((train / "mix_clean").glob("*.wav")))
    assert {link.resolve().parent.parent for link in links} == {train}
    assert "dynamic_mixing: true" in (workdir / "run" / "hyperparams.yaml").read_text().lower()

    data_files = sorted((workdir / "data").rglob("*.wav"))
    stamps = [p.stat().st_mtime_ns for p in data_files]
    stdout = run_demo(workdir)
    assert [p.stat().st_mtime_ns for p in data_files] == stamps  # data reused
    assert "Reusing the trained and evaluated run" in stdout
