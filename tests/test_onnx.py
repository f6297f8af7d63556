"""ONNX export of a causal model's stream step (s4m-export-onnx) and its numpy /
onnxruntime runner, and the real-arithmetic chunk scan of the S4 layers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from speechbrain.lobes.models.dual_path import Decoder

from speechbrain_s4m import onnx_export
from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder
from speechbrain_s4m.lobes.s4 import S4, ScannedS4
from speechbrain_s4m.lobes.s4_kernel import DiagonalKernel, DPLRKernel
from speechbrain_s4m.lobes.s4_recurrence import ChunkScan, SSMRecurrence, real_system
from speechbrain_s4m.onnx_export import export_stream_step
from speechbrain_s4m.onnx_runtime import OnnxSeparator, OnnxStreamingSeparator
from speechbrain_s4m.separator import EncoderMaskerDecoder
from speechbrain_s4m.streaming import StreamingSeparator


# ------------------------------------------------------------------ the chunk scan
@pytest.mark.parametrize("kernel", [DPLRKernel, DiagonalKernel])
@pytest.mark.parametrize("length", [1, 5, 63, 64, 65, 300, 1000])
def test_chunk_scan_equals_the_recurrence(kernel, length):
    torch.manual_seed(length)
    system = kernel(d_model=4, d_state=16, directions=1).discretize()
    u = torch.randn(3, 4, length)
    expected, _ = SSMRecurrence(system)(u, torch.zeros(3, 4, 16))
    got = ChunkScan(real_system(system), chunk=16)(u)
    assert got.shape == u.shape
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("mode", ["dplr", "diag"])
def test_scanned_layer_equals_the_fft_layer(bidirectional, mode):
    torch.manual_seed(0)
    layer = S4(d_model=6, d_state=16, bidirectional=bidirectional, mode=mode).eval()
    x = torch.randn(2, 6, 777)
    with torch.no_grad():
        expected, got = layer(x), ScannedS4(layer)(x)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_the_scan_covers_long_inputs_and_says_how_long():
    system = DiagonalKernel(d_model=2, d_state=8, directions=1).discretize()
    scan = ChunkScan(real_system(system), chunk=4, steps=3)
    assert scan.max_frames == 32
    u = torch.randn(1, 2, 32)
    expected, _ = SSMRecurrence(system)(u, torch.zeros(1, 2, 8))
    assert torch.allclose(scan(u), expected, atol=1e-5)


def test_real_system_names_a_missing_direction():
    system = DPLRKernel(d_model=2, d_state=8, directions=1).discretize()
    with pytest.raises(ValueError, match="1 direction"):
        real_system(system, direction=1)


# ------------------------------------------------------- the stream step, exported
def _random_stream(num_blocks=2, hidden=32):
    torch.manual_seed(1)
    lobes = (
        WaveformEncoder(32),
        S4MMaskNet(17, hidden_channels=hidden, num_blocks=num_blocks, decoder_s4=True, causal=True),
        Decoder(17, 1, 32, stride=8, bias=False),
    )
    for lobe in lobes:
        lobe.eval()
    return lobes, StreamingSeparator(*lobes, sample_rate=8000)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    lobes, stream = _random_stream()
    out = tmp_path_factory.mktemp("onnx") / "graphs"
    figures = export_stream_step(stream, str(out))
    return lobes, stream, str(out), figures


@pytest.mark.slow
def test_export_writes_the_graph_and_its_metadata(exported):
    _, stream, out, figures = exported
    assert sorted(os.listdir(out)) == ["onnx_model.json", "stream_step.onnx"]
    metadata = json.load(open(os.path.join(out, "onnx_model.json")))
    step = metadata["stream_step"]
    assert metadata["sample_rate"] == 8000 and metadata["num_spks"] == 2
    assert step["hop_samples"] == 128 and step["window_samples"] == 128 + 32 - 8  # 16 ms: 2 blocks
    assert stream.latency_samples == 87  # one block
    assert step["latency_samples"] == (16 - 1) * 8 + 32 - 1  # a step's window of 16 frames
    assert step["state"][0] == {"name": "state.decoder_tail", "shape": [2, 24]}
    assert figures["max_difference_over_peak"] < 1e-4 and figures["min_si_snr_db"] > 80
    import onnx

    graph = onnx.load(os.path.join(out, "stream_step.onnx"))
    complex_types = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
    assert not any(v.type.tensor_type.elem_type in complex_types for v in graph.graph.value_info)
    assert not {node.op_type for node in graph.graph.node} & {"DFT", "STFT"}


@pytest.mark.slow
@pytest.mark.parametrize("length", [32, 33, 100, 1000, 8000, 12345])
def test_onnx_separation_equals_the_offline_causal_forward(exported, length):
    lobes, _, out, _ = exported
    mix = torch.randn(length)
    with torch.no_grad():
        offline = EncoderMaskerDecoder(*lobes)(mix[None])[0].numpy()
    got = OnnxSeparator(out).separate(mix.numpy())
    assert got.shape == offline.shape
    assert np.abs(got - offline).max() <= 1e-4 * np.abs(offline).max()


@pytest.mark.slow
def test_onnx_stream_reproduces_the_pytorch_stream_chunk_by_chunk(exported):
    _, stream, out, _ = exported
    runner = OnnxStreamingSeparator(out)
    mix = np.random.default_rng(0).standard_normal(3000).astype(np.float32)
    stream.reset()
    expected, got = [], []
    for chunk in np.split(mix, [100, 228, 1500, 1501]):
        expected.append(stream.process(torch.from_numpy(chunk)).numpy())
        got.append(runner.process(chunk))
        # The graph emits whole steps of 2 blocks, the PyTorch stream every block: what
        # both have emitted so far is equal.
        both = min(sum(map(len, expected)), sum(map(len, got)))
        assert 0 < both or len(got) < 2
        assert np.abs(np.concatenate(got)[:both] - np.concatenate(expected)[:both]).max(initial=0) < 1e-4
    expected, got = np.concatenate(expected + [stream.flush().numpy()]), np.concatenate(got + [runner.flush()])
    assert got.shape == expected.shape == (3000, 2)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.slow
def test_runner_refuses_bad_input_and_continues(exported):
    _, _, out, _ = exported
    runner = OnnxStreamingSeparator(out)
    with pytest.raises(ValueError, match=r"shape \[time\]"):
        runner.process(np.zeros((2, 100), np.float32))
    bad = np.zeros(500, np.float32)
    bad[[3, 7]] = [np.nan, np.inf]
    with pytest.raises(ValueError, match="chunk 1 .* holds 2 non-finite"):
        runner.process(bad)
    good = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    continued = np.concatenate([runner.process(good), runner.flush()])  # the refused chunks left no trace
    assert np.allclose(continued, OnnxSeparator(out).separate(good), atol=1e-6)
    with pytest.raises(ValueError, match="the mixture holds 100 non-finite"):
        OnnxSeparator(out).separate(np.array([0.0, np.nan] * 100, np.float32))
    with pytest.raises(FileNotFoundError, match="not an s4m-export-onnx folder"):
        OnnxSeparator(os.path.dirname(out))


@pytest.mark.slow
def test_the_runner_imports_without_torch(exported, tmp_path):
    _, _, out, _ = exported
    script = (
        "import sys; sys.modules['torch'] = None\n"  # importing torch now fails
        "import numpy as np\n"
        "from speechbrain_s4m.onnx_runtime import OnnxSeparator\n"
        f"sources = OnnxSeparator({out!r}).separate(np.random.default_rng(0).standard_normal(4000))\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(sources.shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(4000, 2)"


@pytest.mark.slow
def test_a_failing_parity_check_writes_nothing(tmp_path, monkeypatch):
    _, stream = _random_stream(num_blocks=1, hidden=16)
    monkeypatch.setattr(onnx_export, "PEAK_TOLERANCE", -1.0)  # no graph can pass
    out = tmp_path / "graphs"
    with pytest.raises(ValueError, match="differs from PyTorch: largest difference"):
        export_stream_step(stream, str(out))
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".onnx-export-")] == []


def test_cli_refuses_a_folder_that_is_not_a_model(tmp_path, capsys):
    assert onnx_export.main([str(tmp_path), str(tmp_path / "out")]) == 2
    assert "not an s4m-export model folder" in capsys.readouterr().err


@pytest.mark.slow
def test_the_onnx_step_benchmark_times_both_runtimes():
    from speechbrain_s4m.benchmark.onnx_streaming import compare_step, table

    threads = torch.get_num_threads()  # the test process's own: its pool is left as it is
    row = compare_step("S4M-tiny causal", 16, 5, threads, overrides={"num_blocks": 1, "hidden_channels": 16})
    assert row["step_ms"] == 16 and row["parity"] < 1e-4
    assert row["onnx_median_ms"] > 0 and row["torch_median_ms"] > 0
    assert "| 16 ms |" in table("S4M-tiny causal", [row], 1)
