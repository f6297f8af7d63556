"""``s4m-bench``: the efficiency of S4M, S4M-tiny and SpeechBrain's Sepformer, measured
the way the paper's Table 4 does (parameters, MACs per second of audio, CPU and GPU
real-time factors), plus how time and memory scale with the input length.

Models (:mod:`~speechbrain_s4m.benchmark.models`): each is built from its recipe's
hparams file, ``recipes/LRS2Mix/separation/hparams/{s4m_tiny,s4m,sepformer}.yaml``
(16 kHz, the paper's Table 4 setting) for the forward sections and
``recipes/LibriMix/separation/hparams/`` (8 kHz) for the train section, as an
:class:`~speechbrain_s4m.lobes.encoder_masker_decoder.EncoderMaskerDecoder`. Conv-TasNet, which has no
recipe here, is not benchmarked.

Sections (``--sections``, all by default):

* ``params``: trainable parameters of encoder + mask network + decoder.
* ``macs`` (:mod:`~speechbrain_s4m.benchmark.macs`): multiply-accumulates (MACs) for
  one second of 16 kHz audio (batch 1), counted with thop, the paper's tool, plus a
  stated rule for what thop misses (:data:`~speechbrain_s4m.benchmark.macs.COUNTING_RULE`):
  two figures, ``thop`` and ``all``.
* ``cpu`` (:mod:`~speechbrain_s4m.benchmark.timing`): CPU-RTF-f, the paper's CPU
  real-time factor: ten 1 s tracks separated one at a time (batch 1,
  ``torch.inference_mode``), total time / 10, median over ``--repeats`` rounds; the
  models take turns within each round so that they share the machine's load.
  Threads: ``--threads`` (default ``torch.get_num_threads()``).
* ``gpu``: GPU-RTF-f and GPU-RTF-b (forward, and forward + backward of a mean-square
  loss in training mode), milliseconds per 1 s track, synchronised timing after
  warm-up; skipped with a note when CUDA is absent.
* ``train``: one CPU training step of the LibriMix recipes' models: forward, uPIT
  SI-SNR loss (the recipes' ``loss``), backward, one step of the recipes' Adam
  ``optimizer`` and ``zero_grad``, on a batch of 2 random mixtures of 2 s (2 random
  sources each, fixed seed); one warm-up step each, then ``--train-rounds`` rounds in
  which every model takes one step (round-robin, one process); median step time,
  audio seconds per second and Sepformer's step time / the model's.
* ``scaling`` (:mod:`~speechbrain_s4m.benchmark.scaling`): forward time and peak
  memory on the CPU for inputs of ``--lengths`` seconds, each in a fresh subprocess
  described by a :class:`~speechbrain_s4m.benchmark.scaling.ScalingSpec`, and
  ``--long-seconds`` of audio (10 minutes by default) through the long-audio path
  (:func:`speechbrain_s4m.inference.long_audio.separate_in_chunks`, 10 s chunks, 2 s overlap).

Every figure is also given as a ratio to Sepformer's, measured in the same run, and
the targets of the efficiency issue are checked (PASS / MISS lines;
:mod:`~speechbrain_s4m.benchmark.report`). The tables are printed and written with a
JSON record of the machine to ``--out`` (``results/bench/`` by default) by
:func:`~speechbrain_s4m.benchmark.cli.main`, also run by
``python -m speechbrain_s4m.benchmark``.

Authors
 * speechbrain-s4m contributors
"""

from speechbrain_s4m.benchmark.cli import SECTIONS, UsageError, build_parser, main, run
from speechbrain_s4m.benchmark.macs import COUNTING_RULE, count_macs
from speechbrain_s4m.benchmark.models import (
    DEFAULT_MODELS,
    FORWARD_HPARAMS_DIR,
    RECIPE_HPARAMS,
    SAMPLE_RATE,
    TRAIN_HPARAMS_DIR,
    RecipeModel,
    build_model,
    count_parameters,
    load_recipe_model,
)

# Not ``report.report``: the package's ``report`` is its module.
from speechbrain_s4m.benchmark.report import PAPER, check_targets
from speechbrain_s4m.benchmark.scaling import ScalingSpec, run_scaling_subprocess, scaling_worker
from speechbrain_s4m.benchmark.timing import cpu_rtf, gpu_rtf, training_section

__all__ = [
    "COUNTING_RULE",
    "DEFAULT_MODELS",
    "FORWARD_HPARAMS_DIR",
    "PAPER",
    "RECIPE_HPARAMS",
    "SAMPLE_RATE",
    "SECTIONS",
    "TRAIN_HPARAMS_DIR",
    "RecipeModel",
    "ScalingSpec",
    "UsageError",
    "build_model",
    "build_parser",
    "check_targets",
    "count_macs",
    "count_parameters",
    "cpu_rtf",
    "gpu_rtf",
    "load_recipe_model",
    "main",
    "run",
    "run_scaling_subprocess",
    "scaling_worker",
    "training_section",
]
