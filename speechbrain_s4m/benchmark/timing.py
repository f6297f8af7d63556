"""Timed measurements in this process: CPU-RTF-f, GPU-RTF-f and GPU-RTF-b of the
forward sections, and the CPU training step of the train section.

Authors
 * speechbrain-s4m contributors
"""

import os
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from speechbrain_s4m.benchmark.models import (
    SAMPLE_RATE,
    TRAIN_HPARAMS_DIR,
    RecipeModel,
    check_overrides,
    count_parameters,
    load_recipe_model,
    recipe_hparams_file,
)
from speechbrain_s4m.benchmark.report import ratios


class RunnerModule(nn.Module):
    """A separator that runs outside PyTorch's modules (an onnxruntime graph, a compiled
    package: anything with ``separate_batch``, numpy ``[B, T] -> [B, T, C]``) behind the
    interface of a PyTorch separator, ``[B, T] -> [B, T, C]``, so that the timing code
    runs every runtime alike.

    Example
    -------
    >>> class Halves:
    ...     def separate_batch(self, mix): return (mix[..., None] / 2).repeat(2, -1)
    >>> RunnerModule(Halves())(torch.ones(1, 4)).shape
    torch.Size([1, 4, 2])
    """

    def __init__(self, runner):
        super().__init__()
        self.runner = runner

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runner.separate_batch(mix.numpy()))


def _tracks(count: int, seconds: float, sample_rate: int, seed: int = 0) -> List[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, int(round(seconds * sample_rate)), generator=generator) for _ in range(count)]


def time_forward(
    model: nn.Module,
    tracks: Sequence[torch.Tensor],
    device: torch.device = torch.device("cpu"),
) -> float:
    """Seconds per track to separate ``tracks`` one at a time (``inference_mode``),
    i.e. the real-time factor for 1 s tracks; synchronised on GPUs.

    Example
    -------
    >>> time_forward(nn.Identity(), [torch.zeros(1, 10)] * 3) >= 0
    True
    """
    model.eval()
    tracks = [t.to(device) for t in tracks]
    with torch.inference_mode():
        _synchronize(device)
        start = time.perf_counter()
        for mix in tracks:
            model(mix)
        _synchronize(device)
        return (time.perf_counter() - start) / len(tracks)


def time_forward_backward(
    model: nn.Module,
    tracks: Sequence[torch.Tensor],
    device: torch.device = torch.device("cpu"),
) -> float:
    """Seconds per track of a training step's forward and backward pass (mean-square
    loss of the estimates, training mode, gradients freed after each track).

    Example
    -------
    >>> time_forward_backward(nn.Linear(10, 10), [torch.zeros(1, 10)] * 3) >= 0
    True
    """
    model.train()
    tracks = [t.to(device) for t in tracks]
    _synchronize(device)
    start = time.perf_counter()
    for mix in tracks:
        model(mix).square().mean().backward()
        model.zero_grad(set_to_none=True)
    _synchronize(device)
    elapsed = (time.perf_counter() - start) / len(tracks)
    model.eval()
    return elapsed


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_rtf(
    models: Dict[str, nn.Module],
    tracks: int = 10,
    seconds: float = 1.0,
    repeats: int = 5,
    sample_rate: int = SAMPLE_RATE,
    log: Callable[[str], None] = lambda message: None,
) -> Dict[str, Dict[str, object]]:
    """CPU-RTF-f of every model: ``tracks`` tracks of ``seconds`` separated one at a
    time, time / tracks, median over ``repeats`` rounds in which the models take
    turns (one warm-up track each first).

    Returns
    -------
    dict
        ``{model: {"rtf": median seconds per track / seconds, "rounds": [...]}}``.

    Example
    -------
    >>> result = cpu_rtf({"identity": nn.Identity()}, tracks=2, repeats=3, sample_rate=100)
    >>> sorted(result["identity"])
    ['rounds', 'rtf']
    """
    audio = _tracks(tracks, seconds, sample_rate)
    rounds: Dict[str, List[float]] = {name: [] for name in models}
    for name, model in models.items():
        time_forward(model, audio[:1])  # warm-up
    for r in range(repeats):
        for name, model in models.items():
            rounds[name].append(time_forward(model, audio) / seconds)
        log(f"  round {r + 1}/{repeats}: " + ", ".join(f"{n} {v[-1]:.3f}" for n, v in rounds.items()))
    return {name: {"rtf": statistics.median(values), "rounds": values} for name, values in rounds.items()}


def gpu_rtf(
    models: Dict[str, nn.Module],
    tracks: int = 10,
    seconds: float = 1.0,
    repeats: int = 5,
    sample_rate: int = SAMPLE_RATE,
    device: Optional[torch.device] = None,
    log: Callable[[str], None] = lambda message: None,
) -> Dict[str, Dict[str, object]]:
    """GPU-RTF-f and GPU-RTF-b (milliseconds per track of ``seconds``): forward in
    ``inference_mode``, and forward + backward in training mode, after 3 warm-up
    tracks, synchronised, median over ``repeats`` rounds. Models are moved to
    ``device`` and back to the CPU afterwards.

    Example
    -------
    >>> r = gpu_rtf({"id": nn.Linear(100, 100)}, tracks=2, repeats=1, sample_rate=100,
    ...             device=torch.device("cpu"))
    >>> sorted(r["id"])
    ['backward_ms', 'backward_rounds', 'forward_ms', 'forward_rounds']
    """
    device = device or torch.device("cuda")
    audio = _tracks(tracks, seconds, sample_rate)
    result = {}
    for name, model in models.items():
        model.to(device)
        try:
            time_forward(model, audio[:3], device)
            time_forward_backward(model, audio[:3], device)
            forward = [time_forward(model, audio, device) * 1e3 for _ in range(repeats)]
            backward = [time_forward_backward(model, audio, device) * 1e3 for _ in range(repeats)]
        finally:
            model.to("cpu")
            if device.type == "cuda":
                torch.cuda.empty_cache()
        result[name] = {
            "forward_ms": statistics.median(forward),
            "backward_ms": statistics.median(backward),
            "forward_rounds": forward,
            "backward_rounds": backward,
        }
        forward_ms, backward_ms = result[name]["forward_ms"], result[name]["backward_ms"]
        log(f"  {name}: GPU forward {forward_ms:.2f} ms, forward+backward {backward_ms:.2f} ms")
    return result


