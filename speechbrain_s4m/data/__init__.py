"""Data for the separation recipes: CSV preparation of WSJ0-Mix, LibriMix and LRS2-Mix,
and on-the-fly (dynamic) mixing of single-speaker utterances."""

from speechbrain_s4m.data.dynamic_mixing import DynamicMixingDataset, MixturePlan
from speechbrain_s4m.data.preparation import (
    prepare_librimix,
    prepare_lrs2mix,
    prepare_separation_data,
    prepare_wsj0mix,
)

__all__ = [
    "DynamicMixingDataset",
    "MixturePlan",
    "prepare_librimix",
    "prepare_lrs2mix",
    "prepare_separation_data",
    "prepare_wsj0mix",
]
