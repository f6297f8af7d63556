"""A causal S4M-tiny trained by the LibriMix recipe (hparams/s4m_tiny_causal.yaml),
exported with s4m-export, loaded offline by SpeechBrain and streamed by
StreamingSeparator.from_folder and ``s4m-separate --stream``."""

import json
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
from tiny_runs import REPO, train_tiny

from speechbrain_s4m.export.speechbrain_folder import export_model
from speechbrain_s4m.inference.separate_command import main as separate_main
from speechbrain_s4m.inference.streaming import StreamingSeparator

pytestmark = pytest.mark.slow  # trains a recipe (see tests/conftest.py)


@pytest.fixture(scope="module")
def causal_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal")
    data = make_librimix(root / "data", with_noise=False)
    train_tiny(data, root / "run", hparams="s4m_tiny_causal", epochs=1)
    return export_model(str(root / "run"), str(root / "model")), data


def _mixture(data):
    return sorted(Path(data).rglob("mix_clean/*.wav"))[0]


def _offline(model_dir, mix: torch.Tensor, tmp_path) -> torch.Tensor:
    model = SepformerSeparation.from_hparams(source=model_dir, savedir=str(tmp_path / "cache"))
    with torch.no_grad():
        return model.separate_batch(mix[None])[0]  # [time, spks]


def test_speechbrain_loads_the_causal_export_and_the_stream_equals_it(causal_model, tmp_path):
    model_dir, data = causal_model
    mix = torch.from_numpy(sf.read(str(_mixture(data)), dtype="float32")[0])
    offline = _offline(model_dir, mix, tmp_path)
    stream = StreamingSeparator.from_folder(model_dir)
    assert stream.sample_rate == 8000 and stream.latency_samples == 87
    streamed = torch.cat([stream.process(chunk) for chunk in mix.split(128)] + [stream.flush()])
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() / offline.abs().max() < 1e-4


def test_a_non_causal_export_is_refused_with_a_clear_error(tmp_path):
    data = make_librimix(tmp_path / "data", with_noise=False)
    train_tiny(data, tmp_path / "run", hparams="s4m_tiny", epochs=1)
    model_dir = export_model(str(tmp_path / "run"), str(tmp_path / "model"))
    with pytest.raises(ValueError, match="streaming needs a causal=True model"):
        StreamingSeparator.from_folder(model_dir)
    code = separate_main([str(_mixture(data)), "--model", model_dir, "--out", str(tmp_path / "o"), "--stream"])
    assert code == 2


def test_cli_stream_equals_offline_and_reports_latency_and_rtf(causal_model, tmp_path, capsys):
    model_dir, data = causal_model
    path = _mixture(data)
    mix, rate = sf.read(str(path), dtype="float32")
    out = tmp_path / "out"
    assert separate_main([str(path), "--model", model_dir, "--out", str(out), "--stream", "--chunk-ms", "16"]) == 0
    line = capsys.readouterr().out
    per_chunk = r"compute per chunk median \d+\.\d\d ms, p99 \d+\.\d\d ms"
    summary = rf"algorithmic latency 87 samples \(10\.9 ms\); {per_chunk}; real-time factor \d+\.\d+"
    assert re.search(summary, line), line
    offline = _offline(model_dir, torch.from_numpy(mix), tmp_path).numpy()
    offline = 0.99 * offline / np.abs(offline).max(axis=0)  # the CLI's peak normalisation
    for s in range(2):
        written, written_rate = sf.read(str(out / f"{path.stem}_s{s + 1}.wav"), dtype="float32")
        assert written_rate == rate and written.shape == (mix.shape[0],)
        assert np.abs(written - offline[:, s]).max() < 1e-4  # 16-bit rounding: 1.5e-5
    assert sorted(os.listdir(out)) == [f"{path.stem}_s1.wav", f"{path.stem}_s2.wav"]  # no temporary files left

    # Every guarantee of the offline CLI: no overwrite without --force, one line per failed file.
    bad = tmp_path / "bad.wav"
    noisy = mix.copy()
    noisy[500] = np.nan
    sf.write(str(bad), noisy, rate, subtype="FLOAT")
    other_rate = tmp_path / "other_rate.wav"
    sf.write(str(other_rate), mix, 16000)
    code = separate_main([str(path), str(bad), str(other_rate), "--model", model_dir, "--out", str(out), "--stream"])
    err = capsys.readouterr().err
    assert code == 1
    assert "already exists (use --force" in err
    assert re.search(r"bad\.wav: 1 non-finite \(NaN or Inf\) samples in the 128 from 0\.05 s on", err), err
    assert "other_rate.wav: 16000 Hz; --stream needs audio at the model's rate (8000 Hz)" in err
    assert not any(name.startswith(("bad_", "other_rate_")) for name in os.listdir(out))


