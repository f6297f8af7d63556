"""Export a trained recipe for SpeechBrain's own separator class: ``s4m-export``.

The exported folder holds ``hyperparams.yaml`` (the trained Encoder, MaskNet and
Decoder, ``sample_rate``, ``num_spks``, ``modules`` and a ``pretrainer``),
``encoder.ckpt``, ``masknet.ckpt``, ``decoder.ckpt`` and a ``README.md`` model card.
It loads with SpeechBrain alone, no code of this package needed beyond the lobes
the YAML names::

    from speechbrain.inference.separation import SepformerSeparation
    model = SepformerSeparation.from_hparams(source="exported_dir", savedir="cache")
    sources = model.separate_file("mixture.wav")  # [1, time, num_spks]

Authors
 * speechbrain-s4m contributors
"""

import csv
import io
import os
import shutil
import sys
from typing import Dict, Optional, Sequence

import torch
from ruamel.yaml import YAML
from speechbrain.utils.checkpoints import Checkpointer

from speechbrain_s4m.cli import command_parser, usage_error
from speechbrain_s4m.inference.model_folder import load_exported

MODULE_KEYS = {"encoder": "Encoder", "masknet": "MaskNet", "decoder": "Decoder"}
BEST_KEY = "si-snr"  # validation loss (-SI-SNR) saved in each end-of-epoch checkpoint

_LOADING = """
modules:
    encoder: !ref <Encoder>
    masknet: !ref <MaskNet>
    decoder: !ref <Decoder>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <Encoder>
        masknet: !ref <MaskNet>
        decoder: !ref <Decoder>
"""


def best_checkpoint(save_folder: str) -> str:
    """The checkpoint folder with the lowest validation loss (best SI-SNR)."""
    if not os.path.isdir(save_folder):
        raise FileNotFoundError(
            f"No checkpoint folder {save_folder}: expected the 'save' folder of a recipe's "
            "output folder (results/<backbone>/<seed>/save)"
        )
    checkpoint = Checkpointer(save_folder).find_checkpoint(min_key=BEST_KEY)
    if checkpoint is None:
        raise FileNotFoundError(
            f"No end-of-epoch checkpoint with a validation score in {save_folder}: "
            "train for at least one epoch first, or name one with --checkpoint"
        )
    return str(checkpoint.path)


def _model_yaml(recipe_hparams: str) -> str:
    """``hyperparams.yaml`` for the separator, from a recipe run's saved hparams."""
    yaml = YAML(typ="rt")
    with open(recipe_hparams, encoding="utf-8") as f:
        tree = yaml.load(f)
    missing = [k for k in ["sample_rate", "num_spks", *MODULE_KEYS.values()] if k not in tree]
    if missing:
        raise ValueError(
            f"{recipe_hparams}: missing {', '.join(missing)}; expected the hyperparams.yaml "
            "that a recipe run writes into its output folder"
        )
    model = {key: tree[key] for key in ["sample_rate", "num_spks", *MODULE_KEYS.values()]}
    text = io.StringIO()
    yaml.dump(model, text)
    header = (
        "# Separator exported by s4m-export from\n"
        f"# {os.path.abspath(recipe_hparams)}\n"
        "# Load with speechbrain.inference.separation.SepformerSeparation.from_hparams\n\n"
    )
    return header + text.getvalue() + _LOADING


def _test_summary(recipe_folder: str) -> Optional[Dict[str, str]]:
    path = os.path.join(recipe_folder, "test_results.csv")
    if not os.path.isfile(path):
        return None
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    summary = next((r for r in rows if r.get("snt_id") == "avg"), None)
    if summary is not None:
        summary = {**summary, "utterances": str(len(rows) - 1)}
    return summary


def _model_card(recipe_folder: str, checkpoint: str, out_dir: str, settings: dict) -> str:
    params = sum(
        tensor.numel()
        for name in MODULE_KEYS
        for tensor in torch.load(os.path.join(out_dir, f"{name}.ckpt"), map_location="cpu", weights_only=True).values()
    )
    lines = [
        f"# {settings.get('backbone', 'separator')} speech separator",
        "",
        "Exported with `s4m-export` from a speechbrain-s4m recipe run.",
        "",
        "| | |",
        "|---|---|",
        f"| backbone | {settings.get('backbone', 'unknown')} |",
        f"| parameters | {params / 1e6:.2f} M |",
        f"| sample rate | {settings['sample_rate']} Hz |",
        f"| speakers | {settings['num_spks']} |",
        f"| training data | {settings.get('data_folder', 'unknown')}"
        + (
            " (dynamic mixing from " + str(settings.get("base_folder_dm")) + ")"
            if settings.get("dynamic_mixing")
            else ""
        )
        + " |",
        f"| recipe run | {os.path.abspath(recipe_folder)} |",
        f"| checkpoint | {os.path.basename(checkpoint)} |",
        "",
    ]
    summary = _test_summary(recipe_folder)
    if summary is None:
        lines += ["No test results were found (`test_results.csv`).", ""]
    else:
        lines += [
            f"## Test results ({summary['utterances']} utterances, mean)",
            "",
            "| SI-SNR | SI-SNRi | SDR | SDRi |",
            "|---|---|---|---|",
            "| " + " | ".join(f"{float(summary[k]):.2f} dB" for k in ["si-snr", "si-snr_i", "sdr", "sdr_i"]) + " |",
            "",
        ]
    lines += [
        "## Use",
        "",
        "```python",
        "from speechbrain.inference.separation import SepformerSeparation",
        'model = SepformerSeparation.from_hparams(source="<this folder>", savedir="<cache>")',
        'sources = model.separate_file("mixture.wav")  # [1, time, speakers]',
        "```",
        "",
        "Long recordings, in bounded memory: `s4m-separate --model <this folder> INPUT --out DIR`.",
        "",
    ]
    return "\n".join(lines)


