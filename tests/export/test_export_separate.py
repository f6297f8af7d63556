"""Export of a trained recipe run for SpeechBrain's separator, long-audio separation
and the s4m-separate command line. The model is trained by a tiny recipe run here."""

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.inference.separation import SepformerSeparation
from tiny_datasets import make_librimix
from tiny_runs import train_tiny

from speechbrain_s4m.export.speechbrain_folder import export_model
from speechbrain_s4m.inference.long_audio import LongAudioSeparator, separate_in_chunks
from speechbrain_s4m.inference.separate_command import main as separate_main
from speechbrain_s4m.metrics import si_snr

pytestmark = pytest.mark.slow  # trains a recipe (see tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    data = make_librimix(root / "data", with_noise=False)
    train_tiny(data, root / "run")
    return root


@pytest.fixture(scope="module")
def model_dir(trained):
    return export_model(str(trained / "run"), str(trained / "model"))


def test_export_writes_a_folder_speechbrain_loads(model_dir, trained, tmp_path):
    assert sorted(os.listdir(model_dir)) == [
        "README.md",
        "decoder.ckpt",
        "encoder.ckpt",
        "hyperparams.yaml",
        "masknet.ckpt",
    ]
    model = SepformerSeparation.from_hparams(source=model_dir, savedir=str(tmp_path / "cache"))
    mixture = sorted((trained / "data").rglob("mix_clean/*.wav"))[0]
    sources = model.separate_file(str(mixture))
    assert sources.shape == (1, sf.info(str(mixture)).frames, 2)
    assert torch.isfinite(sources).all()


def test_model_card_reports_the_test_results(model_dir, trained):
    card = Path(model_dir, "README.md").read_text()
    avg = [line for line in (trained / "run" / "test_results.csv").read_text().splitlines() if line.startswith("avg,")][
        0
    ].split(",")
    assert "s4m_tiny" in card and "8000 Hz" in card
    assert f"{float(avg[3]):.2f} dB" in card  # mean SI-SNR


def test_export_picks_the_best_validation_checkpoint(trained, tmp_path):
    import yaml

    checkpoints = sorted((trained / "run" / "save").glob("CKPT+*"))
    scores = {c: yaml.safe_load((c / "CKPT.yaml").read_text())["si-snr"] for c in checkpoints}
    best = min(scores, key=scores.get)
    out = export_model(str(trained / "run"), str(tmp_path / "m"))
    assert Path(out, "masknet.ckpt").read_bytes() == (best / "masknet.ckpt").read_bytes()
    other = max(scores, key=scores.get)
    export_model(str(trained / "run"), str(tmp_path / "m2"), checkpoint=str(other))
    assert Path(tmp_path / "m2" / "masknet.ckpt").read_bytes() == (other / "masknet.ckpt").read_bytes()


def test_export_never_overwrites_without_force(trained, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--force"):
        export_model(str(trained / "run"), str(out))
    export_model(str(trained / "run"), str(out), force=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "masknet.ckpt").exists()


def test_export_of_a_folder_that_is_not_a_recipe_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="hyperparams.yaml"):
        export_model(str(tmp_path), str(tmp_path / "model"))


class ShufflingOracle:
    """A separator that returns the true sources of each chunk, in a random speaker
    order and at a random gain per call (as a PIT-trained model may)."""

    def __init__(self, sources: torch.Tensor):
        self.sources = sources  # [spks, time]
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, mix: torch.Tensor) -> torch.Tensor:
        chunk = mix[0]
        full = self.sources.sum(0)
        start = next(
            s for s in range(full.shape[0] - chunk.shape[0] + 1) if torch.equal(full[s : s + chunk.shape[0]], chunk)
        )
        truth = self.sources[:, start : start + chunk.shape[0]].T  # [time, spks]
        order = torch.randperm(truth.shape[1], generator=self.generator)
        gains = 0.5 + torch.rand(truth.shape[1], generator=self.generator)
        return (truth[:, order] * gains)[None]


