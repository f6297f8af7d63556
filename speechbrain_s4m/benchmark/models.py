"""The benchmarked models, built from the recipes' hparams files.

Every model is a :class:`~speechbrain_s4m.lobes.encoder_masker_decoder.EncoderMaskerDecoder` over the
``Encoder``, ``MaskNet`` and ``Decoder`` of a recipe YAML, loaded with hyperpyyaml by
:func:`load_recipe_model`, the one loading path of the benchmark:

* the forward sections (params, macs, cpu, gpu, scaling) build the LRS2Mix recipe's
  models (:data:`FORWARD_HPARAMS_DIR`, 16 kHz: the paper's Table 4 setting), through
  :func:`build_model`;
* the train section builds the LibriMix recipe's (:data:`TRAIN_HPARAMS_DIR`, 8 kHz)
  with their optimizer and loss.

Authors
 * speechbrain-s4m contributors
"""

import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

import torch
from torch import nn

from speechbrain_s4m.lobes.encoder_masker_decoder import EncoderMaskerDecoder

SAMPLE_RATE = 16000  # the paper's Table 4 (LRS2-2Mix)
REFERENCE = "Sepformer"  # every figure is also given as a ratio to this model's

# The hparams file of each model, the same name in every recipe folder.
RECIPE_HPARAMS = {
    "S4M-tiny": "s4m_tiny.yaml",
    "S4M": "s4m.yaml",
    "Sepformer": "sepformer.yaml",
    "S4M-tiny causal": "s4m_tiny_causal.yaml",  # the streaming section's
    "S4M causal": "s4m_causal.yaml",
    # SpeechBrain's own separators, beside S4M
    "Conv-TasNet": "conv_tasnet.yaml",
    "Conv-TasNet causal": "conv_tasnet_causal.yaml",
    "DPRNN": "dprnn.yaml",
    "SkiM": "skim.yaml",
    "SkiM causal": "skim_causal.yaml",
    "RE-SepFormer": "resepformer.yaml",
}
DEFAULT_MODELS = ("S4M-tiny", "S4M", "Sepformer")  # short enough for CI; --models all: every model

RECIPES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "recipes")
FORWARD_HPARAMS_DIR = os.path.join(RECIPES_DIR, "LRS2Mix", "separation", "hparams")
TRAIN_HPARAMS_DIR = os.path.join(RECIPES_DIR, "LibriMix", "separation", "hparams")

Overrides = Dict[str, Dict[str, Any]]  # hparams overrides per model name


@dataclass
class RecipeModel:
    """A recipe's model, with what one training step of it needs.

    Attributes
    ----------
    separator : EncoderMaskerDecoder
        The recipe's ``Encoder``, ``MaskNet`` and ``Decoder``.
    optimizer : torch.optim.Optimizer
        The recipe's ``optimizer`` over the separator's parameters.
    loss : callable
        The recipe's ``loss(targets, estimates)``, per example ``[batch]``.
    sample_rate : int
        The recipe's sample rate.
    num_spks : int
        Number of sources per mixture.
    hparams_file : str
        The hparams file it was built from.
    """

    separator: EncoderMaskerDecoder
    optimizer: torch.optim.Optimizer
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    sample_rate: int
    num_spks: int
    hparams_file: str


