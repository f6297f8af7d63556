"""Every SpeechBrain internal the plugin relies on, in one place.

The Brain and the recipes use a few things SpeechBrain does not document as public:
the checkpointer's folder names and its ``optional_recoverables``, the epoch counter's
``_save`` / ``_recover`` hooks, the Brain's ``optimizer_step_limit`` stop, and how
``--optimizer_step_limit`` is parsed. They are wrapped here, so that a SpeechBrain
release that changes them needs changes in this module only.

Checked with the SpeechBrain versions in :data:`CHECKED_VERSIONS`; importing this
module under another version logs a warning once.

Authors
 * speechbrain-s4m contributors
"""

import dataclasses
import logging
from pathlib import Path
from typing import Any, List

import speechbrain
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.distributed import ddp_broadcast
from speechbrain.utils.epoch_loop import EpochCounterWithStopper

logger = logging.getLogger(__name__)

#: SpeechBrain releases whose internals were checked against this module.
CHECKED_VERSIONS = ("1.1.2",)

#: SpeechBrain's checkpoint folder prefix (``CKPT+<date>``, speechbrain.utils.checkpoints).
CHECKPOINT_PREFIX = "CKPT+"
#: Where an unloadable checkpoint folder is moved (kept, not deleted).
INCOMPLETE_PREFIX = "INCOMPLETE+"

if speechbrain.__version__ not in CHECKED_VERSIONS:
    logger.warning(
        "speechbrain %s: speechbrain_s4m was checked with %s; see speechbrain_s4m/training/speechbrain_compat.py",
        speechbrain.__version__,
        ", ".join(CHECKED_VERSIONS),
    )


@register_checkpoint_hooks
class EarlyStoppingCounter(EpochCounterWithStopper):
    """SpeechBrain's ``EpochCounterWithStopper`` whose early-stopping state (best
    score, best epoch, stop flag) is saved in checkpoints too.

    SpeechBrain 1.1 does not register the stopper's own ``_save`` / ``_recover``
    hooks, so its checkpoints keep only the epoch number, and a resumed run forgets
    how many epochs passed without improvement. Same arguments as the parent class.

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


def checkpoint_folders(checkpointer) -> List[Path]:
    """The checkpointer's checkpoint folders (``CKPT+*``), oldest first."""
    return sorted(Path(checkpointer.checkpoints_dir).glob(CHECKPOINT_PREFIX + "*"))


def incomplete_checkpoint_folder(folder: Path) -> Path:
    """Where to move a checkpoint folder that cannot be loaded.

    Example
    -------
    >>> incomplete_checkpoint_folder(Path("save/CKPT+2026-12-02+10-00-00+00")).name
    'INCOMPLETE+2026-12-02+10-00-00+00'
    """
    return folder.with_name(INCOMPLETE_PREFIX + folder.name[len(CHECKPOINT_PREFIX) :])


def required_checkpoint_files(checkpointer) -> List[str]:
    """The files every checkpoint of ``checkpointer`` must hold (``<name>.ckpt`` of
    each recoverable that is not optional, such as the grad scaler)."""
    optional = getattr(checkpointer, "optional_recoverables", {})
    return [f"{name}.ckpt" for name in checkpointer.recoverables if not optional.get(name, False)]


def share_debug_checkpoints_dir(brain) -> None:
    """Under ``--debug``, SpeechBrain 1.1 points each process's checkpointer at a
    temporary folder of its own. Under DDP the main process then deletes old
    checkpoints that the others never saw, and the processes wait for each other in
    different collectives for ever (``delete_checkpoints``: a broadcast on rank 0, a
    barrier on the others). Give every process the main process's folder (one
    machine; a multi-node ``--debug`` run needs a shared file system, as any run)."""
    if not getattr(brain, "debug", False) or brain.checkpointer is None:
        return
    shared = ddp_broadcast(str(brain.checkpointer.checkpoints_dir), src=0)
    brain.checkpointer.checkpoints_dir = Path(shared)


def stop_after_this_step(brain) -> bool:
    """Make SpeechBrain's Brain end training after the current optimizer step (its
    ``optimizer_step_limit``): the epoch then ends with validation and a checkpoint,
    as at its end. Returns whether this changed anything."""
    limit = brain.optimizer_step_limit
    if limit is not None and limit <= brain.optimizer_step:
        return False
    brain.optimizer_step_limit = brain.optimizer_step
    return True


def whole_number_step_limit(run_opts: Any) -> Any:
    """SpeechBrain 1.1 parses ``--optimizer_step_limit`` as a string (its default is
    None, so argparse gets no type); return the run options with the int its Brain
    compares with.

    Example
    -------
    >>> from speechbrain.utils.run_opts import RunOptions
    >>> whole_number_step_limit(RunOptions(optimizer_step_limit="12")).optimizer_step_limit
    12
    """
    limit = run_opts.optimizer_step_limit
    if limit is None or isinstance(limit, int):
        return run_opts
    try:
        return dataclasses.replace(run_opts, optimizer_step_limit=int(limit))
    except ValueError:
        raise ValueError(f"--optimizer_step_limit: expected a whole number of optimizer steps, got {limit!r}") from None
