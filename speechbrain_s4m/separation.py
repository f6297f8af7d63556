"""One separation Brain shared by every recipe (WSJ0Mix, LibriMix, LRS2Mix) and every
backbone (S4M, S4M-tiny, SpeechBrain's Sepformer).

The forward pass is SpeechBrain's: ``mix_w = Encoder(mix)``, ``masks = MaskNet(mix_w)``
``[spks, batch, E, L]``, ``est_s = Decoder(mix_w * masks[s])``, padded or trimmed to the
mixture length. Training follows SpeechBrain's separation recipes (uPIT SI-SNR loss,
loss threshold and upper limit, skipped non-finite losses, gradient clipping, mixed
precision, LR scheduler, speed perturbation, random crops) and adds early stopping and a
single-pass test evaluation that writes ``test_results.csv``.

Authors
 * speechbrain-s4m contributors
"""

import csv
import logging
import os
import time
import zipfile
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
import speechbrain as sb
from speechbrain.nnet.schedulers import ReduceLROnPlateau, update_learning_rate
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.epoch_loop import EpochCounterWithStopper
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from speechbrain_s4m.metrics import separation_metrics
from speechbrain_s4m.resources import peak_memory_gb
from speechbrain_s4m.separate import separate_in_chunks

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


@register_checkpoint_hooks
class EarlyStoppingCounter(EpochCounterWithStopper):
    """SpeechBrain's ``EpochCounterWithStopper`` whose early-stopping state (best
    score, best epoch, stop flag) is saved in checkpoints too.

    SpeechBrain 1.1 does not register the stopper's own save/recover hooks, so its
    checkpoints keep only the epoch number, and a resumed run forgets how many
    epochs passed without improvement. Same arguments as the parent class.

    Example
    -------
    >>> counter = EarlyStoppingCounter(limit=10, limit_to_stop=2, limit_warmup=0, direction="min")
    >>> for epoch in counter:
    ...     counter.update_metric(1.0)  # never improves after epoch 1
    >>> counter.current
    3
    """

    @mark_as_saver
    def _save(self, path):
        super()._save(path)

    @mark_as_loader
    def _recover(self, path, end_of_epoch=True, device=None):
        super()._recover(path, end_of_epoch, device)


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

    # ------------------------------------------------------------------ forward
    def separate(self, mix: torch.Tensor) -> torch.Tensor:
        """Separate a batch of mixtures ``[batch, time] -> [batch, time, spks]``.

        Outside training, a single mixture longer than ``eval_chunk_seconds`` is
        separated in overlapping chunks, so memory stays bounded for any length."""
        chunk = getattr(self.hparams, "eval_chunk_seconds", None)
        if not self.modules.training and chunk and mix.shape[0] == 1:
            rate = self.hparams.sample_rate
            if mix.shape[1] > chunk * rate:
                overlap = int(self.hparams.eval_overlap_seconds * rate)
                chunked = separate_in_chunks(self._separate_whole, mix[0], int(chunk * rate), overlap)
                return chunked[None].to(mix.device)
        return self._separate_whole(mix)

    def _separate_whole(self, mix: torch.Tensor) -> torch.Tensor:
        mix_w = self.hparams.Encoder(mix)  # [batch, E, L]
        masks = self.hparams.MaskNet(mix_w)  # [spks, batch, E, L]
        estimates = torch.stack(
            [self.hparams.Decoder(mix_w * masks[s]) for s in range(self.hparams.num_spks)],
            dim=-1,
        )  # [batch, time', spks]
        T, T_est = mix.shape[1], estimates.shape[1]
        if T > T_est:
            return F.pad(estimates, (0, 0, 0, T - T_est))
        return estimates[:, :T, :]

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
                    mix, targets = self._random_crop(mix, targets)
        return self.separate(mix), targets

    def _speed_perturb(self, targets: torch.Tensor) -> torch.Tensor:
        """Change the speed of each source independently, then cut to the shortest."""
        perturbed = [self.hparams.speedperturb(targets[:, :, s]) for s in range(targets.shape[-1])]
        length = min(p.shape[1] for p in perturbed)
        return torch.stack([p[:, :length] for p in perturbed], dim=-1)

    def _random_crop(self, mix: torch.Tensor, targets: torch.Tensor):
        length = self.hparams.training_signal_len
        start = torch.randint(0, 1 + max(0, mix.shape[1] - length), (1,)).item()
        return mix[:, start : start + length], targets[:, start : start + length]

    def compute_objectives(self, predictions, targets):
        """Per-example loss ``[batch]`` (negative SI-SNR with uPIT by default)."""
        return self.hparams.loss(targets, predictions)

    def _batch_signals(self, batch):
        targets = [getattr(batch, f"s{s + 1}_sig") for s in range(self.hparams.num_spks)]
        return batch.mix_sig, targets, getattr(batch, "noise_sig", None)

    # ----------------------------------------------------------------- training
    def fit_batch(self, batch):
        """One optimisation step, skipping batches whose loss is not finite or is
        above ``loss_upper_lim`` (counted and logged)."""
        mixture, targets, noise = self._batch_signals(batch)
        with self.training_ctx:
            predictions, targets = self.compute_forward(
                mixture, targets, sb.Stage.TRAIN, noise
            )
            loss = self.compute_objectives(predictions, targets)
            self.train_audio_seconds += predictions.shape[0] * predictions.shape[1] / self.hparams.sample_rate
            if self.hparams.threshold_byloss:
                # Hard threshold: drop the examples already separated beyond it.
                hard = loss[loss > self.hparams.threshold]
                loss = hard.mean() if hard.numel() > 0 else loss.mean()
            else:
                loss = loss.mean()

        if torch.isfinite(loss) and loss < self.hparams.loss_upper_lim:
            self.scaler.scale(loss).backward()
            self.optimizers_step()  # unscale, clip at max_grad_norm, step, zero_grad
        else:
            self.skipped_batches += 1
            logger.warning(
                f"Skipping a batch with loss {loss.item():.4g} (non-finite or above "
                f"loss_upper_lim={self.hparams.loss_upper_lim}); "
                f"{self.skipped_batches} skipped so far"
            )
            self.zero_grad(set_to_none=True)
            self.check_loss_isfinite(loss)  # stops after nonfinite_patience NaN losses
            loss = torch.zeros((), device=self.device)
        self.on_fit_batch_end(batch, predictions, loss, True)
        return loss.detach().cpu()

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
            scores = separation_metrics(
                mix[i : i + 1, :n], predictions[i : i + 1, :n], targets[i : i + 1, :n]
            )
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
        the grad scaler's included) empty or cut short. Rename such folders to ``INCOMPLETE+...`` (kept, not deleted) so that
        resuming picks the last complete checkpoint."""
        if self.checkpointer is None:
            return
        if if_main_process():
            required = [
                f"{name}.ckpt"
                for name in self.checkpointer.recoverables
                if not self.checkpointer.optional_recoverables.get(name, False)
            ]
            for folder in sorted(self.checkpointer.checkpoints_dir.glob("CKPT+*")):
                present = sorted(path.name for path in folder.glob("*.ckpt"))
                broken = sorted(
                    {f for f in required if f not in present}  # optional ones may be absent
                    | {f for f in present if not _checkpoint_file_is_whole(folder / f)}
                )
                if broken:
                    target = folder.with_name("INCOMPLETE+" + folder.name[len("CKPT+") :])
                    folder.rename(target)
                    logger.warning(
                        f"Checkpoint {folder} is incomplete ({', '.join(broken)} missing or "
                        f"truncated; the run was probably stopped while saving it); moved it "
                        f"to {target} and resuming from the previous one"
                    )
        ddp_barrier()

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Stop training once ``max_train_minutes`` of wall-clock time are spent: the
        current epoch then ends with validation and a checkpoint, as at its end."""
        budget = getattr(self.hparams, "max_train_minutes", 0)
        if budget and time.monotonic() - self.fit_start_time > 60 * budget:
            if self.optimizer_step_limit is None or self.optimizer_step_limit > self.optimizer_step:
                logger.info(f"Training budget of {budget} minutes spent; stopping")
                self.optimizer_step_limit = self.optimizer_step  # SpeechBrain's own stop

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
            scheduler = getattr(self.hparams, "lr_scheduler", None)
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
            self.checkpointer.save_and_keep_only(
                meta={"si-snr": stage_loss}, min_keys=["si-snr"]
            )
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