@pytest.fixture(scope="module")
def compiled_folder(causal_model, tmp_path_factory):
    """``s4m-compile`` of the trained causal export: the offline separator and the 8 and
    16 ms stream steps (about two minutes on 2 cores)."""
    from speechbrain_s4m.export.compiled_packages import main as compile_main

    model_dir, _ = causal_model
    out = tmp_path_factory.mktemp("compiled") / "model"
    assert compile_main([model_dir, str(out), "--threads", "2"]) == 0
    return str(out)


def _written(folder: Path, stem: str):
    return np.stack([sf.read(str(folder / f"{stem}_s{s + 1}.wav"), dtype="float32")[0] for s in range(2)], 1)


def test_a_compiled_folder_separates_files_and_streams_as_the_model_does(
    causal_model, compiled_folder, tmp_path, capsys
):
    """s4m-separate --model COMPILED: files in chunks (a short one in one pass, a long
    one in overlapping chunks) and streams at 16 and 8 ms give the eager model's output."""
    model_dir, data = causal_model
    metadata = json.load(open(os.path.join(compiled_folder, "compiled_model.json")))
    assert metadata["built_for"]["torch"] == torch.__version__ and metadata["built_for"]["threads"] == 2
    assert metadata["stream_steps"] == [8.0, 16.0]
    assert sorted(p for p in os.listdir(compiled_folder)) == [
        "compiled_model.json",
        "separator.pt2",
        "stream_step_16ms.pt2",
        "stream_step_8ms.pt2",
    ]
    path = _mixture(data)
    mix, rate = sf.read(str(path), dtype="float32")
    long = tmp_path / "long.wav"
    sf.write(str(long), np.tile(mix, 3), rate, subtype="FLOAT")
    options = ["--chunk-seconds", "2", "--overlap-seconds", "0.5"]  # the long file in 4 chunks
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    assert separate_main([str(path), str(long), "--model", model_dir, "--out", str(eager), *options]) == 0
    assert separate_main([str(path), str(long), "--model", compiled_folder, "--out", str(compiled), *options]) == 0
    assert re.search(r"loaded .* in \d+\.\d s; 2 thread\(s\)", capsys.readouterr().err)
    for stem in (path.stem, "long"):
        assert np.abs(_written(compiled, stem) - _written(eager, stem)).max() < 1e-4  # 16-bit rounding: 1.5e-5

    offline = _offline(model_dir, torch.from_numpy(mix), tmp_path).numpy()
    offline = 0.99 * offline / np.abs(offline).max(axis=0)  # the CLI's peak normalisation
    for chunk_ms, latency in (("16", r"151 samples \(18\.9 ms\)"), ("8", r"87 samples \(10\.9 ms\)")):
        out = tmp_path / f"stream_{chunk_ms}"
        command = [str(path), "--model", compiled_folder, "--out", str(out), "--stream", "--chunk-ms", chunk_ms]
        assert separate_main(command) == 0
        line = capsys.readouterr().out
        summary = rf"algorithmic latency {latency}; compute per chunk median \d+\.\d\d ms, p99 \d+\.\d\d ms; "
        assert re.search(summary + r"real-time factor \d+\.\d+", line), line
        assert np.abs(_written(out, path.stem) - offline).max() < 1e-4
    # every guarantee of the CLI: no overwrite without --force, one line per failed file
    bad = tmp_path / "bad.wav"
    noisy = mix.copy()
    noisy[500] = np.nan
    sf.write(str(bad), noisy, rate, subtype="FLOAT")
    assert separate_main([str(path), str(bad), "--model", compiled_folder, "--out", str(compiled)]) == 1
    err = capsys.readouterr().err
    assert "already exists (use --force" in err and "bad.wav: 1 of" in err and "not finite" in err
    assert separate_main([str(path), "--model", compiled_folder, "--out", str(compiled), "--onnx"]) == 2
    assert "already compiled for the CPU" in capsys.readouterr().err


