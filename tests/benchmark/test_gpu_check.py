"""``make gpu-check``'s CPU half, as CI runs it: every check passes, the table says
that the GPU half did not run (without CUDA)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # trains, runs the recipe and spawns processes

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_its_cpu_half(tmp_path):
    out = tmp_path / "gpu_check.md"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "speechbrain_s4m.benchmark.gpu_check", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    table = out.read_text()
    for check in [
        "train step S4M-tiny fp32",
        "train step S4M bf16",
        "train step Sepformer bf16",
        "stream = offline (causal S4M-tiny)",
        "recipe --precision=bf16",
        "DDP, 2 processes on one device (gloo)",
    ]:
        assert f"| {check} |" in table, check
    assert "**FAIL**" not in table
    assert "ranks agree: 2 ranks" in table
    if not torch.cuda.is_available():
        assert "the GPU half (fp16, host syncs, CPU = CUDA, GPU-RTF) did not run" in table
