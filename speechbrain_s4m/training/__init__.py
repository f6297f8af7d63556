"""Training: the separation Brain and what the recipes need around it.

* :mod:`~speechbrain_s4m.training.brain`: ``SeparationBrain``, the one Brain of every
  recipe and backbone (uPIT SI-SNR, clipping, DDP, mixed precision, validation,
  test);
* :mod:`~speechbrain_s4m.training.recipe`: a recipe's ``train.py`` in four calls;
* :mod:`~speechbrain_s4m.training.hparams_keys`: the recipe YAMLs' keys, checked;
* :mod:`~speechbrain_s4m.training.speechbrain_compat`: what the Brain relies on in
  SpeechBrain beyond its documented interface (the YAMLs' ``EarlyStoppingCounter``);
* :mod:`~speechbrain_s4m.training.distributed`: decisions every DDP rank takes together;
* :mod:`~speechbrain_s4m.training.ddp_check`: a short run whose ranks are compared;
* :mod:`~speechbrain_s4m.training.curves`: ``s4m-plot-curves``.
"""
