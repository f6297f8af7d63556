"""An ``s4m-export`` model folder, loaded with SpeechBrain's own separator class.

The folder holds ``hyperparams.yaml`` and the trained ``encoder.ckpt``,
``masknet.ckpt`` and ``decoder.ckpt`` (written by :mod:`speechbrain_s4m.export.
speechbrain_folder`). Everything that separates with such a folder, the long-audio
path, the stream and the exports, loads it here.

Authors
 * speechbrain-s4m contributors
"""

import os
import tempfile
from typing import Optional


def require_model_folder(model_dir: str) -> None:
    """``FileNotFoundError`` naming the files expected when ``model_dir`` is not an
    ``s4m-export`` folder.

    Example
    -------
    >>> require_model_folder("no-such-folder")
    Traceback (most recent call last):
    FileNotFoundError: no-such-folder is not an s4m-export model folder: expected hyperparams.yaml, ...
    """
    if not os.path.isfile(os.path.join(model_dir, "hyperparams.yaml")):
        raise FileNotFoundError(
            f"{model_dir} is not an s4m-export model folder: expected hyperparams.yaml, encoder.ckpt, "
            "masknet.ckpt and decoder.ckpt there (write one with s4m-export)"
        )


def load_exported(model_dir: str, savedir: Optional[str] = None, device: str = "cpu"):
    """The folder's separator: ``speechbrain.inference.separation.SepformerSeparation``
    over the lobes its ``hyperparams.yaml`` names, on ``device``.

    ``savedir`` is where SpeechBrain links the folder's files (a new temporary folder
    when None). Raises ``FileNotFoundError`` as :func:`require_model_folder` does."""
    from speechbrain.inference.separation import SepformerSeparation

    require_model_folder(model_dir)
    savedir = savedir or tempfile.mkdtemp(prefix="s4m-model-")
    return SepformerSeparation.from_hparams(
        source=os.path.abspath(model_dir), savedir=savedir, run_opts={"device": device}
    )


class UnsupportedBackbone(ValueError):
    """A path that only S4M's lobes have (the stream, ONNX graphs, compiled packages)
    was asked of a model with another mask network."""


def require_s4m(masknet: object, path: str, reason: str) -> None:
    """``UnsupportedBackbone`` naming ``path`` (what was asked), what it needs, the mask
    network it got, ``reason`` (why only S4M has it) and what works with any backbone,
    unless ``masknet`` is an ``S4MMaskNet``.

    Example
    -------
    >>> from speechbrain.lobes.models.conv_tasnet import MaskNet
    >>> require_s4m(MaskNet(N=8, B=8, H=8, P=3, X=1, R=1, C=2), "streaming", "its state is S4M's")
    Traceback (most recent call last):
    speechbrain_s4m.inference.model_folder.UnsupportedBackbone: streaming needs an S4M or S4M-tiny mask network ...
    """
    from speechbrain_s4m.lobes.s4m import S4MMaskNet

    if not isinstance(masknet, S4MMaskNet):
        kind = type(masknet)
        raise UnsupportedBackbone(
            f"{path} needs an S4M or S4M-tiny mask network (speechbrain_s4m.lobes.S4MMaskNet); this model's "
            f"is {kind.__module__}.{kind.__qualname__}. {reason} Any backbone separates files offline with "
            "PyTorch: s4m-separate --model MODEL_DIR INPUT... --out DIR"
        )
