"""One separation Brain shared by every recipe (WSJ0Mix, LibriMix, LRS2Mix) and every
backbone (S4M, S4M-tiny, SpeechBrain's Sepformer).

The forward pass is SpeechBrain's, written once in
:class:`~speechbrain_s4m.lobes.encoder_masker_decoder.EncoderMaskerDecoder`: ``mix_w = Encoder(mix)``,
``masks = MaskNet(mix_w)`` ``[spks, batch, E, L]``, ``est_s = Decoder(mix_w * masks[s])``,
padded or trimmed to the mixture length. Training follows SpeechBrain's separation recipes (uPIT SI-SNR loss,
loss threshold and upper limit, skipped non-finite losses, gradient clipping, mixed
precision, LR scheduler, speed perturbation, random crops) and adds early stopping and a
single-pass test evaluation that writes ``test_results.csv``.

Authors
 * speechbrain-s4m contributors
"""

import csv
import logging
import math
import os
import time
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Union

import speechbrain as sb
import torch
from speechbrain.nnet.schedulers import ReduceLROnPlateau, update_learning_rate
from speechbrain.utils.checkpoints import torch_patched_state_dict_load
from speechbrain.utils.distributed import ddp_barrier, if_main_process
from torch import nn

from speechbrain_s4m.inference.long_audio import separate_in_chunks
from speechbrain_s4m.lobes.encoder_masker_decoder import EncoderMaskerDecoder
from speechbrain_s4m.metrics import separation_metrics
from speechbrain_s4m.resources import peak_memory_gb
from speechbrain_s4m.training.distributed import agree
from speechbrain_s4m.training.hparams_keys import BRAIN_KEYS, check_hparams
from speechbrain_s4m.training.speechbrain_compat import (  # noqa: F401 - EarlyStoppingCounter: the YAMLs' epoch_counter
    EarlyStoppingCounter,
    checkpoint_folders,
    incomplete_checkpoint_folder,
    required_checkpoint_files,
    share_debug_checkpoints_dir,
    stop_after_this_step,
)

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ["snt_id", "sdr", "sdr_i", "si-snr", "si-snr_i"]


def reset_layer_recursively(layer: torch.nn.Module) -> None:
    """Re-initialise a module and all its submodules, as SpeechBrain's recipes do
    before training from scratch (parent first, then every descendant)."""
    if hasattr(layer, "reset_parameters"):
        layer.reset_parameters()
    for child in layer.modules():
        if child is not layer:
            reset_layer_recursively(child)


def start_from_mixture(encoder: torch.nn.Module, masknet: torch.nn.Module, decoder: torch.nn.Module) -> None:
    """Initialise a freshly reset separator so that its estimates start near
    ``mixture / num_spks`` (hparam ``start_from_mixture``): the decoder gets the
    encoder's :meth:`~speechbrain_s4m.lobes.WaveformEncoder.inverse_filters` and the
    mask net :meth:`~speechbrain_s4m.lobes.S4MMaskNet.start_from_uniform_masks`.
    Training then skips the phase in which a random decoder learns to invert the
    encoder. Needs a ``WaveformEncoder``, an ``S4MMaskNet`` and a bias-free
    ``ConvTranspose1d`` decoder (SpeechBrain's ``Decoder``) of the same kernel and stride.

    Example
    -------
    >>> from speechbrain.lobes.models.dual_path import Decoder
    >>> from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder
    >>> encoder, decoder = WaveformEncoder(32), Decoder(17, 1, kernel_size=32, stride=8, bias=False)
    >>> masknet = S4MMaskNet(17, hidden_channels=16, num_blocks=1)
    >>> start_from_mixture(encoder, masknet, decoder)
    >>> mix = torch.randn(1, 800)
    >>> estimates = [decoder(encoder(mix) * mask) for mask in masknet(encoder(mix))]  # [batch, time]
    >>> ratio = estimates[0][:, 24:-24] / mix[:, 24:-24]
    >>> bool(ratio.median().sub(0.5).abs() < 0.1)
    True
    """
    from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder

    if not isinstance(encoder, WaveformEncoder) or not isinstance(masknet, S4MMaskNet):
        raise ValueError(
            f"start_from_mixture: expected a speechbrain_s4m WaveformEncoder and S4MMaskNet, "
            f"got {type(encoder).__name__} and {type(masknet).__name__}"
        )
    expected = tuple(encoder.weight.shape)  # [E, 1, K]
    if (
        not isinstance(decoder, torch.nn.ConvTranspose1d)
        or tuple(decoder.weight.shape) != expected
        or decoder.stride != encoder.stride
        or decoder.bias is not None
    ):
        raise ValueError(
            f"start_from_mixture: expected a bias-free ConvTranspose1d decoder with weight "
            f"shape {expected} and stride {encoder.stride[0]} (the encoder's), got "
            f"{type(decoder).__name__} with weight shape "
            f"{tuple(getattr(decoder, 'weight', torch.empty(0)).shape)}"
        )
    with torch.no_grad():
        decoder.weight.copy_(encoder.inverse_filters())
    masknet.start_from_uniform_masks()


