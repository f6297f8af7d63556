"""A recipe run from before the package moved into rooms (commit 6a73091) resumes.

``tests/fixtures/run_6a73091`` holds what such a run leaves: its ``hyperparams.yaml``,
which names the early-stopping counter by its old path
(``speechbrain_s4m.speechbrain_compat.EarlyStoppingCounter``), and the checkpoint it
saved after its one epoch (a tiny causal S4M-tiny on the tests' tiny LibriMix)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_datasets import make_librimix

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "run_6a73091"
RECORDED_RUN, RECORDED_DATA = "/tmp/fixture_work/run", "/tmp/fixture_work/data"  # where it ran


@pytest.mark.slow
def test_a_run_saved_before_the_move_resumes_where_it_stopped(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    data = make_librimix(tmp_path / "data", with_noise=False)
    hparams = (FIXTURE / "hyperparams.yaml").read_text()
    assert "speechbrain_s4m.speechbrain_compat.EarlyStoppingCounter" in hparams
    # the saved file holds values, not references: one more epoch is the counter's limit
    assert hparams.count("\n  limit: 1\n") == 1
    hparams = hparams.replace("\n  limit: 1\n", "\n  limit: 2\n")
    (run / "hyperparams.yaml").write_text(hparams.replace(RECORDED_RUN, str(run)).replace(RECORDED_DATA, str(data)))
    recipe = REPO / "recipes" / "LibriMix" / "separation"
    command = [sys.executable, str(recipe / "train.py"), str(run / "hyperparams.yaml")]
    command += ["--device=cpu", "--noprogressbar"]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "speechbrain_s4m.speechbrain_compat moved to speechbrain_s4m.training.speechbrain_compat" in result.stderr

    log = (run / "train_log.txt").read_text()
    assert "epoch: 1," not in log and log.count("epoch: 2,") == 1, log  # epoch 1 came from the checkpoint
    assert "Epoch loaded: 2" in log
    newest = max((run / "save").glob("CKPT+*"), key=lambda path: path.name)
    assert yaml.safe_load((newest / "counter.ckpt").read_text())["current_epoch"] == 2
    assert (run / "test_results.csv").is_file()
