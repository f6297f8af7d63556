"""Export: a trained recipe run as a folder that separates elsewhere.

* :mod:`~speechbrain_s4m.export.speechbrain_folder`: ``s4m-export``, a folder for
  SpeechBrain's own separator class;
* :mod:`~speechbrain_s4m.export.onnx_graphs`: ``s4m-export-onnx``, ONNX graphs, with
  :mod:`~speechbrain_s4m.export.onnx_lowering`;
* :mod:`~speechbrain_s4m.export.compiled_packages`: ``s4m-compile``, AOTInductor
  packages, with :mod:`~speechbrain_s4m.export.inductor_lowering`;
* :mod:`~speechbrain_s4m.export.graph_folder`: the staging, parity check and metadata
  that the ONNX and compiled folders share.

Before this package existed, ``speechbrain_s4m.export`` was the ``s4m-export``
module; its names are re-exported here, so that ``from speechbrain_s4m.export import
export_model`` keeps working until release 0.3.0.
"""

from speechbrain_s4m.export.speechbrain_folder import (  # noqa: F401 - the old module's names
    best_checkpoint,
    export_model,
    load_for_export,
    main,
)
from speechbrain_s4m.inference.model_folder import load_exported, require_model_folder  # noqa: F401
