"""Module paths from before the package was laid out in rooms (``lobes``, ``data``,
``training``, ``inference``, ``export``, ``benchmark``), kept working for a while.

Each old path is a module of two lines that calls :func:`alias`: importing it imports
the new module, registers that same module object under the old name (so classes,
functions and patches are shared, not copied) and warns once with a
``FutureWarning`` that names the new path. The old paths go in release
:data:`REMOVED_IN`.

Example
-------
>>> import sys, warnings
>>> _ = sys.modules.pop("speechbrain_s4m.separation", None)  # as in a fresh process
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     import speechbrain_s4m.separation
>>> speechbrain_s4m.separation is sys.modules["speechbrain_s4m.training.brain"]
True
>>> print(caught[0].message)
speechbrain_s4m.separation moved to speechbrain_s4m.training.brain; the old path works until speechbrain-s4m 0.3.0

Authors
 * speechbrain-s4m contributors
"""

import importlib
import sys
import warnings

REMOVED_IN = "0.3.0"

# old module path -> new module path, for every old path that still imports
MOVED = {
    "speechbrain_s4m.separation": "speechbrain_s4m.training.brain",
    "speechbrain_s4m.recipe": "speechbrain_s4m.training.recipe",
    "speechbrain_s4m.speechbrain_compat": "speechbrain_s4m.training.speechbrain_compat",
    "speechbrain_s4m.curves": "speechbrain_s4m.training.curves",
    "speechbrain_s4m.separator": "speechbrain_s4m.lobes.encoder_masker_decoder",
    "speechbrain_s4m.separate": "speechbrain_s4m.inference.separate_command",
    "speechbrain_s4m.long_audio": "speechbrain_s4m.inference.long_audio",
    "speechbrain_s4m.streaming": "speechbrain_s4m.inference.streaming",
    "speechbrain_s4m.onnx_runtime": "speechbrain_s4m.inference.onnx_runtime",
    "speechbrain_s4m.compiled_runtime": "speechbrain_s4m.inference.compiled_runtime",
    "speechbrain_s4m.onnx_export": "speechbrain_s4m.export.onnx_graphs",
    "speechbrain_s4m.aot_compile": "speechbrain_s4m.export.compiled_packages",
}


def alias(old: str) -> None:
    """Make module path ``old`` (a key of :data:`MOVED`) the module it moved to."""
    new = MOVED[old]
    warnings.warn(
        f"{old} moved to {new}; the old path works until speechbrain-s4m {REMOVED_IN}",
        FutureWarning,
        stacklevel=3,
    )
    sys.modules[old] = importlib.import_module(new)