@pytest.mark.parametrize("length", [3000, 3999, 4321, 10000])
def test_chunks_keep_each_speaker_on_its_track(length):
    torch.manual_seed(1)
    t = torch.arange(length) / 8000
    sources = torch.stack(
        [
            torch.sin(2 * np.pi * 220 * t) * (1 + torch.sin(2 * np.pi * 3 * t)),
            0.5 * torch.randn(length),
        ]
    )
    estimate = separate_in_chunks(ShufflingOracle(sources), sources.sum(0), 1000, 250)
    scores = si_snr(estimate[None], sources.T[None])
    if scores.mean() < 0:  # the global order is arbitrary: the first chunk decides
        scores = si_snr(estimate.flip(-1)[None], sources.T[None])
    assert scores.min() > 30, scores


def test_long_audio_has_bounded_memory(tmp_path):
    # A full-width S4M-tiny (fewer passes, to keep the test short) on 2 minutes of
    # audio: separating it whole needs several GB, in 10 s chunks far less.
    script = f"""
import resource, sys, torch
sys.path.insert(0, {str(REPO)!r})
from speechbrain.inference.separation import SepformerSeparation
from speechbrain.lobes.models.dual_path import Decoder
from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder
from speechbrain_s4m.inference.long_audio import LongAudioSeparator
torch.set_num_threads(2)
modules = {{"encoder": WaveformEncoder(32), "masknet": S4MMaskNet(17, num_blocks=2, decoder_s4=False),
           "decoder": Decoder(17, 1, 32, stride=8, bias=False)}}
separator = LongAudioSeparator(SepformerSeparation(modules, {{"sample_rate": 8000, "num_spks": 2}}))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = separator.separate_tensor(torch.randn(120 * 8000))
assert out.shape == (120 * 8000, 2)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1e6)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    growth_gb = float(result.stdout.strip().splitlines()[-1])
    assert growth_gb < 1.0, f"peak memory grew by {growth_gb:.2f} GB"


def _write(path, signal, rate):
    sf.write(str(path), signal, rate, subtype="PCM_16")
    return path


@pytest.fixture()
def inputs(tmp_path, trained):
    folder = tmp_path / "in"
    folder.mkdir()
    mixtures = sorted((trained / "data").rglob("mix_clean/*.wav"))[:2]
    for i, mixture in enumerate(mixtures):
        data, rate = sf.read(str(mixture))
        _write(folder / f"good{i}.wav", data, rate)
    return folder


def test_cli_separates_files_and_folders(inputs, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert separate_main(["--model", model_dir, str(inputs), "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["good0_s1.wav", "good0_s2.wav", "good1_s1.wav", "good1_s2.wav"]
    data, rate = sf.read(str(out / "good0_s1.wav"))
    assert rate == 8000 and len(data) == sf.info(str(inputs / "good0.wav")).frames
    assert abs(np.abs(data).max() - 0.99) < 1e-3  # peak-normalised by default


class Terminal(io.StringIO):
    """Captured stderr that says it is a terminal, as an interactive shell's is."""

    def isatty(self):
        return True


@pytest.mark.parametrize("quiet, terminal", [(False, True), (True, True), (False, False)])
def test_cli_shows_progress_inside_one_file_only_on_a_terminal(
    inputs, model_dir, tmp_path, monkeypatch, quiet, terminal
):
    # One 2.5 s file in 1 s chunks: the bar counts seconds of audio, with the RTF.
    data, rate = sf.read(str(inputs / "good0.wav"))
    long_file = tmp_path / "long one.wav"
    _write(long_file, np.tile(data, 1 + int(2.5 * rate) // len(data))[: int(2.5 * rate)], rate)
    stderr = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    argv = ["--model", model_dir, str(long_file), "--out", str(tmp_path / "out"), "--chunk-seconds", "1"]
    assert separate_main(argv + ["--overlap-seconds", "0.25"] + (["--quiet"] if quiet else [])) == 0
    shown = stderr.getvalue()
    if terminal and not quiet:
        assert "long one.wav" in shown and "2.5/2.5 s audio" in shown and "RTF" in shown
    else:
        assert "s audio" not in shown and "RTF" not in shown


def test_cli_report_page_plays_from_its_folder(inputs, model_dir, tmp_path, capsys):
    from urllib.parse import unquote

    named = tmp_path / "named" / "mixture één 2.wav"  # a space and non-ASCII letters
    named.parent.mkdir()
    shutil.copy(inputs / "good0.wav", named)
    out = tmp_path / "out"
    argv = ["--model", model_dir, str(named), str(inputs / "good1.wav"), "--out", str(out), "--report"]
    assert separate_main(argv) == 0
    text = (out / "index.html").read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]+)"', text)
    assert text.count("<audio") == 2 * 3 and len(sources) == 2 * 4  # mixture, 2 sources, spectrograms
    assert all((out / unquote(src)).is_file() for src in sources) and "%20" in text
    assert "s4m_tiny" in text and "test SI-SNRi" in text  # the model card summary
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert separate_main(["--model", model_dir, str(named), "--out", str(out), "--report"]) == 2
    assert "--force" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing touched


