"""``speechbrain_s4m.training.ddp_check`` for tests/training/test_distributed.py, with one more hook:
``S4M_BUDGET_STEPS_ON_RANK1=N`` in the environment makes rank 1's clock read its
``max_train_minutes`` budget as spent once it has taken N optimizer steps, and the
other ranks' clocks never: the budget runs out on one rank first.

    torchrun --nproc_per_node=2 ddp_fit.py hparams.yaml --data_folder=... [options]
"""

import os
import sys

from speechbrain_s4m.training import ddp_check
from speechbrain_s4m.training.brain import SeparationBrain


class RankOneClockBrain(SeparationBrain):
    """A Brain whose rank 1 runs out of time first (see the module docstring)."""

    def _budget_spent(self) -> bool:
        steps = os.environ.get("S4M_BUDGET_STEPS_ON_RANK1")
        if steps is None:
            return super()._budget_spent()
        return int(os.environ["RANK"]) == 1 and self.optimizer_step >= int(steps)


if __name__ == "__main__":
    sys.exit(ddp_check.run(sys.argv[1:], RankOneClockBrain))