def export_model(
    recipe_folder: str,
    out_dir: str,
    checkpoint: Optional[str] = None,
    force: bool = False,
) -> str:
    """Export a recipe run (``results/<backbone>/<seed>``) to ``out_dir``.

    Arguments
    ---------
    recipe_folder : str
        The recipe's output folder: ``hyperparams.yaml``, ``save/`` and, when the
        test stage ran, ``test_results.csv``.
    out_dir : str
        The model folder to write. An existing non-empty folder is only overwritten
        with ``force=True``.
    checkpoint : str, optional
        A checkpoint folder (``save/CKPT+...``); by default the best by validation
        SI-SNR.
    force : bool
        Overwrite the files of an existing ``out_dir``.

    Returns
    -------
    str
        ``out_dir``.
    """
    recipe_hparams = os.path.join(recipe_folder, "hyperparams.yaml")
    if not os.path.isfile(recipe_hparams):
        raise FileNotFoundError(
            f"{recipe_folder} is not a recipe output folder: expected {recipe_hparams} "
            "(written by train.py into results/<backbone>/<seed>)"
        )
    checkpoint = checkpoint or best_checkpoint(os.path.join(recipe_folder, "save"))
    sources = {name: os.path.join(checkpoint, f"{name}.ckpt") for name in MODULE_KEYS}
    missing = [path for path in sources.values() if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"Checkpoint {checkpoint} lacks {', '.join(missing)}")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not force:
        raise FileExistsError(
            f"{out_dir} exists and is not empty; choose another folder or pass --force to overwrite its model files"
        )

    model_yaml = _model_yaml(recipe_hparams)
    os.makedirs(out_dir, exist_ok=True)
    for name, path in sources.items():
        shutil.copyfile(path, os.path.join(out_dir, f"{name}.ckpt"))
    with open(os.path.join(out_dir, "hyperparams.yaml"), "w", encoding="utf-8") as f:
        f.write(model_yaml)
    with open(recipe_hparams, encoding="utf-8") as f:
        settings = {
            k: v for k, v in YAML(typ="rt").load(f).items() if v is None or isinstance(v, (str, int, float, bool))
        }
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(_model_card(recipe_folder, checkpoint, out_dir, settings))
    return out_dir


def load_for_export(model_dir: str, check_audio: Optional[str] = None):
    """What ``s4m-export-onnx`` and ``s4m-compile`` start from: the separator of an
    ``s4m-export`` folder (an :class:`~speechbrain_s4m.lobes.encoder_masker_decoder.EncoderMaskerDecoder`
    over its modules), its sample rate, and the mixture of ``check_audio`` for the
    parity check (None without it).

    Raises
    ------
    FileNotFoundError
        When ``model_dir`` is not an ``s4m-export`` folder.
    ValueError
        When ``check_audio`` is not at the model's sample rate.
    """
    from speechbrain_s4m.data.audio import read_audio
    from speechbrain_s4m.lobes.encoder_masker_decoder import EncoderMaskerDecoder

    separator = load_exported(model_dir)  # FileNotFoundError when it is not a model folder
    mods, sample_rate = separator.mods, int(separator.hparams.sample_rate)
    check_mix = None
    if check_audio is not None:
        signal, rate = read_audio(check_audio)
        if rate != sample_rate:
            raise ValueError(f"--check-audio {check_audio}: {rate} Hz, expected the model's {sample_rate} Hz")
        check_mix = signal.numpy()
    return EncoderMaskerDecoder(mods.encoder, mods.masknet, mods.decoder), sample_rate, check_mix


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``s4m-export``; returns the exit status."""
    parser = command_parser(
        prog="s4m-export",
        description=(
            "Export a trained recipe run to a model folder that SpeechBrain's "
            "SepformerSeparation.from_hparams loads (hyperparams.yaml, encoder.ckpt, "
            "masknet.ckpt, decoder.ckpt, README.md)."
        ),
    )
    parser.add_argument("recipe_folder", help="the recipe's output folder, e.g. results/s4m/1234")
    parser.add_argument("out_dir", help="the model folder to write")
    parser.add_argument("--checkpoint", help="a checkpoint folder (save/CKPT+...); default: best validation SI-SNR")
    parser.add_argument("--force", action="store_true", help="overwrite an existing model folder")
    args = parser.parse_args(argv)
    try:
        out = export_model(args.recipe_folder, args.out_dir, args.checkpoint, args.force)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        return usage_error("s4m-export", error)
    print(f"Exported {args.recipe_folder} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