def optimizer_parameter_groups(
    modules: torch.nn.Module, vectors_without_weight_decay: bool = False
) -> List[Dict[str, Any]]:
    """Split the trainable parameters of ``modules`` into optimizer parameter groups
    by their ``_optim`` tag (state-spaces/s4's convention: ``param._optim = {...}``
    holds optimizer hyperparameters for that parameter, e.g. the S4 layer's
    ``{"weight_decay": 0.0}``).

    Arguments
    ---------
    modules : torch.nn.Module
        The modules whose parameters are optimised (a parameter shared by several of
        them counts once). Parameters with ``requires_grad`` False are left out.
    vectors_without_weight_decay : bool
        SpeechBrain's ``remove_vector_weight_decay`` run option: untagged 1-D
        parameters (biases, norms) are treated as tagged ``{"weight_decay": 0.0}``.

    Returns
    -------
    list of dict
        First the untagged parameters, ``{"params": [...]}`` (they take the
        optimizer's own hyperparameters), then one ``{"params": [...], **tag}`` per
        distinct tag, in order of first appearance; empty groups are left out. The
        order is the same for the same modules, as loading an optimizer state needs.

    Raises
    ------
    ValueError
        If a parameter's ``_optim`` is not a dict of hyperparameters.

    Example
    -------
    >>> layer = torch.nn.Linear(4, 2)
    >>> layer.bias._optim = {"weight_decay": 0.0}
    >>> groups = optimizer_parameter_groups(layer)
    >>> [(len(g["params"]), g.get("weight_decay")) for g in groups]
    [(1, None), (1, 0.0)]
    >>> optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    >>> [g["weight_decay"] for g in optimizer.param_groups]
    [0.01, 0.0]
    """
    tags: List[Mapping[str, Any]] = [{}]
    groups: List[Dict[str, Any]] = [{"params": []}]
    for name, parameter in modules.named_parameters():
        if not parameter.requires_grad:
            continue
        tag = getattr(parameter, "_optim", None)
        if tag is None:
            vector = vectors_without_weight_decay and parameter.ndim == 1
            tag = {"weight_decay": 0.0} if vector else {}
        if not isinstance(tag, Mapping) or "params" in tag:
            raise ValueError(
                f"{name}._optim: expected a dict of optimizer hyperparameters such as "
                f"{{'weight_decay': 0.0}}, got {tag!r}"
            )
        if tag not in tags:
            tags.append(tag)
            groups.append({"params": [], **tag})
        groups[tags.index(tag)]["params"].append(parameter)
    return [group for group in groups if group["params"]]


