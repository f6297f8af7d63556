"""``make gpu-check``: the training and inference paths on a GPU, checked in one run and
printed as one table.

::

    python -m speechbrain_s4m.benchmark.gpu_check [--out FILE]

Rows (``device`` is ``cuda`` when a GPU is present, else only the CPU half runs):

* ``train step``: forward and backward of S4M, S4M-tiny and Sepformer (the LibriMix
  recipe's models) in fp32, fp16 (with the grad scaler; GPU only) and bf16, under
  autocast as the Brain runs them: the loss and every gradient finite;
* ``host syncs`` (GPU): ``SeparationBrain.fit_batch`` under
  ``torch.cuda.set_sync_debug_mode``, the synchronisations of one training batch;
* ``CPU = CUDA`` (GPU): the same weights and inputs on both, TF32 off: the outputs'
  and the gradients' largest differences relative to their peaks;
* ``stream = offline``: the causal stream of causal S4M-tiny on the device, against
  the offline forward pass;
* ``recipe``: the LibriMix recipe's ``--debug`` run (2 epochs of 2 batches) with
  ``--precision=fp16`` (GPU only: SpeechBrain refuses it on the CPU) and ``bf16`` on a
  small synthetic dataset;
* ``DDP``: two processes on one device (gloo) train the recipe one epoch
  (:mod:`speechbrain_s4m.training.ddp_check`): bit-identical parameters;
* ``GPU-RTF`` (GPU): Table 4's GPU-RTF-f and GPU-RTF-b of the three models
  (:func:`speechbrain_s4m.benchmark.timing.gpu_rtf`, 1 s tracks at 16 kHz), from
  one run.

On the CPU the models are small (2 unfolded passes of 32 channels, one Sepformer
layer), so that the CPU half runs in about a minute; on a GPU they are full size. The
exit status is 1 when a check fails.

Authors
 * speechbrain-s4m contributors
"""

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch

from speechbrain_s4m.benchmark.models import (
    DEFAULT_MODELS,
    RECIPES_DIR,
    TRAIN_HPARAMS_DIR,
    build_model,
    load_recipe_model,
    recipe_hparams_file,
)
from speechbrain_s4m.benchmark.report import markdown_table

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Small models for the CPU half: the same code paths, fewer passes, channels, layers.
SMALL = {
    "S4M-tiny": {"num_blocks": 2, "hidden_channels": 32},
    "S4M": {"num_blocks": 2, "hidden_channels": 32},
    "S4M-tiny causal": {"num_blocks": 2, "hidden_channels": 32},
    "Sepformer": {"num_transformer_layers": 1, "N_encoder_out": 64, "out_channels": 64},
}
RECIPE = os.path.join(RECIPES_DIR, "LibriMix", "separation")


@dataclass
class Row:
    """One line of the table."""

    check: str
    device: str
    passed: Optional[bool]  # None: measured, nothing to pass
    detail: str


def _overrides(name: str, device: torch.device) -> Dict[str, object]:
    return {} if device.type == "cuda" else SMALL[name]


