"""A model folder that ``s4m-export`` wrote before the package moved into rooms
(commit 6a73091: a tiny causal S4M-tiny, 1 unfolded pass of 16 channels, trained for
one epoch on the tests' tiny LibriMix) loads and separates as it did then.

``tests/fixtures/exported_6a73091_outputs.pt`` holds a 0.75 s mixture and what that
commit's ``LongAudioSeparator`` and ``StreamingSeparator`` made of it."""

import re
import warnings
from pathlib import Path

import pytest
import torch
from speechbrain.dataio.dataio import write_audio

from speechbrain_s4m.data.audio import read_audio
from speechbrain_s4m.inference import separate_command
from speechbrain_s4m.inference.long_audio import LongAudioSeparator
from speechbrain_s4m.inference.model_folder import load_exported
from speechbrain_s4m.inference.streaming import StreamingSeparator

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FOLDER = FIXTURES / "exported_6a73091"
RECORDED = torch.load(FIXTURES / "exported_6a73091_outputs.pt", weights_only=True)
TOLERANCE = 1e-5  # of the recorded peak: float32 rounding on another CPU


def assert_as_recorded(sources: torch.Tensor, recorded: torch.Tensor) -> None:
    assert sources.shape == recorded.shape
    assert (sources - recorded).abs().max() <= TOLERANCE * recorded.abs().max()


def test_it_names_only_paths_that_still_import_without_a_warning():
    names = re.findall(r"!new:([\w.]+)", (FOLDER / "hyperparams.yaml").read_text())
    assert "speechbrain_s4m.lobes.S4MMaskNet" in names
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for name in names:
            module, _, attribute = name.rpartition(".")
            assert hasattr(__import__(module, fromlist=[attribute]), attribute), name


def test_speechbrain_loads_it_and_separates_as_recorded(tmp_path):
    model = load_exported(str(FOLDER), savedir=str(tmp_path))
    with torch.no_grad():
        sources = model.separate_batch(RECORDED["mixture"][None])[0]
    assert_as_recorded(sources, RECORDED["offline"])


def test_long_audio_separates_as_recorded(tmp_path):
    separator = LongAudioSeparator.from_folder(str(FOLDER), savedir=str(tmp_path))
    assert_as_recorded(separator.separate_tensor(RECORDED["mixture"]), RECORDED["offline"])


def test_it_streams_as_recorded(tmp_path):
    stream = StreamingSeparator.from_folder(str(FOLDER), savedir=str(tmp_path))
    mix, step = RECORDED["mixture"], RECORDED["stream_chunk"]
    parts = [stream.process(mix[start : start + step]) for start in range(0, len(mix), step)]
    assert_as_recorded(torch.cat(parts + [stream.flush()]), RECORDED["stream"])


@pytest.mark.parametrize("stream", [False, True])
def test_s4m_separate_writes_what_was_recorded(tmp_path, stream):
    mix_path = tmp_path / "mix.wav"
    write_audio(str(mix_path), RECORDED["mixture"], 8000)
    mix = read_audio(str(mix_path))[0]  # what the file holds: 16-bit samples
    options = ["--stream", "--chunk-ms", "16"] if stream else []
    argv = [str(mix_path), "--model", str(FOLDER), "--out", str(tmp_path / "out"), "--no-normalize", "--quiet"]
    assert separate_command.main(argv + options) == 0
    written = torch.stack([read_audio(str(tmp_path / "out" / f"mix_s{k}.wav"))[0] for k in (1, 2)], dim=-1)
    reference = LongAudioSeparator.from_folder(str(FOLDER), savedir=str(tmp_path / "cache")).separate_tensor(mix)
    assert written.shape == reference.shape
    assert (written - reference).abs().max() <= 2e-4 * reference.abs().max() + 2 / 32768  # 16-bit files
