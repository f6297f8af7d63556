"""The one options stamp of the data tools: reuse on the same options, refuse to
overwrite without force, atomic writes, one exception type."""

import json
import os

import pytest

from speechbrain_s4m.data.options_stamp import OptionsConflictError, OptionsStamp


def test_write_is_atomic_and_read_back(tmp_path):
    stamp = OptionsStamp(tmp_path / "out", "demo", {"seed": 1, "rates": (8000, 16000)})
    assert stamp.recorded() is None and not stamp.matches()
    stamp.write(info={"hours": 0.5})
    assert os.listdir(tmp_path / "out") == ["demo_options.json"]  # no temporary left
    with open(stamp.path, encoding="utf-8") as handle:
        assert json.load(handle) == {"options": {"seed": 1, "rates": [8000, 16000]}, "info": {"hours": 0.5}}
    assert stamp.matches()  # tuples compare as the lists they are read back as
    assert not OptionsStamp(tmp_path / "out", "demo", {"seed": 2}).matches()
    stamp.clear()
    assert not os.path.exists(stamp.path) and not stamp.matches()


def test_unreadable_stamp_counts_as_missing(tmp_path):
    (tmp_path / "demo_options.json").write_text("{not json")
    assert OptionsStamp(tmp_path, "demo", {}).recorded() is None
    (tmp_path / "demo_options.json").write_text("[1, 2]")
    assert OptionsStamp(tmp_path, "demo", {}).recorded() is None


@pytest.mark.parametrize(
    "recorded, why",
    [(None, "no matching demo_options.json"), ({"seed": 1}, "incomplete"), ({"seed": 2}, "other options")],
)
def test_refuse_overwrite_says_why_unless_forced(tmp_path, recorded, why):
    if recorded is not None:
        OptionsStamp(tmp_path, "demo", recorded).write()
    stamp = OptionsStamp(tmp_path, "demo", {"seed": 1})
    with pytest.raises(OptionsConflictError, match=why) as error:
        stamp.refuse_overwrite(str(tmp_path / "data"), "tool", force=False)
    assert isinstance(error.value, FileExistsError)
    assert str(tmp_path / "data") in str(error.value) and "--force" in str(error.value)
    stamp.refuse_overwrite(str(tmp_path / "data"), "tool", force=True)  # no error