def _batch(device: torch.device, batch: int = 2, seconds: float = 1.0, rate: int = 8000, seed: int = 0):
    """Mixtures ``[B, T]`` and their two sources ``[B, T, 2]`` of noise."""
    generator = torch.Generator().manual_seed(seed)
    sources = torch.randn(batch, int(seconds * rate), 2, generator=generator) * torch.tensor([1.0, 0.5])
    return sources.sum(-1).to(device), sources.to(device)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |a|``."""
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


# -------------------------------------------------------------------- the checks
def train_step(name: str, precision: str, device: torch.device) -> Row:
    """Forward and backward of one model in one precision, as the Brain runs them."""
    setup = load_recipe_model(recipe_hparams_file(name, TRAIN_HPARAMS_DIR), _overrides(name, device))
    separator = setup.separator.to(device)
    mix, sources = _batch(device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    with torch.autocast(device.type, dtype=PRECISIONS[precision], enabled=precision != "fp32"):
        loss = setup.loss(sources, separator(mix)).mean()
    scaler.scale(loss).backward()
    scaler.unscale_(setup.optimizer)
    grads = [p.grad for p in separator.parameters() if p.grad is not None]
    finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
    detail = f"loss {loss.item():.2f}, {len(grads)} gradients " + ("finite" if finite else "NOT finite")
    return Row(f"train step {name} {precision}", device.type, finite, detail)


def host_syncs(device: torch.device) -> Row:
    """The host synchronisations of one ``SeparationBrain.fit_batch`` on CUDA
    (``torch.cuda.set_sync_debug_mode``): in all, and between the start of the forward
    pass (the encoder's call) and the backward pass (the loss handed to the grad
    scaler), where at most one, the skip vote, is expected."""
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.dataio.batch import PaddedBatch

    from speechbrain_s4m.training.brain import SeparationBrain

    with tempfile.TemporaryDirectory(prefix="s4m-gpu-check-") as folder:
        overrides = {"data_folder": folder, "output_folder": folder, "use_speedperturb": False}
        with open(recipe_hparams_file("S4M-tiny", TRAIN_HPARAMS_DIR), encoding="utf-8") as handle:
            hparams = load_hyperpyyaml(handle, overrides)
        brain = SeparationBrain(hparams["modules"], hparams["optimizer"], hparams, {"device": str(device)})
    brain.init_optimizers()
    brain.skipped_batches, brain.fit_start_time, brain.train_audio_seconds, brain.step = 0, 0.0, 0.0, 1
    mix, sources = _batch(torch.device("cpu"))
    examples = [
        {"id": f"ex{i}", "mix_sig": mix[i], "s1_sig": sources[i, :, 0], "s2_sig": sources[i, :, 1]} for i in range(2)
    ]
    batch = PaddedBatch(examples)
    brain.fit_batch(batch)  # warm-up
    torch.cuda.synchronize(device)
    caught: List[warnings.WarningMessage] = []
    marks: Dict[str, int] = {}
    scale = brain.scaler.scale

    def forward_starts(module: torch.nn.Module, inputs: tuple) -> None:
        marks.setdefault("forward", len(caught))

    def scale_before_backward(loss: torch.Tensor) -> torch.Tensor:
        marks.setdefault("backward", len(caught))
        return scale(loss)

    hook = brain.modules["encoder"].register_forward_pre_hook(forward_starts)
    brain.scaler.scale = scale_before_backward
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        caught = recorded
        torch.cuda.set_sync_debug_mode("warn")
        try:
            brain.fit_batch(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            hook.remove()
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    window = [w for w in caught[marks.get("forward", 0) : marks.get("backward", len(caught))] if w in syncs]
    where = sorted({f"{os.path.basename(w.filename)}:{w.lineno}" for w in window})
    detail = f"{len(syncs)} in the batch, {len(window)} between forward and backward {where}"
    return Row("host syncs per training batch (fit_batch)", device.type, len(window) <= 1, detail)


def cpu_cuda_parity(name: str, device: torch.device) -> Row:
    """The same model on the CPU and on CUDA (TF32 off): outputs and gradients."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    setup = load_recipe_model(recipe_hparams_file(name, TRAIN_HPARAMS_DIR))
    on_cpu = setup.separator.eval()  # no dropout: the same function on both
    on_gpu = copy.deepcopy(on_cpu).to(device)
    mix, sources = _batch(torch.device("cpu"))
    results = []
    for model, where in ((on_cpu, torch.device("cpu")), (on_gpu, device)):
        estimates = model(mix.to(where))
        setup.loss(sources.to(where), estimates).mean().backward()
        results.append((estimates.detach().cpu(), [p.grad.detach().cpu() for p in model.parameters()]))
    (cpu_out, cpu_grads), (gpu_out, gpu_grads) = results
    output_error = _relative(cpu_out, gpu_out)
    grad_error = max(_relative(a, b) for a, b in zip(cpu_grads, gpu_grads) if a.abs().max() > 0)
    passed = output_error < 1e-3 and grad_error < 1e-2
    return Row(f"CPU = CUDA {name}", device.type, passed, f"outputs {output_error:.1e}, gradients {grad_error:.1e}")


def stream_equals_offline(device: torch.device) -> Row:
    """Causal S4M-tiny streamed in 16 ms chunks on ``device`` against its offline pass."""
    from speechbrain_s4m.inference.streaming import StreamingSeparator

    name = "S4M-tiny causal"
    model = build_model(name, 8000, _overrides(name, device), TRAIN_HPARAMS_DIR).to(device)
    stream = StreamingSeparator(model.encoder, model.masknet, model.decoder, 8000)
    mix, _ = _batch(torch.device("cpu"), batch=1, seconds=2.0)
    streamed = torch.cat([stream.process(chunk) for chunk in mix[0].split(128)] + [stream.flush()])
    with torch.inference_mode():
        offline = model(mix.to(device))[0].cpu()
    error = _relative(offline, streamed)
    return Row(
        "stream = offline (causal S4M-tiny)", device.type, error < 1e-4, f"largest difference {error:.1e} of the peak"
    )


def _failure(result: subprocess.CompletedProcess) -> str:
    """The error a failed command ended with: its last line naming an error, else
    the end of its output."""
    lines = (result.stderr + result.stdout).splitlines()
    errors = [line for line in lines if "Error" in line or "error:" in line]
    return (errors[-1] if errors else " ".join(lines[-3:]))[-300:]


def _synthetic_data(folder: str) -> str:
    from speechbrain_s4m.data.synthetic import make_synthetic_librimix

    return make_synthetic_librimix(folder, num_train=4, num_dev=2, num_test=2, progress=False, workers=1)


