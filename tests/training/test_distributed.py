"""Training on several processes (DDP on gloo, CPU): every rank trains one model and
takes the same decisions. Each test runs tests/training/ddp_fit.py (speechbrain_s4m.training.ddp_check:
the LibriMix recipe, small models) under torchrun and compares what the ranks end with."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny_datasets import make_librimix

from speechbrain_s4m.training.ddp_check import differing_parameters

pytestmark = pytest.mark.slow  # spawns processes (see tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
HPARAMS = REPO / "recipes" / "LibriMix" / "separation" / "hparams"
SMALL = {
    "s4m_tiny": ["--num_blocks=2", "--hidden_channels=32"],
    "sepformer": ["--num_transformer_layers=1", "--N_encoder_out=64", "--out_channels=64"],
}


def train_two_ranks(hparams, data, out, *options, port, env=None):
    """Run tests/training/ddp_fit.py on two gloo processes; return both ranks' saved states."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        str(REPO / "tests" / "training" / "ddp_fit.py"),
        str(HPARAMS / f"{hparams}.yaml"),
        f"--data_folder={data}",
        f"--output_folder={out}",
        "--device=cpu",
        "--distributed_backend=gloo",
        "--num_workers=0",
        "--noprogressbar",
        "--batch_size=1",
        *SMALL[hparams],
        *options,
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, env=environment)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    states = [torch.load(out / f"rank{r}.pt") for r in range(2)]
    return states, result.stdout + result.stderr


def assert_same_model(states, log):
    differing = differing_parameters(states)
    assert not differing, f"the ranks ended with different {differing[:5]}"
    assert "ranks agree: 2 ranks" in log  # ddp_check's own verdict


# S4M-tiny: in the test below, which also puts a NaN example and a budget on one rank.
@pytest.mark.parametrize("hparams, port", [("sepformer", 29572)])
def test_two_ranks_train_one_model(hparams, port, tmp_path):
    data = make_librimix(tmp_path / "data", n_train=8)
    states, log = train_two_ranks(hparams, data, tmp_path / "out", "--N_epochs=1", port=port)
    assert_same_model(states, log)
    assert [s["optimizer_step"] for s in states] == [4, 4]  # 8 examples, 2 ranks, batch 1


def test_ranks_agree_on_a_nan_example_and_a_budget_spent_on_one_rank(tmp_path):
    data = make_librimix(tmp_path / "data", n_train=8, with_noise=False)
    # One training mixture's second source holds a NaN: it reaches one rank per epoch.
    source = next((Path(data) / "Libri2Mix" / "wav8k" / "min" / "train-100" / "s2").glob("*.wav"))
    signal, rate = sf.read(source, dtype="float32")
    signal[len(signal) // 2] = np.nan
    sf.write(source, signal, rate, subtype="FLOAT")
    states, log = train_two_ranks(
        "s4m_tiny",
        data,
        tmp_path / "out",
        "--N_epochs=3",
        "--max_train_minutes=600",
        port=29573,
        env={"S4M_BUDGET_STEPS_ON_RANK1": "5"},
    )
    assert_same_model(states, log)
    steps = [s["optimizer_step"] for s in states]
    skipped = [s["skipped"] for s in states]
    assert steps[0] == steps[1] and skipped[0] == skipped[1] >= 1, (steps, skipped)
    # Rank 1 spent its budget after 5 steps; every rank stopped after the next batch
    # (at most 3 epochs x 3 steps otherwise: 4 batches a rank, 1 skipped).
    assert steps[0] in (5, 6), steps
    assert f"non-finite audio (NaN or Inf) in {source.stem}" in log
    assert "non-finite audio (NaN or Inf) in a batch of another DDP rank" in log
    assert "Training budget of 600 minutes spent; stopping" in log
