"""The hparams keys the Brain and the recipes read are checked once at load: every
shipped YAML passes; a missing, mistyped or misspelt key is named with the file."""

from pathlib import Path

import pytest
from hyperpyyaml import load_hyperpyyaml
from tiny_runs import small_overrides

from speechbrain_s4m.training.hparams_keys import BRAIN_KEYS, RECIPE_KEYS, check_hparams

REPO = Path(__file__).resolve().parents[2]
YAMLS = sorted(REPO.glob("recipes/*/separation/hparams/*.yaml"))


def load(path, tmp_path, *overrides):
    small = [f"{key}: {value}" for key, value in small_overrides(path.stem).items()]
    options = [f"data_folder: {tmp_path / 'data'}", f"output_folder: {tmp_path / 'out'}", *small, *overrides]
    with open(path, encoding="utf-8") as handle:
        return load_hyperpyyaml(handle, "\n".join(options))


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: f"{p.parts[-4]}/{p.name}")
def test_every_recipe_yaml_passes(path, tmp_path):
    hparams = load(path, tmp_path)
    checked = check_hparams(hparams, RECIPE_KEYS, str(path))
    assert set(hparams) <= set(checked)
    assert all(key.name in checked for key in RECIPE_KEYS)


def test_missing_wrong_and_misspelt_keys_are_named_with_the_file(tmp_path):
    path = REPO / "recipes" / "LibriMix" / "separation" / "hparams" / "s4m_tiny.yaml"
    hparams = load(path, tmp_path)
    broken = {key: value for key, value in hparams.items() if key not in ("num_spks", "lr_warmup_steps")}
    broken["lr_warmup_step"] = 100  # misspelt
    broken["threshold_byloss"] = "yes"
    with pytest.raises(ValueError) as error:
        check_hparams(broken, RECIPE_KEYS, str(path))
    message = str(error.value)
    assert message.startswith(str(path))
    assert "num_spks is missing" in message
    assert "unknown key lr_warmup_step: did you mean lr_warmup_steps?" in message
    assert "threshold_byloss must be True or False, got 'yes'" in message


def test_optional_keys_get_defaults_and_conditional_keys_are_required():
    keys = [key for key in RECIPE_KEYS if key.name in ("dynamic_mixing", "base_folder_dm", "lr_decay_final")]
    assert check_hparams({}, keys, "x.yaml") == {
        "dynamic_mixing": False,
        "base_folder_dm": None,
        "lr_decay_final": 0.01,
    }
    with pytest.raises(ValueError, match=r"x.yaml: base_folder_dm is missing \(needed when dynamic_mixing is True\)"):
        check_hparams({"dynamic_mixing": True}, keys, "x.yaml")


def test_the_brain_checks_its_own_keys():
    from speechbrain_s4m.training.brain import SeparationBrain

    with pytest.raises(ValueError, match="SeparationBrain hparams: .*Encoder is missing"):
        SeparationBrain(modules={}, hparams={"num_spks": 2}, run_opts={"device": "cpu"})
    assert {key.name for key in BRAIN_KEYS} <= {key.name for key in RECIPE_KEYS}
