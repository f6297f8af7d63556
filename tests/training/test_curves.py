"""``s4m-plot-curves``: training curves of several runs in one PNG, and its errors."""

from pathlib import Path

import pytest

from speechbrain_s4m.training.curves import main, read_training_curve

LOG = (
    "epoch: 1, lr: 1.00e-03 - train si-snr: 2.0, train audio_s_per_s: 3.0, train minutes: 1.0, "
    "train peak_mem_GB: 1.5 - valid si-snr: 1.0\n"
    "epoch: 2, lr: 5.00e-04 - train si-snr: -3.0, train audio_s_per_s: 3.2, train minutes: 2.5, "
    "train peak_mem_GB: 1.6 - valid si-snr: -2.5\n"
    "Epoch loaded: 2 - test loss: -2.5, test si-snr_i: 2.5\n"
)


def _run_folder(tmp_path: Path, name: str, text: str = LOG) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "train_log.txt").write_text(text)
    return folder


def test_curve_reads_every_epoch_with_its_statistics(tmp_path):
    points = read_training_curve(_run_folder(tmp_path, "a") / "train_log.txt")
    assert [p["epoch"] for p in points] == [1.0, 2.0]
    assert [p["valid"] for p in points] == [-1.0, 2.5]  # SI-SNR = -loss
    assert [p["minutes"] for p in points] == [1.0, 2.5]
    assert points[1]["peak_mem_GB"] == 1.6


def test_two_runs_in_one_png(tmp_path):
    out = tmp_path / "curves.png"
    runs = [_run_folder(tmp_path, "tiny"), _run_folder(tmp_path, "sepformer")]
    assert main([*map(str, runs), "--out", str(out), "--x", "minutes", "--labels", "S4M-tiny", "Sepformer"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    with pytest.raises(SystemExit):  # never overwritten without --force
        main([str(runs[0]), "--out", str(out)])
    assert main([str(runs[0]), "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["{missing}", "--out", "{png}"], "expected a run folder holding train_log.txt"),
        (["{empty}", "--out", "{png}"], "no epoch lines"),
        (["{run}", "--out", "{png}", "--labels", "a", "b"], "expected 1 labels"),
        (["{old}", "--out", "{png}", "--x", "minutes"], "has no 'minutes'"),
    ],
)
def test_bad_inputs_name_the_problem(tmp_path, capsys, arguments, message):
    paths = {
        "missing": tmp_path / "nowhere",
        "empty": _run_folder(tmp_path, "empty", "nothing here\n"),
        "run": _run_folder(tmp_path, "run"),
        "old": _run_folder(tmp_path, "old", "epoch: 1, lr: 1.00e-03 - train si-snr: 2.0 - valid si-snr: 1.0\n"),
        "png": tmp_path / "out.png",
    }
    with pytest.raises(SystemExit) as stop:
        main([a.format(**paths) for a in arguments])
    assert stop.value.code != 0
    assert message in capsys.readouterr().err
