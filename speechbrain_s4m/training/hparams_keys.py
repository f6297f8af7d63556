"""The hparams keys the Brain and the recipes read, checked once when the hparams are
loaded.

A missing key, a value of the wrong type, or a key that looks like a misspelling of
an optional one gives a ``ValueError`` naming the key and the YAML file, before any
training starts. Optional keys get their defaults, so the code that reads them reads
them directly.

Authors
 * speechbrain-s4m contributors
"""

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch

_MISSING = object()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


KINDS: Dict[str, Tuple[str, Callable[[Any], bool]]] = {
    "int": ("a whole number", _is_int),
    "number": ("a number", _is_number),
    "bool": ("True or False", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "callable": ("a class or function (!name: or !new:)", callable),
    "module": ("a torch.nn.Module (!new:)", lambda v: isinstance(v, torch.nn.Module)),
    "mapping": ("a mapping", lambda v: isinstance(v, Mapping)),
    "object": ("an object (!new:)", lambda v: v is not None),
}


@dataclass(frozen=True)
class Key:
    """One hparams key: its kind (:data:`KINDS`), and for optional keys the default.

    ``nullable`` keys may also be ``null``. ``needed_when`` names a bool key that
    makes an optional key required when True."""

    name: str
    kind: str
    default: Any = _MISSING
    nullable: bool = False
    needed_when: Optional[str] = None

    @property
    def optional(self) -> bool:
        return self.default is not _MISSING


#: Read by :class:`~speechbrain_s4m.training.brain.SeparationBrain`.
BRAIN_KEYS: Tuple[Key, ...] = (
    Key("Encoder", "module"),
    Key("MaskNet", "module"),
    Key("Decoder", "module"),
    Key("num_spks", "int"),
    Key("sample_rate", "int"),
    Key("loss", "callable"),
    Key("threshold_byloss", "bool"),
    Key("threshold", "number"),
    Key("loss_upper_lim", "number"),
    Key("use_speedperturb", "bool"),
    Key("speedperturb", "callable", default=None, nullable=True, needed_when="use_speedperturb"),
    Key("limit_training_signal_len", "bool"),
    Key("training_signal_len", "int"),
    Key("epoch_counter", "object"),
    Key("train_logger", "object"),
    Key("output_folder", "str"),
    Key("lr_scheduler", "callable", default=None, nullable=True),
    Key("max_train_minutes", "number", default=0),
    Key("lr_warmup_steps", "int", default=0),
    Key("lr_decay_steps", "int", default=0),
    Key("lr_decay_final", "number", default=0.01),
    Key("eval_chunk_seconds", "number", default=None, nullable=True),
    Key("eval_overlap_seconds", "number", default=2.0),
)

#: Read by :mod:`speechbrain_s4m.training.recipe` (as well as the Brain's).
RECIPE_KEYS: Tuple[Key, ...] = BRAIN_KEYS + (
    Key("modules", "mapping"),
    Key("optimizer", "callable"),
    Key("checkpointer", "object"),
    Key("data_folder", "str"),
    Key("save_folder", "str"),
    Key("train_data", "str"),
    Key("valid_data", "str"),
    Key("test_data", "str"),
    Key("seed", "int"),
    Key("sorting", "str"),
    Key("dataloader_opts", "mapping"),
    Key("test_dataloader_opts", "mapping"),
    Key("skip_prep", "bool", default=False),
    Key("start_from_mixture", "bool", default=False),
    Key("dynamic_mixing", "bool", default=False),
    Key("base_folder_dm", "str", default=None, nullable=True, needed_when="dynamic_mixing"),
    Key("dm_examples_per_epoch", "int", default=None, nullable=True, needed_when="dynamic_mixing"),
    Key("dm_speakers_file", "str", default=None, nullable=True),
)


def check_hparams(hparams: Mapping, keys: Sequence[Key], source: str) -> Dict[str, Any]:
    """``hparams`` with the defaults of the optional ``keys`` that it lacks, after
    checking every key.

    Arguments
    ---------
    hparams : mapping
        Loaded hparams (``load_hyperpyyaml``'s result).
    keys : sequence of Key
        :data:`BRAIN_KEYS` or :data:`RECIPE_KEYS`.
    source : str
        The YAML file, named in the errors.

    Raises
    ------
    ValueError
        Naming the key and ``source``: a required key missing, a value of the wrong
        type, or an unknown key close to an optional key that is missing (a
        misspelling, e.g. ``lr_warmup_step``).

    Example
    -------
    >>> check_hparams({"lr_warmup_steps": 10}, [Key("lr_warmup_steps", "int", default=0),
    ...     Key("lr_decay_steps", "int", default=0)], "x.yaml")
    {'lr_warmup_steps': 10, 'lr_decay_steps': 0}
    >>> check_hparams({"lr_warmup_steps": "ten"}, [Key("lr_warmup_steps", "int", default=0)], "x.yaml")
    Traceback (most recent call last):
      ...
    ValueError: x.yaml: lr_warmup_steps must be a whole number, got 'ten' (str)
    """
    problems = []
    checked = dict(hparams)
    known = {key.name for key in keys}
    for key in keys:
        value = hparams.get(key.name, _MISSING)
        if value is _MISSING:
            needed = key.needed_when is not None and hparams.get(key.needed_when) is True
            if key.optional and not needed:
                checked[key.name] = key.default
                continue
            why = f" (needed when {key.needed_when} is True)" if needed else ""
            problems.append(f"{key.name} is missing{why}{_did_you_mean(key.name, set(hparams) - known)}")
            continue
        if value is None and key.nullable and not (key.needed_when and hparams.get(key.needed_when) is True):
            continue
        description, test = KINDS[key.kind]
        if not test(value):
            problems.append(f"{key.name} must be {description}, got {value!r} ({type(value).__name__})")
    absent_optional = [key.name for key in keys if key.optional and key.name not in hparams]
    for name in sorted(set(hparams) - known):
        close = difflib.get_close_matches(name, absent_optional, n=1, cutoff=0.85)
        if close:
            problems.append(f"unknown key {name}: did you mean {close[0]}?")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    return checked


def _did_you_mean(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.8)
    return f" (found {close[0]}: misspelt?)" if close else ""