def test_cli_stream_compile_builds_the_step_at_start_and_equals_offline(causal_model, tmp_path, capsys):
    """s4m-separate --stream --compile: the 16 ms step compiled into a temporary folder
    (what s4m-compile --no-offline builds once), then streamed."""
    model_dir, data = causal_model
    path = _mixture(data)
    mix, _ = sf.read(str(path), dtype="float32")
    out = tmp_path / "out"
    command = [str(path), "--model", model_dir, "--out", str(out), "--stream", "--compile", "--chunk-ms", "16"]
    assert separate_main(command) == 0
    captured = capsys.readouterr()
    assert re.search(r"compiled the stream step of 128 samples in \d+ s \(s4m-compile ", captured.err), captured.err
    assert re.search(r"algorithmic latency 151 samples \(18\.9 ms\); compute per chunk", captured.out)
    offline = _offline(model_dir, torch.from_numpy(mix), tmp_path).numpy()
    offline = 0.99 * offline / np.abs(offline).max(axis=0)  # the CLI's peak normalisation
    assert np.abs(_written(out, path.stem) - offline).max() < 1e-4  # 16-bit rounding: 1.5e-5
    assert separate_main([str(path), "--model", model_dir, "--out", str(tmp_path / "o2"), "--compile"]) == 2
    assert "use it with --stream alone" in capsys.readouterr().err


