#!/usr/bin/env python3
"""Train and evaluate a separator on LRS2-2Mix: ``python train.py hparams/<s4m|s4m_tiny|sepformer>.yaml
--data_folder=<dataset root>`` (see README.md; the logic is speechbrain_s4m.training.brain)."""

import sys

from speechbrain_s4m.data.preparation import prepare_lrs2mix
from speechbrain_s4m.training import recipe

if __name__ == "__main__":
    args = recipe.parse_arguments(sys.argv[1:])  # no model is built yet
    recipe.prepare_data(prepare_lrs2mix, args, ["num_spks"])
    hparams = recipe.load_hparams(args)
    datasets = recipe.build_datasets(hparams, dynamic_mixing_layout=None)
    recipe.train_and_evaluate(hparams, args, datasets)
