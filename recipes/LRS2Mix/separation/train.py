#!/usr/bin/env python3
"""Train and evaluate a separator on LRS2-2Mix.

The backbone comes from the hparams file alone:

    python train.py hparams/s4m.yaml --data_folder=<dataset root>
    python train.py hparams/s4m_tiny.yaml --data_folder=<dataset root>
    python train.py hparams/sepformer.yaml --data_folder=<dataset root>

Several GPUs: torchrun --nproc_per_node=N train.py hparams/s4m.yaml --data_folder=...
Any hparam can be overridden on the command line (e.g. --batch_size=2).
The training logic is speechbrain_s4m.separation.SeparationBrain, shared by all recipes.
"""

import sys

from speechbrain_s4m import recipe
from speechbrain_s4m.data.preparation import prepare_lrs2mix

if __name__ == "__main__":
    args = recipe.parse_arguments(sys.argv[1:])  # no model is built yet
    recipe.prepare_data(prepare_lrs2mix, args, ["num_spks"])
    hparams = recipe.load_hparams(args)
    datasets = recipe.build_datasets(hparams, dynamic_mixing_layout=None)
    recipe.train_and_evaluate(hparams, args, datasets)