def load_recipe_model(hparams_file: str, overrides: Optional[Mapping[str, Any]] = None) -> RecipeModel:
    """Build a recipe's model, optimizer and loss from its hparams file, without data.

    ``data_folder`` and ``output_folder`` are set to a temporary directory, removed
    afterwards, so that loading writes nothing into the working directory (the
    hparams' checkpointer creates its folder when built).

    Arguments
    ---------
    hparams_file : str
        A separation recipe's hparams YAML (``Encoder``, ``MaskNet``, ``Decoder``,
        ``optimizer``, ``loss``, ``sample_rate``, ``num_spks``).
    overrides : dict, optional
        More hyperpyyaml overrides, e.g. ``{"num_blocks": 1}``.

    Returns
    -------
    RecipeModel
        The separator (in training mode), its optimizer and the loss.

    Raises
    ------
    ValueError
        When the file does not exist or an override names a key that it lacks.

    Example
    -------
    >>> path = recipe_hparams_file("S4M-tiny", TRAIN_HPARAMS_DIR)
    >>> model = load_recipe_model(path, {"num_blocks": 1, "hidden_channels": 16})
    >>> model.sample_rate, model.num_spks, model.separator.training
    (8000, 2, True)
    """
    from hyperpyyaml import load_hyperpyyaml

    from speechbrain_s4m.training.brain import optimizer_parameter_groups

    if not os.path.isfile(hparams_file):
        raise ValueError(f"recipe hparams not found: {hparams_file}")
    with tempfile.TemporaryDirectory(prefix="s4m-bench-") as folder:
        settings = {"data_folder": folder, "output_folder": folder, **(overrides or {})}
        with open(hparams_file, encoding="utf-8") as handle:
            try:
                hparams = load_hyperpyyaml(handle, settings)
            except KeyError as error:  # an override the file does not have
                raise ValueError(f"{hparams_file}: {error.args[0]}") from error
    separator = EncoderMaskerDecoder(hparams["Encoder"], hparams["MaskNet"], hparams["Decoder"]).train()
    return RecipeModel(
        separator=separator,
        optimizer=hparams["optimizer"](optimizer_parameter_groups(separator)),  # as the Brain
        loss=hparams["loss"],
        sample_rate=int(hparams["sample_rate"]),
        num_spks=int(hparams["num_spks"]),
        hparams_file=hparams_file,
    )


def recipe_hparams_file(name: str, hparams_dir: str = FORWARD_HPARAMS_DIR) -> str:
    """The hparams file of model ``name`` (:data:`RECIPE_HPARAMS`) in ``hparams_dir``.

    Example
    -------
    >>> os.path.basename(recipe_hparams_file("S4M-tiny"))
    's4m_tiny.yaml'
    >>> recipe_hparams_file("Nope")
    Traceback (most recent call last):
    ...
    ValueError: unknown model 'Nope'; choose from ['Conv-TasNet', 'Conv-TasNet causal', 'DPRNN', ...]
    """
    if name not in RECIPE_HPARAMS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(RECIPE_HPARAMS)}")
    return os.path.join(hparams_dir, RECIPE_HPARAMS[name])


def build_model(
    name: str,
    sample_rate: int = SAMPLE_RATE,
    overrides: Optional[Mapping[str, Any]] = None,
    hparams_dir: str = FORWARD_HPARAMS_DIR,
) -> EncoderMaskerDecoder:
    """The separator of model ``name`` from its recipe's hparams file
    (:func:`load_recipe_model`) at ``sample_rate``, in evaluation mode.

    Arguments
    ---------
    name : str
        One of :data:`RECIPE_HPARAMS`.
    sample_rate : int
        Overrides the file's ``sample_rate`` (S4M's 4 ms encoder kernel follows it).
    overrides : dict, optional
        More hyperpyyaml overrides, e.g. ``{"num_blocks": 1, "hidden_channels": 16}``.
    hparams_dir : str
        The recipe's hparams folder (default: the LRS2Mix recipe's, Table 4).

    Example
    -------
    >>> model = build_model("S4M-tiny", overrides={"num_blocks": 1, "hidden_channels": 16})
    >>> type(model).__name__, model.training, model(torch.randn(1, 800)).shape
    ('EncoderMaskerDecoder', False, torch.Size([1, 800, 2]))
    """
    path = recipe_hparams_file(name, hparams_dir)
    return load_recipe_model(path, {**(overrides or {}), "sample_rate": sample_rate}).separator.eval()


def check_overrides(overrides: Overrides, what: str) -> None:
    """Raise ``ValueError`` unless ``overrides`` is ``{model: {key: value}}`` for
    models of :data:`RECIPE_HPARAMS` (``what`` names the option in the message).

    Example
    -------
    >>> check_overrides({"S4M": {"num_blocks": 1}}, "model overrides")
    >>> check_overrides({"ConvTasNet": {"N": 1}}, "model overrides")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: model overrides for models without a recipe: ['ConvTasNet']; recipes: ['Conv-TasNet', ...]
    """
    if not isinstance(overrides, dict) or not all(isinstance(value, dict) for value in overrides.values()):
        raise ValueError(f"{what}: expected {{model: {{key: value}}}}, got {overrides!r}")
    unknown = sorted(set(overrides) - set(RECIPE_HPARAMS))
    if unknown:
        raise ValueError(f"{what} for models without a recipe: {unknown}; recipes: {sorted(RECIPE_HPARAMS)}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters.

    Example
    -------
    >>> count_parameters(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
