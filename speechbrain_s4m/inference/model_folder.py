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