def test_a_compiled_folder_runs_without_a_compiler(causal_model, compiled_folder, tmp_path):
    """A process whose PATH holds no C++ compiler loads the packages and streams a file."""
    _, data = causal_model
    bare = tmp_path / "bin"
    bare.mkdir()
    command = [
        sys.executable,
        "-m",
        "speechbrain_s4m.inference.separate_command",
        str(_mixture(data)),
        "--model",
        compiled_folder,
    ]
    command += ["--out", str(tmp_path / "out"), "--stream", "--chunk-ms", "16"]
    env = {**os.environ, "PATH": str(bare), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "p99" in result.stdout and len(os.listdir(tmp_path / "out")) == 2


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("torch", "2.0.0", r"compiled for torch 2\.0\.0; this machine has torch "),
        ("cpu_capability", "NO AVX", r"compiled for cpu_capability NO AVX; this machine has cpu_capability "),
    ],
)
def test_a_folder_compiled_elsewhere_is_refused_with_how_to_compile_again(
    causal_model, compiled_folder, tmp_path, capsys, field, value, message
):
    from speechbrain_s4m.inference.compiled_runtime import CompiledSeparator, CompiledStreamingSeparator

    model_dir, data = causal_model
    moved = tmp_path / "moved"
    shutil.copytree(compiled_folder, moved)
    metadata = json.load(open(moved / "compiled_model.json"))
    metadata["built_for"][field] = value
    json.dump(metadata, open(moved / "compiled_model.json", "w"))
    again = re.escape(f"compile it again here with s4m-compile {os.path.abspath(model_dir)} {moved} --force")
    for runner in (CompiledSeparator, CompiledStreamingSeparator):
        with pytest.raises(ValueError, match=message + ".*" + again):
            runner(str(moved))
    for stream in ([], ["--stream"]):
        command = [str(_mixture(data)), "--model", str(moved), "--out", str(tmp_path / "out"), *stream]
        assert separate_main(command) == 2
        assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_s4m_compile_keeps_what_exists_and_refuses_what_differs(
    causal_model, compiled_folder, tmp_path, capsys, monkeypatch
):
    """No overwrite without --force; a package that differs from PyTorch is refused
    (exit 1) and nothing is written; a folder that is not a model is a usage error."""
    from speechbrain_s4m.export import graph_folder
    from speechbrain_s4m.export.compiled_packages import main as compile_main

    model_dir, _ = causal_model
    before = {name: os.path.getmtime(os.path.join(compiled_folder, name)) for name in os.listdir(compiled_folder)}
    assert compile_main([model_dir, compiled_folder]) == 2
    assert "pass --force to replace them" in capsys.readouterr().err
    assert compile_main([str(tmp_path), str(tmp_path / "out")]) == 2
    assert "not an s4m-export model folder" in capsys.readouterr().err
    assert {name: os.path.getmtime(os.path.join(compiled_folder, name)) for name in before} == before

    monkeypatch.setattr(graph_folder, "PEAK_TOLERANCE", -1.0)  # no package can pass
    out = tmp_path / "refused"
    assert compile_main([model_dir, str(out), "--no-offline", "--steps-ms", "16"]) == 1
    assert "stream_step_16ms.pt2 differs from PyTorch: largest difference" in capsys.readouterr().err
    assert not out.exists() and [p for p in os.listdir(tmp_path) if p.startswith(".compile-")] == []


def test_stream_memory_does_not_grow_with_the_recording(causal_model, tmp_path):
    """Two subprocesses stream 1 and 11 minutes of audio (1 s chunks) through the same
    model: their resident memory at the end differs by less than 50 MiB."""
    model_dir, data = causal_model
    speech, rate = sf.read(str(_mixture(data)), dtype="float32")
    ends = []
    for minutes in (1, 11):
        long = tmp_path / f"long_{minutes}.wav"
        sf.write(str(long), np.tile(speech, int(np.ceil(minutes * 60 * rate / speech.shape[0]))), rate)
        command = [sys.executable, "-m", "speechbrain_s4m.inference.separate_command", str(long), "--model", model_dir]
        command += ["--out", str(tmp_path / f"out_{minutes}"), "--stream", "--chunk-ms", "1000"]
        env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        memory = [float(m) for m in result.stdout.rsplit(": ", 1)[1].split(",")]
        ends.append(memory[-1])
    assert abs(ends[1] - ends[0]) < 50, ends


LIBRISPEECH_8K = REPO.parent / "shared" / "data" / "mini-librispeech-8k"


def _real_speech_mixture(seconds: float):
    """Two mini-librispeech speakers (their utterances concatenated to ``seconds``),
    the second at -2 dB: the sources ``[time, 2]`` and their sum."""
    if not LIBRISPEECH_8K.is_dir():
        pytest.skip(f"real-speech data not found at {LIBRISPEECH_8K} (mini-librispeech-8k)")
    speakers = sorted(p for p in (LIBRISPEECH_8K / "train-clean-5").iterdir() if p.is_dir())[:2]
    length = int(seconds * 8000)
    sources = []
    for speaker in speakers:
        signal = np.zeros(0, np.float32)
        for flac in sorted(speaker.rglob("*.flac")):
            signal = np.concatenate([signal, sf.read(str(flac), dtype="float32")[0]])
            if signal.shape[0] >= length:
                break
        sources.append(signal[:length] / np.abs(signal[:length]).std())
    sources = np.stack([sources[0], 10 ** (-2 / 20) * sources[1]], 1)
    return sources, (0.1 * sources.sum(1)).astype(np.float32)


