#!/usr/bin/env python3
"""Train and evaluate a separator on Libri2Mix / Libri3Mix: ``python train.py hparams/<s4m|s4m_tiny|sepformer>.yaml
--data_folder=<dataset root>`` (see README.md; the logic is speechbrain_s4m.training.brain)."""

import sys

from speechbrain_s4m.data.preparation import prepare_librimix
from speechbrain_s4m.training import recipe

if __name__ == "__main__":
    args = recipe.parse_arguments(sys.argv[1:])  # no model is built yet
    recipe.prepare_data(prepare_librimix, args, ["sample_rate", "mode", "num_spks", "train_subset", "mixture_type"])
    hparams = recipe.load_hparams(args)
    datasets = recipe.build_datasets(hparams, dynamic_mixing_layout="librispeech")
    recipe.train_and_evaluate(hparams, args, datasets)