def test_cli_never_overwrites_without_force(inputs, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    good = str(inputs / "good0.wav")
    assert separate_main(["--model", model_dir, good, "--out", str(out), "--no-normalize"]) == 0
    before = (out / "good0_s1.wav").read_bytes()
    assert separate_main(["--model", model_dir, good, "--out", str(out)]) == 1
    assert "already exists (use --force" in capsys.readouterr().err
    assert (out / "good0_s1.wav").read_bytes() == before
    assert separate_main(["--model", model_dir, good, "--out", str(out), "--force"]) == 0
    assert (out / "good0_s1.wav").read_bytes() != before  # normalised this time


def test_cli_resamples_and_downmixes(inputs, model_dir, tmp_path, capsys):
    import torchaudio

    data, rate = sf.read(str(inputs / "good0.wav"))
    upsampled = torchaudio.functional.resample(torch.tensor(data).float(), rate, 16000).numpy()
    stereo = _write(tmp_path / "stereo16k.wav", np.stack([upsampled, 0.5 * upsampled], -1), 16000)
    out = tmp_path / "out"
    assert separate_main(["--model", model_dir, str(stereo), "--out", str(out)]) == 0
    assert "2 channels, down-mixed to mono" in capsys.readouterr().err
    separated, out_rate = sf.read(str(out / "stereo16k_s1.wav"))
    assert out_rate == 8000 and abs(len(separated) - len(data)) <= 1


def test_cli_bad_inputs_get_one_clear_line_each(inputs, model_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notaudio.wav").write_text("this is not audio")
    _write(bad / "empty.wav", np.zeros(0), 8000)
    _write(bad / "short.wav", np.zeros(10), 8000)
    data, rate = sf.read(str(inputs / "good0.wav"))
    data[1000:1100] = np.nan
    sf.write(str(bad / "nan.wav"), data, rate, subtype="FLOAT")  # float WAV: NaN survives
    out = tmp_path / "out"
    status = separate_main(["--model", model_dir, str(bad), str(inputs / "good0.wav"), "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 1
    assert f"{bad / 'notaudio.wav'}: Could not read" in err
    assert f"{bad / 'empty.wav'}: the file is empty" in err
    assert f"{bad / 'short.wav'}: 10 samples at 8000 Hz is shorter than the encoder kernel" in err
    assert f"{bad / 'nan.wav'}: 100 of {len(data)} samples are not finite (NaN or Inf)" in err
    assert "4 of 5 input(s) failed" in err
    assert sorted(os.listdir(out)) == ["good0_s1.wav", "good0_s2.wav"]  # the rest still done


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_long_audio_separator_refuses_non_finite_audio(model_dir, bad_value):

    separator = LongAudioSeparator.from_folder(model_dir)
    mix = torch.zeros(8000)
    mix[10] = bad_value
    with pytest.raises(ValueError, match="1 of 8000 samples are not finite"):
        separator.separate_tensor(mix)


def test_cli_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "speechbrain_s4m.inference.separate_command", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0 and "model's sample rate" in " ".join(result.stdout.split())