def test_onnx_export_of_the_trained_model_matches_pytorch_on_real_speech(causal_model, tmp_path, capsys):
    """s4m-export-onnx on the trained causal export; on real-speech mixtures of 1 s,
    7.3 s and 60 s the onnxruntime separations (no torch involved) of both graphs,
    separator.onnx and stream_step.onnx, equal SpeechBrain's offline separation within
    1e-4 of the peak and 0.01 dB SI-SNR against the sources."""
    from speechbrain_s4m.export.onnx_graphs import main as export_onnx_main
    from speechbrain_s4m.inference.onnx_runtime import OnnxSeparator, OnnxStreamingSeparator
    from speechbrain_s4m.metrics import si_snr

    model_dir, _ = causal_model
    graphs = tmp_path / "onnx"
    assert export_onnx_main([model_dir, str(graphs)]) == 0
    printed = capsys.readouterr().out
    assert "separator.onnx matches PyTorch within" in printed and "stream_step.onnx matches PyTorch" in printed
    assert export_onnx_main([model_dir, str(graphs)]) == 2  # no overwrite without --force
    assert "pass --force" in capsys.readouterr().err
    # s4m-separate --onnx: separator.onnx in the chunks of the PyTorch path, or with --stream
    # the stream graph, with the CLI's guarantees
    model_dir_mix = _mixture(causal_model[1])
    mix, rate = sf.read(str(model_dir_mix), dtype="float32")
    out = {name: tmp_path / name for name in ("torch", "onnx", "stream")}
    assert separate_main([str(model_dir_mix), "--model", model_dir, "--out", str(out["torch"])]) == 0
    assert separate_main([str(model_dir_mix), "--model", str(graphs), "--out", str(out["onnx"]), "--onnx"]) == 0
    command = [str(model_dir_mix), "--model", str(graphs), "--out", str(out["stream"]), "--onnx", "--stream"]
    assert separate_main(command) == 0
    assert re.search(r"algorithmic latency 151 samples \(18\.9 ms\); compute per chunk", capsys.readouterr().out)
    offline = _offline(model_dir, torch.from_numpy(mix), tmp_path).numpy()
    offline = 0.99 * offline / np.abs(offline).max(axis=0)
    for s in range(2):
        name = f"{model_dir_mix.stem}_s{s + 1}.wav"
        written = {key: sf.read(str(folder / name), dtype="float32")[0] for key, folder in out.items()}
        assert np.abs(written["onnx"] - written["torch"]).max() < 1e-4
        assert np.abs(written["stream"] - offline[:, s]).max() < 1e-4
    assert separate_main(command) == 1
    assert "already exists (use --force" in capsys.readouterr().err
    assert separate_main([str(model_dir_mix), "--model", model_dir, "--out", str(out["onnx"]), "--onnx"]) == 2
    assert "not an s4m-export-onnx folder" in capsys.readouterr().err

    separator = OnnxSeparator(str(graphs), threads=2)
    stream = OnnxStreamingSeparator(str(graphs), threads=2)
    for seconds in (1.0, 7.3, 60.0):
        sources, mix = _real_speech_mixture(seconds)
        offline = _offline(model_dir, torch.from_numpy(mix), tmp_path).numpy()
        separated = {
            "separator.onnx": separator.separate(mix),
            "stream_step.onnx": np.concatenate([stream.process(mix), stream.flush()]),
        }
        reference = torch.from_numpy(sources)[None]
        for graph, onnx in separated.items():
            assert onnx.shape == offline.shape == sources.shape
            assert np.abs(onnx - offline).max() < 1e-4 * np.abs(offline).max(), (graph, seconds)
            gaps = si_snr(torch.from_numpy(onnx)[None], reference) - si_snr(torch.from_numpy(offline)[None], reference)
            assert gaps.abs().max() < 0.01, (graph, seconds, gaps)
