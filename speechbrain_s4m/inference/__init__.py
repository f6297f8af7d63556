"""Inference: separating recordings and streams with a trained model.

* :mod:`~speechbrain_s4m.inference.model_folder`: an ``s4m-export`` folder, loaded with
  SpeechBrain's separator class;
* :mod:`~speechbrain_s4m.inference.long_audio`: recordings of any length, chunk by
  chunk with overlap-add (``LongAudioSeparator``);
* :mod:`~speechbrain_s4m.inference.streaming`: a causal model on a stream
  (``StreamingSeparator``), and :mod:`~speechbrain_s4m.inference.fixed_step_stream`,
  the buffering of a fixed-size step that the ONNX and compiled runners share;
* :mod:`~speechbrain_s4m.inference.onnx_runtime` and
  :mod:`~speechbrain_s4m.inference.compiled_runtime`: the folders of
  ``s4m-export-onnx`` and ``s4m-compile``, run without the model code;
* :mod:`~speechbrain_s4m.inference.separate_command`: ``s4m-separate``;
* :mod:`~speechbrain_s4m.inference.html_report`: the listening page.

Nothing here imports :mod:`speechbrain_s4m.training`. ``s4m-separate --stream
--compile`` is the one path that reaches into :mod:`speechbrain_s4m.export`: it
compiles the stream step before it streams.
"""