def recipe_run(precision: str, device: torch.device, data: str, folder: str) -> Row:
    """The LibriMix recipe's ``--debug`` run in one precision."""
    out = os.path.join(folder, f"recipe-{precision}")
    command = [
        sys.executable,
        os.path.join(RECIPE, "train.py"),
        os.path.join(RECIPE, "hparams", "s4m_tiny.yaml"),
        f"--data_folder={data}",
        f"--output_folder={out}",
        f"--device={device}",
        f"--precision={precision}",
        "--debug",
        "--num_workers=0",
        "--noprogressbar",
        *[f"--{key}={value}" for key, value in _overrides("S4M-tiny", device).items()],
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    passed = result.returncode == 0 and os.path.isfile(os.path.join(out, "test_results.csv"))
    detail = "2 epochs, tested" if passed else _failure(result)
    return Row(f"recipe --precision={precision}", device.type, passed, detail)


def ddp_run(device: torch.device, data: str, folder: str) -> Row:
    """Two processes on one device (gloo) train the recipe one epoch."""
    out = os.path.join(folder, "ddp")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29581",
        "-m",
        "speechbrain_s4m.training.ddp_check",
        os.path.join(RECIPE, "hparams", "s4m_tiny.yaml"),
        f"--data_folder={data}",
        f"--output_folder={out}",
        f"--device={device}:0" if device.type == "cuda" else "--device=cpu",
        "--distributed_backend=gloo",
        "--N_epochs=1",
        "--batch_size=1",
        "--num_workers=0",
        "--noprogressbar",
        *[f"--{key}={value}" for key, value in _overrides("S4M-tiny", device).items()],
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    verdict = [line for line in result.stdout.splitlines() if line.startswith("ranks ")]
    passed = result.returncode == 0 and bool(verdict) and verdict[-1].startswith("ranks agree")
    detail = verdict[-1] if verdict else _failure(result)
    return Row("DDP, 2 processes on one device (gloo)", device.type, passed, detail)


def gpu_rtf_rows(device: torch.device) -> List[Row]:
    """Table 4's GPU-RTF-f and GPU-RTF-b (ms per 1 s track at 16 kHz), one run."""
    from speechbrain_s4m.benchmark.timing import gpu_rtf

    models = {name: build_model(name) for name in DEFAULT_MODELS}
    rtf = gpu_rtf(models, device=device)
    name_of = torch.cuda.get_device_name(device)
    return [
        Row(
            f"GPU-RTF {name}",
            device.type,
            None,
            f"{r['forward_ms']:.2f} ms forward, {r['backward_ms']:.2f} ms forward+backward ({name_of})",
        )
        for name, r in rtf.items()
    ]


# ------------------------------------------------------------------------ the run
def _guarded(check: Callable[[], Row], name: str, device: torch.device) -> Row:
    """A check's row, or a failed row naming the exception it raised."""
    try:
        return check()
    except Exception as error:  # a check that crashes is a failed check, the others still run
        return Row(name, device.type, False, f"{type(error).__name__}: {str(error).splitlines()[0][:300]}")


def run(log: Callable[[str], None] = print) -> List[Row]:
    """Every check on the CPU half and, with CUDA, the GPU half."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    precisions = ["fp32", "fp16", "bf16"] if cuda else ["fp32", "bf16"]  # fp16 on the CPU: slow, and not what users run
    rows: List[Row] = []

    def add(name: str, check: Callable[[], Row]) -> None:
        rows.append(_guarded(check, name, device))
        verdict = {True: "PASS", False: "FAIL", None: "    "}[rows[-1].passed]
        log(f"{verdict}  {name}: {rows[-1].detail}")

    for name in DEFAULT_MODELS:
        for precision in precisions:
            add(f"train step {name} {precision}", lambda: train_step(name, precision, device))
    if cuda:
        add("host syncs per training batch (fit_batch)", lambda: host_syncs(device))
        for name in DEFAULT_MODELS:
            add(f"CPU = CUDA {name}", lambda: cpu_cuda_parity(name, device))
    add("stream = offline (causal S4M-tiny)", lambda: stream_equals_offline(device))
    with tempfile.TemporaryDirectory(prefix="s4m-gpu-check-") as folder:
        data = _synthetic_data(os.path.join(folder, "data"))
        for precision in ("fp16", "bf16") if cuda else ("bf16",):  # SpeechBrain refuses fp16 on the CPU
            add(f"recipe --precision={precision}", lambda: recipe_run(precision, device, data, folder))
        add("DDP, 2 processes on one device (gloo)", lambda: ddp_run(device, data, folder))
    if cuda:
        try:
            rows += gpu_rtf_rows(device)
        except Exception as error:
            rows.append(Row("GPU-RTF", device.type, False, f"{type(error).__name__}: {error}"))
    return rows


def table(rows: Sequence[Row]) -> str:
    """The rows as a markdown table, then a line saying whether the GPU half ran."""
    status = {True: "pass", False: "**FAIL**", None: ""}
    body = markdown_table(
        ["check", "device", "result", "detail"], [[r.check, r.device, status[r.passed], r.detail] for r in rows]
    )
    if torch.cuda.is_available():
        return body + f"\nGPU half ran on {torch.cuda.get_device_name()} (torch {torch.__version__})."
    missing = "fp16, host syncs, CPU = CUDA, GPU-RTF"
    return body + f"\nNo CUDA device: only the CPU half ran; the GPU half ({missing}) did not run."


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    rows = run()
    text = table(rows)
    print("\n" + text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return 1 if any(row.passed is False for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
