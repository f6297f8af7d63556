"""Tiny recipe runs for the tests that need a trained model: the real LibriMix
command line with a narrow, shallow S4M-tiny (or causal S4M-tiny) on a tiny dataset.

Usage from a test file (tests/conftest.py puts tests/ on the path)::

    from tiny_runs import train_tiny
"""

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

# Small models, same code path: fewer unfolded passes / channels / transformer layers.
SMALL = {
    "s4m": ["--num_blocks=2", "--hidden_channels=32"],
    "s4m_tiny": ["--num_blocks=2", "--hidden_channels=32"],
    "s4m_causal": ["--num_blocks=2", "--hidden_channels=32"],
    "s4m_tiny_causal": ["--num_blocks=2", "--hidden_channels=32"],
    "sepformer": ["--num_transformer_layers=1", "--N_encoder_out=64", "--out_channels=64"],
    "conv_tasnet": [
        "--num_repeats=1",
        "--num_blocks=2",
        "--N_encoder_out=32",
        "--bottleneck_channels=32",
        "--hidden_channels=32",
    ],
    "conv_tasnet_causal": [
        "--num_repeats=1",
        "--num_blocks=2",
        "--N_encoder_out=32",
        "--bottleneck_channels=32",
        "--hidden_channels=32",
    ],
    "dprnn": ["--num_layers=1", "--N_encoder_out=32", "--out_channels=32"],
    "skim": ["--num_layers=1", "--N_encoder_out=32", "--RNN_latent_size=32"],
    "skim_causal": ["--num_layers=1", "--N_encoder_out=32", "--RNN_latent_size=32"],
    "resepformer": ["--num_transformer_layers=1", "--N_encoder_out=32"],
}


def small_overrides(hparams: str) -> dict:
    """:data:`SMALL` for ``hparams`` (a file name's stem) as a dict, for hyperpyyaml."""
    pairs = (option[2:].split("=", 1) for option in SMALL[hparams])
    return {key: yaml.safe_load(value) for key, value in pairs}


def train_tiny(data, out, hparams: str = "s4m_tiny", epochs: int = 2) -> None:
    """Train ``recipes/LibriMix/separation/hparams/<hparams>.yaml`` on ``data`` into
    ``out``, narrowed by :data:`SMALL` (S4M: 2 unfolded passes of 32 channels), on the
    CPU, with no workers."""
    recipe = REPO / "recipes" / "LibriMix" / "separation"
    command = [
        sys.executable,
        str(recipe / "train.py"),
        str(recipe / "hparams" / f"{hparams}.yaml"),
        f"--data_folder={data}",
        f"--output_folder={out}",
        "--device=cpu",
        "--num_workers=0",
        "--noprogressbar",
        f"--N_epochs={epochs}",
        *SMALL[hparams],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
