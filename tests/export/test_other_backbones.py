"""SpeechBrain's own separators (here causal Conv-TasNet, trained by the LibriMix recipe)
export and separate files like S4M; the paths that only S4M's lobes have (the stream,
ONNX graphs, compiled packages) refuse them, naming what they need and what works."""

from pathlib import Path

import pytest
import torch
from speechbrain.dataio.dataio import write_audio
from tiny_datasets import make_librimix
from tiny_runs import train_tiny

from speechbrain_s4m.export import compiled_packages, onnx_graphs
from speechbrain_s4m.export.speechbrain_folder import export_model
from speechbrain_s4m.inference import separate_command
from speechbrain_s4m.inference.model_folder import UnsupportedBackbone, load_exported
from speechbrain_s4m.inference.streaming import StreamingSeparator

pytestmark = pytest.mark.slow  # trains a recipe (see tests/conftest.py)

BACKBONE = "speechbrain.lobes.models.conv_tasnet.MaskNet"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv_tasnet")
    data = make_librimix(root / "data", with_noise=False)
    train_tiny(data, root / "run", hparams="conv_tasnet_causal", epochs=1)
    return export_model(str(root / "run"), str(root / "model"))


@pytest.fixture()
def mixture(tmp_path):
    path = tmp_path / "mix.wav"
    write_audio(str(path), 0.1 * torch.randn(4000, generator=torch.Generator().manual_seed(0)), 8000)
    return path


def assert_refused(stderr: str, path: str) -> None:
    assert f"{path} needs an S4M or S4M-tiny mask network" in stderr
    assert BACKBONE in stderr
    assert "s4m-separate --model MODEL_DIR" in stderr  # what works instead


def test_it_exports_and_separates_files(model_dir, mixture, tmp_path, capsys):
    separator = load_exported(model_dir, savedir=str(tmp_path / "cache"))
    assert type(separator.mods.masknet).__module__ + ".MaskNet" == BACKBONE
    out = tmp_path / "out"
    assert separate_command.main([str(mixture), "--model", model_dir, "--out", str(out), "--quiet"]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["mix_s1.wav", "mix_s2.wav"]


@pytest.mark.parametrize("compile_step", [False, True], ids=["eager", "compiled"])
def test_the_stream_refuses_it(model_dir, mixture, tmp_path, capsys, compile_step):
    out = tmp_path / "out"
    argv = [str(mixture), "--model", model_dir, "--out", str(out), "--stream"] + ["--compile"] * compile_step
    assert separate_command.main(argv) == 2
    assert_refused(capsys.readouterr().err, "streaming")
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(UnsupportedBackbone):
        StreamingSeparator.from_folder(model_dir, savedir=str(tmp_path / "cache"))


def test_onnx_export_refuses_it(model_dir, tmp_path, capsys):
    out = tmp_path / "onnx"
    assert onnx_graphs.main([model_dir, str(out)]) == 2
    assert_refused(capsys.readouterr().err, "s4m-export-onnx")
    assert not Path(out).exists()


def test_compiling_refuses_it(model_dir, tmp_path, capsys):
    out = tmp_path / "compiled"
    assert compiled_packages.main([model_dir, str(out)]) == 2
    assert_refused(capsys.readouterr().err, "s4m-compile")
    assert not Path(out).exists()