def split_single_group_state(
    state: Dict[str, Any], modules: torch.nn.Module, vectors_without_weight_decay: bool = False
) -> Dict[str, Any]:
    """Turn an optimizer state dict saved with every parameter of ``modules`` in one
    group (as SpeechBrain's default ``init_optimizers`` made it, in checkpoints
    written before the ``_optim`` groups) into the same state for the groups of
    ``optimizer_parameter_groups(modules, vectors_without_weight_decay)``.

    Arguments
    ---------
    state : dict
        The saved ``Optimizer.state_dict()``: one group of the parameters of
        ``modules``, in the order of ``modules.parameters()``.
    modules : torch.nn.Module
        The modules whose parameters the optimizer holds.
    vectors_without_weight_decay : bool
        As for ``optimizer_parameter_groups``.

    Returns
    -------
    dict
        A state dict for an optimizer built from those groups: each parameter's
        state (e.g. Adam's moments and step count) kept, and every group with the
        saved group's hyperparameters (its learning rate as the scheduler left it),
        overridden by the group's ``_optim`` tag.

    Raises
    ------
    ValueError
        If ``state`` does not have exactly one group, of as many parameters as
        ``modules`` has, or if a parameter's saved state has another shape than the
        parameter (the parameters were registered in another order then).

    Example
    -------
    >>> layer = torch.nn.Linear(4, 2)
    >>> old = torch.optim.Adam(layer.parameters(), lr=0.5)  # one group
    >>> layer(torch.ones(1, 4)).sum().backward()
    >>> old.step()
    >>> layer.weight._optim = {"weight_decay": 0.0}
    >>> new = torch.optim.Adam(optimizer_parameter_groups(layer), lr=1.0)  # [bias], [weight]
    >>> new.load_state_dict(split_single_group_state(old.state_dict(), layer))
    >>> [(g["lr"], g["weight_decay"]) for g in new.param_groups]
    [(0.5, 0), (0.5, 0.0)]
    >>> torch.equal(new.state[layer.weight]["exp_avg"], old.state[layer.weight]["exp_avg"])
    True
    """
    names = {id(p): name for name, p in modules.named_parameters()}
    saved_order = list(modules.parameters())
    saved_groups = state["param_groups"]
    if len(saved_groups) != 1 or len(saved_groups[0]["params"]) != len(saved_order):
        raise ValueError(
            f"expected an optimizer state with one parameter group of "
            f"{len(saved_order)} parameters, got groups of "
            f"{[len(g['params']) for g in saved_groups]}"
        )
    saved_hyperparameters = {k: v for k, v in saved_groups[0].items() if k != "params"}
    saved_index = {id(p): i for p, i in zip(saved_order, saved_groups[0]["params"])}
    new_state: Dict[int, Any] = {}
    new_groups: List[Dict[str, Any]] = []
    index = 0  # torch numbers the parameters across all groups, in order
    for group in optimizer_parameter_groups(modules, vectors_without_weight_decay):
        indices = list(range(index, index + len(group["params"])))
        for new, parameter in zip(indices, group["params"]):
            saved = state["state"].get(saved_index[id(parameter)])
            if saved is None:  # no state yet for a parameter never stepped
                continue
            for key, value in saved.items():
                if torch.is_tensor(value) and value.ndim > 0 and value.shape != parameter.shape:
                    raise ValueError(
                        f"{names[id(parameter)]}: expected a saved optimizer state of shape "
                        f"{tuple(parameter.shape)}, got {key} of shape {tuple(value.shape)}"
                    )
            new_state[new] = saved
        index += len(indices)
        own = {k: v for k, v in group.items() if k != "params"}
        new_groups.append({**saved_hyperparameters, **own, "params": indices})
    return {"state": new_state, "param_groups": new_groups}


