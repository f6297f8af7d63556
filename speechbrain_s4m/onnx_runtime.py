"""Moved to :mod:`speechbrain_s4m.inference.onnx_runtime`; this path works until release 0.3.0."""

from speechbrain_s4m._moved import alias

alias(__name__)
