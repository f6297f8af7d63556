#!/usr/bin/env python3
"""Train and evaluate a separator on WSJ0-2Mix / WSJ0-3Mix: ``python train.py hparams/<s4m|s4m_tiny|sepformer>.yaml
--data_folder=<dataset root>`` (see README.md; the logic is speechbrain_s4m.training.brain)."""

import sys

from speechbrain_s4m.data.preparation import prepare_wsj0mix
from speechbrain_s4m.training import recipe

if __name__ == "__main__":
    args = recipe.parse_arguments(sys.argv[1:])  # no model is built yet
    recipe.prepare_data(prepare_wsj0mix, args, ["sample_rate", "mode", "num_spks"])
    hparams = recipe.load_hparams(args)
    datasets = recipe.build_datasets(hparams, dynamic_mixing_layout="wsj0")
    recipe.train_and_evaluate(hparams, args, datasets)