def step_schedule(step: int, warmup_steps: int = 0, decay_steps: int = 0, final: float = 0.01) -> float:
    """Learning-rate factor before optimizer step ``step`` (from 0): a linear warm-up,
    ``(step + 1) / warmup_steps`` over the first ``warmup_steps`` steps, then a half
    cosine from 1 down to ``final`` over ``decay_steps`` steps, then ``final``
    (``decay_steps`` 0: no decay, 1 after the warm-up).

    Example
    -------
    >>> [round(step_schedule(k, warmup_steps=2, decay_steps=2, final=0.1), 3) for k in range(6)]
    [0.5, 1.0, 1.0, 0.55, 0.1, 0.1]
    >>> step_schedule(7)
    1.0
    """
    if not 0.0 < final <= 1.0:
        raise ValueError(f"lr_decay_final: expected a fraction in (0, 1] of the learning rate, got {final}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay_steps <= 0:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _checkpoint_file_is_whole(path) -> bool:
    """Whether a checkpoint file exists and was written to the end: not empty, and a
    complete zip archive when it is one (``torch.save``'s format; a file cut short
    while being written has no central directory). Text files (YAML) only need to
    exist and be non-empty."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    if not head:
        return False
    return head != b"PK\x03\x04" or zipfile.is_zipfile(path)


class SeparationBrain(sb.Brain):
    """SpeechBrain Brain for time-domain mask-based source separation.

    Expects in ``hparams``: ``Encoder``, ``MaskNet``, ``Decoder`` (also in ``modules``),
    ``num_spks``, ``loss`` (per-example, e.g. ``get_si_snr_with_pitwrapper``),
    ``threshold_byloss``, ``threshold``, ``loss_upper_lim``, ``use_speedperturb``,
    ``speedperturb``, ``limit_training_signal_len``, ``training_signal_len``,
    ``epoch_counter``, ``train_logger``, ``output_folder``, ``sample_rate`` and optionally
    ``lr_scheduler``, ``max_train_minutes`` (wall-clock budget) and
    ``eval_chunk_seconds`` / ``eval_overlap_seconds``.
    Gradient clipping uses SpeechBrain's ``max_grad_norm`` run option.

    Batches carry ``mix_sig``, ``s1_sig`` .. ``s<num_spks>_sig`` (``PaddedData``) and,
    for noisy mixtures, ``noise_sig`` (added back after speed perturbation).
    """

    #: The keys of ``modules`` that the forward pass runs through.
    SEPARATOR_MODULES = ("encoder", "masknet", "decoder")

    _separator: Optional[nn.Module] = None
    _whole_separator_data_parallel = False

    def __init__(self, modules=None, opt_class=None, hparams=None, run_opts=None, checkpointer=None):
        if hparams is not None:  # checked once; optional keys get their defaults
            hparams = check_hparams(hparams, BRAIN_KEYS, source="SeparationBrain hparams")
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)
        share_debug_checkpoints_dir(self)

    @property
    def separator(self) -> nn.Module:
        """The one forward pass, through ``self.modules`` (not the hparams' lobes):
        SpeechBrain wraps those in ``DistributedDataParallel`` or ``torch.compile``
        (``--compile``) when ``fit`` starts, and DDP all-reduces the gradients only of
        a forward pass that ran through its wrapper. Built again once they are wrapped.
        Under ``--data_parallel_backend``, one ``DataParallel`` splits the batch over
        the whole separator (see ``_wrap_distributed``)."""
        missing = [name for name in self.SEPARATOR_MODULES if name not in self.modules]
        if missing:
            raise ValueError(
                f"modules: expected the keys {', '.join(self.SEPARATOR_MODULES)} (the separator's "
                f"Encoder, MaskNet and Decoder), missing {', '.join(missing)}"
            )
        lobes = [self.modules[name] for name in self.SEPARATOR_MODULES]
        built = self._separator
        inner = getattr(built, "module", built)  # under DataParallel
        if built is None or any(a is not b for a, b in zip((inner.encoder, inner.masknet, inner.decoder), lobes)):
            built = EncoderMaskerDecoder(*lobes)
            if self._whole_separator_data_parallel:
                built = nn.DataParallel(built)
            self._separator = built
        return built

    def _wrap_distributed(self) -> None:
        """SpeechBrain's wrapping, except for ``--data_parallel_backend`` (one process,
        several GPUs): SpeechBrain wraps each module in ``DataParallel``, which gathers
        every output along its first dimension, and the mask net's first dimension is
        the speakers (``[spks, batch, E, L]``). The separator is wrapped whole instead
        (batch first in and out)."""
        if self.data_parallel_backend and not self.distributed_launch:
            self._whole_separator_data_parallel = True
            self._separator = None
            return
        super()._wrap_distributed()

    # ------------------------------------------------------------------ forward
    def separate(self, mix: torch.Tensor) -> torch.Tensor:
        """Separate a batch of mixtures ``[batch, time] -> [batch, time, spks]``.

        Outside training, a single mixture longer than ``eval_chunk_seconds`` is
        separated in overlapping chunks, so memory stays bounded for any length."""
        chunk = self.hparams.eval_chunk_seconds
        if not self.modules.training and chunk and mix.shape[0] == 1:
            rate = self.hparams.sample_rate
            if mix.shape[1] > chunk * rate:
                overlap = int(self.hparams.eval_overlap_seconds * rate)
                chunked = separate_in_chunks(self.separator, mix[0], int(chunk * rate), overlap)
                return chunked[None].to(mix.device)
        return self.separator(mix)

    def compute_forward(self, mix, targets, stage, noise=None):
        """Mixture (``PaddedData``) and target list -> ``(estimates, targets)``, both
        ``[batch, time, spks]``; applies the training augmentations in TRAIN."""
        mix, mix_lens = mix
        mix, mix_lens = mix.to(self.device), mix_lens.to(self.device)
        targets = torch.stack([t[0] for t in targets], dim=-1).to(self.device)
        if stage == sb.Stage.TRAIN:
            with torch.no_grad():
                if self.hparams.use_speedperturb:
                    # Perturb each source, then mix again (adding the noise back to
                    # noisy mixtures: noise_sig is only used here).
                    targets = self._speed_perturb(targets)
                    mix = targets.sum(-1)
                    if noise is not None:
                        noise = noise[0].to(self.device)
                        length = min(noise.shape[1], mix.shape[1])
                        mix = mix[:, :length] + noise[:, :length]
                        targets = targets[:, :length]
                if self.hparams.limit_training_signal_len:
                    mix, targets = self._random_crop(mix, targets, mix_lens)
        return self.separate(mix), targets

    def _speed_perturb(self, targets: torch.Tensor) -> torch.Tensor:
        """Change the speed of each source independently, then cut to the shortest."""
        perturbed = [self.hparams.speedperturb(targets[:, :, s]) for s in range(targets.shape[-1])]
        length = min(p.shape[1] for p in perturbed)
        return torch.stack([p[:, :length] for p in perturbed], dim=-1)

    def _random_crop(self, mix: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor):
        """Crop every example to ``training_signal_len`` samples, each at its own random
        start within its own length (``lengths``: SpeechBrain's relative lengths), so
        that a crop never falls in another example's padding. Examples shorter than
        that are kept whole (zero-padded): ``[B, T]``, ``[B, T, C]`` ->
        ``[B, T']``, ``[B, T', C]`` with ``T' = min(training_signal_len, longest)``."""
        B, T = mix.shape
        valid = (lengths.detach().cpu().float() * T).round().long().clamp(1, T)  # [B] samples each
        crop = min(int(self.hparams.training_signal_len), int(valid.max()))
        spare = (valid - crop).clamp_min(0)  # [B] latest start that keeps a full crop
        starts = (torch.rand(B) * (spare + 1).float()).long().clamp_max(spare).to(mix.device)
        index = starts[:, None] + torch.arange(crop, device=mix.device)  # [B, T']
        cropped_targets = targets.gather(1, index[:, :, None].expand(-1, -1, targets.shape[-1]))
        return mix.gather(1, index), cropped_targets

    def compute_objectives(self, predictions, targets):
        """Per-example loss ``[batch]`` (negative SI-SNR with uPIT by default)."""
        return self.hparams.loss(targets, predictions)

    def _batch_signals(self, batch):
        targets = [getattr(batch, f"s{s + 1}_sig") for s in range(self.hparams.num_spks)]
        return batch.mix_sig, targets, getattr(batch, "noise_sig", None)

    # ----------------------------------------------------------------- training
    def init_optimizers(self) -> None:
        """SpeechBrain's ``init_optimizers`` with the parameters in groups by their
        ``_optim`` tag (``optimizer_parameter_groups``), so that the S4 state-space
        parameters get the tag's weight decay 0 with any optimizer of the YAML, and
        the others the YAML's. The optimizer is registered with the checkpointer as
        ``"optimizer"``, loaded by ``_load_optimizer_state``."""
        if self.opt_class is None:
            super().init_optimizers()  # logs that there is no optimizer
            return
        groups = optimizer_parameter_groups(self.modules, self.remove_vector_weight_decay)
        self.optimizer = self.opt_class(groups)
        self.optimizers_dict = {"opt_class": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer, custom_load_hook=self._load_optimizer_state)

    def _load_optimizer_state(
        self, optimizer: torch.optim.Optimizer, path: Union[str, os.PathLike], end_of_epoch: bool
    ) -> None:
        """Checkpoint load hook of the optimizer. A state saved with every parameter
        in one group (checkpoints written before the ``_optim`` groups) is split into
        this run's groups first (``split_single_group_state``), keeping Adam's
        moments and the scheduled learning rate; if the parameters' shapes show that
        it cannot be mapped, only the learning rate is kept (with a warning).

        Raises
        ------
        ValueError
            If the saved groups do not match this run's otherwise."""
        del end_of_epoch  # unused
        state = torch_patched_state_dict_load(path, "cpu")
        if len(state["param_groups"]) == 1 < len(optimizer.param_groups):
            logger.info(
                f"{path}: optimizer state saved with one parameter group; splitting it "
                f"into this run's {len(optimizer.param_groups)} groups (by _optim tag)"
            )
            try:
                state = split_single_group_state(state, self.modules, self.remove_vector_weight_decay)
            except ValueError as error:
                lr = state["param_groups"][0]["lr"]
                logger.warning(
                    f"{path}: cannot map the saved optimizer state onto this run's "
                    f"parameters ({error}); resuming with a fresh optimizer state, "
                    f"keeping only the saved learning rate {lr:.3g}"
                )
                update_learning_rate(optimizer, lr)
                return
        try:
            optimizer.load_state_dict(state)
        except ValueError as error:
            raise ValueError(
                f"{path}: expected an optimizer state with parameter groups of "
                f"{[len(g['params']) for g in optimizer.param_groups]} parameters (one "
                f"group per _optim tag), got "
                f"{[len(g['params']) for g in state['param_groups']]}; remove this file "
                f"to resume with a fresh optimizer state"
            ) from error

    def fit_batch(self, batch):
        """One training batch: forward, loss and backward pass, and an optimizer step
        every ``grad_accumulation_factor`` batches (SpeechBrain's run option; the
        gradients of the batches in between are accumulated, under DDP without an
        all-reduce). A batch whose audio or loss is not finite, or whose loss is above
        ``loss_upper_lim``, is skipped (counted and logged); skipping the batch of a
        step drops the gradients accumulated for it.

        Every decision is taken by all DDP ranks together (:func:`~speechbrain_s4m.
        training.distributed.agree`): a batch is skipped everywhere if any rank must skip it,
        and training stops everywhere once any rank has spent ``max_train_minutes``.
        Between the forward and the backward pass there is one host synchronisation,
        the reading of that vote."""
        should_step = self.step % self.grad_accumulation_factor == 0
        self.on_fit_batch_start(batch, should_step)
        mixture, targets, noise = self._batch_signals(batch)
        bad_files = self._non_finite_examples(batch, mixture, targets, noise)
        before = agree(self.device, bad_audio=bool(bad_files), out_of_time=should_step and self._budget_spent())
        if before["bad_audio"]:
            where = ", ".join(bad_files) if bad_files else "a batch of another DDP rank"
            self._skip_batch(should_step, f"with non-finite audio (NaN or Inf) in {where}")
            zero = torch.zeros((), device=self.device)
            return self._end_batch(batch, None, zero, should_step, before["out_of_time"])

        with self.no_sync(not should_step):
            with self.training_ctx:
                predictions, targets = self.compute_forward(mixture, targets, sb.Stage.TRAIN, noise)
                loss = self.training_loss(self.compute_objectives(predictions, targets))
                self.train_audio_seconds += predictions.shape[0] * predictions.shape[1] / self.hparams.sample_rate
            after = agree(  # the clock read after the forward pass: the budget ends with this batch
                self.device,
                non_finite=~torch.isfinite(loss),
                over_limit=loss >= self.hparams.loss_upper_lim,
                out_of_time=should_step and self._budget_spent(),
            )
            skip = after["non_finite"] or after["over_limit"]
            if not skip:
                self.scaler.scale(loss / self.grad_accumulation_factor).backward()

        if skip:
            self._skip_batch(
                should_step,
                f"with loss {loss.item():.4g} (non-finite or above loss_upper_lim="
                f"{self.hparams.loss_upper_lim} on this or another DDP rank)",
            )
            if after["non_finite"]:  # every rank stops after nonfinite_patience of them
                self.check_loss_isfinite(torch.tensor(float("nan")))
            loss = torch.zeros((), device=self.device)
        elif should_step:
            self._schedule_learning_rate()
            self.optimizers_step()  # unscale, clip every group at max_grad_norm, step, zero_grad
        return self._end_batch(batch, predictions, loss, should_step, after["out_of_time"])

    def training_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The batch's training loss from the per-example ``loss [batch]``: the mean,
        or with ``threshold_byloss`` the mean over the examples whose loss is above
        ``threshold`` (not yet separated beyond it; all of them if there are none),
        computed on the device, without a host synchronisation.

        Example
        -------
        >>> brain = SeparationBrain(modules={}, run_opts={"device": "cpu"})
        >>> brain.hparams = type("hparams", (), {"threshold_byloss": True, "threshold": -30.0})
        >>> brain.training_loss(torch.tensor([-40.0, -10.0, -20.0])).item()
        -15.0
        >>> brain.training_loss(torch.tensor([-40.0, -50.0])).item()
        -45.0
        """
        if not self.hparams.threshold_byloss:
            return loss.mean()
        hard = loss > self.hparams.threshold  # [batch]: examples not yet separated beyond it
        count = hard.sum()
        hard_mean = torch.where(hard, loss, torch.zeros_like(loss)).sum() / count.clamp_min(1)
        return torch.where(count > 0, hard_mean, loss.mean())

    def _budget_spent(self) -> bool:
        """Whether this rank has spent ``max_train_minutes`` of wall-clock time."""
        budget = self.hparams.max_train_minutes
        return bool(budget) and time.monotonic() - self.fit_start_time > 60 * budget

    def _skip_batch(self, should_step: bool, reason: str) -> None:
        """Count and log a skipped batch; on the batch of a step, drop the gradients
        accumulated for it (under DDP they were never all-reduced)."""
        self.skipped_batches += 1
        logger.warning(f"Skipping a batch {reason}; {self.skipped_batches} skipped so far")
        if should_step:
            self.zero_grad(set_to_none=True)

    def _end_batch(self, batch, predictions, loss, should_step: bool, out_of_time: bool) -> torch.Tensor:
        """Stop training after this step once any rank has spent ``max_train_minutes``
        (the epoch then ends with validation and a checkpoint, as at its end), call
        ``on_fit_batch_end`` and return the detached loss."""
        if out_of_time and stop_after_this_step(self):
            logger.info(f"Training budget of {self.hparams.max_train_minutes} minutes spent; stopping")
        self.on_fit_batch_end(batch, predictions, loss, should_step)
        return loss.detach().cpu()

    def optimizers_step(self) -> None:
        """SpeechBrain's ``optimizers_step`` (unscale, clip at ``max_grad_norm``, step,
        ``zero_grad``, count the step), with the clipping over the global gradient
        norm of every parameter group. SpeechBrain 1.1 clips ``param_groups[0]``
        only, which leaves out the S4 state-space parameters (their ``_optim``
        group) and, with ``remove_vector_weight_decay``, the biases and norms."""
        if self.optimizers_dict is None:
            return
        optimizers = list(self.freeze_optimizers(self.optimizers_dict).values())
        for optimizer in optimizers:
            self.scaler.unscale_(optimizer)
        for optimizer in optimizers:
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
        if not self.scaler.is_enabled() and self.skip_nonfinite_grads:
            self.check_gradients()
        for optimizer in optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.optimizer_step += 1

    @staticmethod
    def _non_finite_examples(batch, mixture, targets, noise) -> List[str]:
        """The ids of the examples whose mixture, sources or noise hold NaN or Inf."""
        signals = [mixture, *targets] + ([noise] if noise is not None else [])
        finite = torch.stack([torch.isfinite(signal.data).flatten(1).all(1) for signal in signals]).all(0)  # [batch]
        return [str(snt_id) for snt_id, ok in zip(batch.id, finite.tolist()) if not ok]

    def _schedule_learning_rate(self) -> None:
        """Apply :func:`step_schedule` (hparams ``lr_warmup_steps``, ``lr_decay_steps``,
        ``lr_decay_final``) before optimizer step ``k``: each group's rate is
        multiplied by ``f(k) / f(k - 1)`` (by ``f(0)`` before the first step). The
        schedule thus moves the rate the optimizer's checkpoint holds, so a resumed
        run continues it, and a change made by someone else (ReduceLROnPlateau's
        halving after a validation) is kept and scaled along with it."""
        schedule = dict(
            warmup_steps=self.hparams.lr_warmup_steps,
            decay_steps=self.hparams.lr_decay_steps,
            final=float(self.hparams.lr_decay_final),
        )
        step = self.optimizer_step
        ratio = step_schedule(step, **schedule) / (step_schedule(step - 1, **schedule) if step > 0 else 1.0)
        if ratio != 1.0:
            for group in self.optimizer.param_groups:
                group["lr"] *= ratio

    def evaluate_batch(self, batch, stage):
        """Validation/test loss; in TEST also scores every utterance."""
        mixture, targets, _ = self._batch_signals(batch)
        with torch.no_grad(), self.evaluation_ctx:
            predictions, targets = self.compute_forward(mixture, targets, stage)
            loss = self.compute_objectives(predictions, targets)
        if stage == sb.Stage.TEST:
            self._score(batch.id, mixture, predictions.float(), targets.float())
        return loss.mean().detach().cpu()

    def _score(self, ids: List[str], mixture, predictions, targets) -> None:
        mix, lengths = mixture
        mix = mix.to(predictions.device)
        for i, snt_id in enumerate(ids):
            n = int(round(float(lengths[i]) * mix.shape[1]))
            scores = separation_metrics(mix[i : i + 1, :n], predictions[i : i + 1, :n], targets[i : i + 1, :n])
            self.test_rows.append(
                {
                    "snt_id": snt_id,
                    "sdr": scores["sdr"].item(),
                    "sdr_i": scores["sdr_i"].item(),
                    "si-snr": scores["si_snr"].item(),
                    "si-snr_i": scores["si_snr_i"].item(),
                }
            )

    # ------------------------------------------------------------------- stages
    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        if stage == sb.Stage.TRAIN:
            self.train_dataset = dataset
        return super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)

    def on_fit_start(self):
        self.skipped_batches = 0
        self.fit_start_time = time.monotonic()
        self._set_aside_incomplete_checkpoints()
        super().on_fit_start()  # recovers the newest checkpoint, if any

    def _set_aside_incomplete_checkpoints(self) -> None:
        """SpeechBrain writes a checkpoint's meta file first and its parameter files
        after it, so a run killed while saving leaves a checkpoint that cannot be
        loaded: a required file missing, or any file present (optional ones such as
        the grad scaler's included) empty or cut short. Rename such folders to
        ``INCOMPLETE+...`` (kept, not deleted) so that resuming picks the last complete
        checkpoint."""
        if self.checkpointer is None:
            return
        if if_main_process():
            required = required_checkpoint_files(self.checkpointer)
            for folder in checkpoint_folders(self.checkpointer):
                present = sorted(path.name for path in folder.glob("*.ckpt"))
                broken = sorted(
                    {f for f in required if f not in present}  # optional ones may be absent
                    | {f for f in present if not _checkpoint_file_is_whole(folder / f)}
                )
                if broken:
                    target = incomplete_checkpoint_folder(folder)
                    folder.rename(target)
                    logger.warning(
                        f"Checkpoint {folder} is incomplete ({', '.join(broken)} missing or "
                        f"truncated; the run was probably stopped while saving it); moved it "
                        f"to {target} and resuming from the previous one"
                    )
        ddp_barrier()

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_stage_start = time.monotonic()
            self.train_audio_seconds = 0.0  # mixture audio trained on in this stage
            if hasattr(getattr(self, "train_dataset", None), "set_epoch"):
                self.train_dataset.set_epoch(epoch)  # dynamic mixing: new mixtures each epoch
        if stage == sb.Stage.TEST:
            self.test_rows = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stage_stats = {"si-snr": stage_loss}  # the loss, -SI-SNR, as SpeechBrain logs it
        if stage == sb.Stage.TRAIN:
            self.train_stats = {**stage_stats, **self.training_speed_stats()}
        elif stage == sb.Stage.VALID:
            current_lr = self.optimizer.param_groups[0]["lr"]
            scheduler = self.hparams.lr_scheduler
            if isinstance(scheduler, ReduceLROnPlateau):
                current_lr, next_lr = scheduler([self.optimizer], epoch, stage_loss)
                update_learning_rate(self.optimizer, next_lr)
            elif scheduler is not None:
                raise ValueError(
                    f"lr_scheduler: expected speechbrain.nnet.schedulers.ReduceLROnPlateau "
                    f"(stepped on the validation loss), got {type(scheduler).__name__}"
                )
            counter = self.hparams.epoch_counter
            if hasattr(counter, "update_metric"):  # early stopping
                counter.update_metric(stage_loss)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": current_lr},
                train_stats=self.train_stats,
                valid_stats=stage_stats,
            )
            self.checkpointer.save_and_keep_only(meta={"si-snr": stage_loss}, min_keys=["si-snr"])
        else:  # TEST: SI-SNR, SDR and their improvements in dB (higher is better)
            path = self.write_test_results()
            means = self.test_means()
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats={"loss": stage_loss, **means},
            )
            logger.info(f"Per-utterance test results written to {path}")

    def training_speed_stats(self) -> Dict[str, float]:
        """Logged with every epoch's training loss: ``audio_s_per_s``, seconds of
        mixture audio trained on per second of wall-clock time in this epoch's training
        stage (this process; after a resume, since the resume); ``minutes``, wall-clock
        minutes since training started or resumed (validation included, as the
        ``max_train_minutes`` budget counts them); ``peak_mem_GB``, peak memory so far
        (PyTorch's peak allocation on a CUDA device, else the process's peak RSS)."""
        seconds = max(time.monotonic() - self.train_stage_start, 1e-9)
        return {
            "audio_s_per_s": round(self.train_audio_seconds / seconds, 3),
            "minutes": round((time.monotonic() - self.fit_start_time) / 60, 2),
            "peak_mem_GB": round(peak_memory_gb(self.device), 3),
        }

    # ------------------------------------------------------------------ results
    def test_means(self) -> Dict[str, float]:
        rows = self.test_rows
        return {k: sum(r[k] for r in rows) / max(len(rows), 1) for k in RESULT_COLUMNS[1:]}

    def write_test_results(self) -> Optional[str]:
        """Write ``<output_folder>/test_results.csv``: one row per utterance and a
        mean row ``avg`` (main process only)."""
        if not if_main_process():
            return None
        path = os.path.join(self.hparams.output_folder, "test_results.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
            writer.writeheader()
            writer.writerows(self.test_rows)
            writer.writerow({"snt_id": "avg", **self.test_means()})
        return path
