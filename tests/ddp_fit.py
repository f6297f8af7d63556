"""A LibriMix recipe run under ``torchrun`` that saves what each rank ends with, for
tests/test_distributed.py: ``torchrun --nproc_per_node=2 ddp_fit.py hparams.yaml
--data_folder=... [train.py's options]``.

It trains as ``recipes/LibriMix/separation/train.py`` does (no test stage), then each
rank writes ``<output_folder>/rank<r>.pt``: its parameters (the unwrapped lobes), its
optimizer step count and its count of skipped batches.

With ``S4M_BUDGET_STEPS_ON_RANK1=N`` in the environment, rank 1's clock reads its
``max_train_minutes`` budget as spent once it has taken N optimizer steps, and the
other ranks' clocks never do: the budget runs out on one rank first.
"""

import os
import sys

import torch

from speechbrain_s4m import recipe
from speechbrain_s4m.data.preparation import prepare_librimix
from speechbrain_s4m.separation import SeparationBrain


class RankOneClockBrain(SeparationBrain):
    """A Brain whose rank 1 runs out of time first (see the module docstring)."""

    def _budget_spent(self) -> bool:
        steps = os.environ.get("S4M_BUDGET_STEPS_ON_RANK1")
        if steps is None:
            return super()._budget_spent()
        return int(os.environ["RANK"]) == 1 and self.optimizer_step >= int(steps)


if __name__ == "__main__":
    args = recipe.parse_arguments(sys.argv[1:])
    recipe.prepare_data(prepare_librimix, args, ["sample_rate", "mode", "num_spks", "train_subset", "mixture_type"])
    hparams = recipe.load_hparams(args)
    train, valid, _ = recipe.build_datasets(hparams, dynamic_mixing_layout="librispeech")
    brain = recipe.build_brain(hparams, args, RankOneClockBrain)
    recipe.fit(brain, hparams, train, valid)
    parameters = {
        f"{name}.{key}": value.detach().clone()
        for name, module in hparams["modules"].items()
        for key, value in module.named_parameters()
    }
    state = {"parameters": parameters, "optimizer_step": brain.optimizer_step, "skipped": brain.skipped_batches}
    torch.save(state, os.path.join(hparams["output_folder"], f"rank{os.environ['RANK']}.pt"))
    recipe.exit_distributed_rank()