def training_batch(
    batch: int, seconds: float, sample_rate: int, num_spks: int = 2, seed: int = 0
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random sources ``[batch, time, num_spks]`` (fixed ``seed``) and their mixture
    ``[batch, time]``.

    Example
    -------
    >>> mix, sources = training_batch(2, 0.5, 100)
    >>> mix.shape, sources.shape
    (torch.Size([2, 50]), torch.Size([2, 50, 2]))
    >>> torch.allclose(mix, sources.sum(-1))
    True
    """
    generator = torch.Generator().manual_seed(seed)
    sources = torch.randn(batch, int(round(seconds * sample_rate)), num_spks, generator=generator)
    return sources.sum(-1), sources


def training_step(setup: RecipeModel, mix: torch.Tensor, sources: torch.Tensor) -> float:
    """One optimisation step: separate ``mix``, the mean of the recipe's loss (uPIT
    SI-SNR) against ``sources``, backward, ``optimizer.step()``, ``zero_grad``.

    Returns
    -------
    float
        The loss before the step.
    """
    estimates = setup.separator(mix)  # [batch, time, spks]
    loss = setup.loss(sources, estimates).mean()
    loss.backward()
    setup.optimizer.step()
    setup.optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _timed_step(setup: RecipeModel, mix: torch.Tensor, sources: torch.Tensor) -> Tuple[float, float]:
    start = time.perf_counter()
    loss = training_step(setup, mix, sources)
    return time.perf_counter() - start, loss


def cpu_training(
    setups: Dict[str, RecipeModel],
    rounds: int = 5,
    warmup: int = 1,
    batch: int = 2,
    seconds: float = 2.0,
    seed: int = 0,
    log: Callable[[str], None] = lambda message: None,
) -> Dict[str, Dict[str, object]]:
    """Time training steps (:func:`training_step`) of every model on the CPU: a
    batch of ``batch`` random mixtures of ``seconds`` at each model's sample rate,
    ``warmup`` untimed steps each, then ``rounds`` rounds in which every model takes
    one step in turn.

    Returns
    -------
    dict
        ``{model: {"step_s": median seconds per step, "rounds_s": [...],
        "losses": [...] (timed steps), "audio_s_per_s": batch x seconds / step_s,
        "sepformer_over_model": Sepformer's step_s / the model's (None without
        Sepformer), "params", "batch", "seconds", "sample_rate", "hparams_file"}}``.
    """
    data = {
        name: training_batch(batch, seconds, setup.sample_rate, setup.num_spks, seed) for name, setup in setups.items()
    }
    for name, setup in setups.items():
        setup.separator.train()
        for _ in range(warmup):
            training_step(setup, *data[name])
    times: Dict[str, List[float]] = {name: [] for name in setups}
    losses: Dict[str, List[float]] = {name: [] for name in setups}
    for r in range(rounds):
        for name, setup in setups.items():
            elapsed, loss = _timed_step(setup, *data[name])
            times[name].append(elapsed)
            losses[name].append(loss)
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:.3f} s" for n, v in times.items()))
    steps = {name: {"step_s": statistics.median(values)} for name, values in times.items()}
    relative = ratios(steps)
    return {
        name: {
            "step_s": steps[name]["step_s"],
            "rounds_s": times[name],
            "losses": losses[name],
            "audio_s_per_s": batch * seconds / steps[name]["step_s"],
            "sepformer_over_model": 1 / relative[name]["step_s"] if relative[name]["step_s"] else None,
            "params": count_parameters(setup.separator),
            "batch": batch,
            "seconds": seconds,
            "sample_rate": setup.sample_rate,
            "hparams_file": setup.hparams_file,
        }
        for name, setup in setups.items()
    }


def training_section(
    names: Sequence[str],
    rounds: int = 5,
    batch: int = 2,
    seconds: float = 2.0,
    hparams_dir: str = TRAIN_HPARAMS_DIR,
    overrides: Optional[Dict[str, Dict[str, Any]]] = None,
    log: Callable[[str], None] = lambda message: None,
) -> Dict[str, Dict[str, object]]:
    """The ``train`` section: build the recipe model of each of ``names``
    (:func:`~speechbrain_s4m.benchmark.models.recipe_hparams_file` in ``hparams_dir``)
    once, with ``overrides[name]``, and time them with :func:`cpu_training`.

    Raises
    ------
    ValueError
        For an unknown model, overrides that are not ``{model: {key: value}}`` of
        known models or name a key the file lacks, or a missing hparams file.
    """
    overrides = overrides or {}
    check_overrides(overrides, "training overrides")
    files = {name: recipe_hparams_file(name, hparams_dir) for name in names}
    missing = [path for path in files.values() if not os.path.isfile(path)]
    if missing:
        raise ValueError(f"recipe hparams not found: {', '.join(missing)} (see --train-hparams-dir)")
    setups = {name: load_recipe_model(path, overrides.get(name)) for name, path in files.items()}
    return cpu_training(setups, rounds=rounds, batch=batch, seconds=seconds, log=log)
