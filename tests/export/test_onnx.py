"""ONNX export (s4m-export-onnx) of S4M models, offline (separator.onnx) and, for causal
ones, as a stream step (stream_step.onnx); their numpy / onnxruntime runners; and the
real-arithmetic chunk scan of the S4 layers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from speechbrain.lobes.models.dual_path import Decoder

from speechbrain_s4m.export import graph_folder, onnx_graphs
from speechbrain_s4m.export.onnx_graphs import SeparatorGraph, export_graphs, export_stream_step
from speechbrain_s4m.inference.model_folder import UnsupportedBackbone
from speechbrain_s4m.inference.onnx_runtime import OnnxSeparator, OnnxStreamingSeparator
from speechbrain_s4m.inference.streaming import StreamingSeparator
from speechbrain_s4m.lobes import S4MMaskNet, WaveformEncoder
from speechbrain_s4m.lobes.encoder_masker_decoder import EncoderMaskerDecoder
from speechbrain_s4m.lobes.s4 import S4, ScannedS4
from speechbrain_s4m.lobes.s4_kernel import DiagonalKernel, DPLRKernel
from speechbrain_s4m.lobes.s4_recurrence import ChunkScan, SSMRecurrence, real_system


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


# ------------------------------------------------------------- the exported graphs
def _random_lobes(num_blocks=2, hidden=16, causal=True, decoder_s4=True, num_scales=4):
    torch.manual_seed(1)
    masknet = S4MMaskNet(
        17, hidden_channels=hidden, num_blocks=num_blocks, num_scales=num_scales, decoder_s4=decoder_s4, causal=causal
    )
    lobes = (
        WaveformEncoder(32),
        masknet,
        Decoder(17, 1, 32, stride=8, bias=False),
    )
    for lobe in lobes:
        lobe.eval()
    return lobes


def _random_stream(num_blocks=2, hidden=16, num_scales=4):
    lobes = _random_lobes(num_blocks, hidden, num_scales=num_scales)
    return lobes, StreamingSeparator(*lobes, sample_rate=8000)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Both graphs of a causal S4M (decoder S4 layers), with one unfolded pass and three
    scales (blocks of 4 frames) to keep the export short; the trained recipe model of
    test_streaming_recipe has two passes and four scales."""
    lobes, stream = _random_stream(num_blocks=1, num_scales=3)
    out = tmp_path_factory.mktemp("onnx") / "graphs"
    figures = export_graphs(EncoderMaskerDecoder(*lobes), 8000, str(out))
    return lobes, stream, str(out), figures


def _assert_real_valued(path):
    import onnx

    graph = onnx.load(path)
    complex_types = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
    assert not any(v.type.tensor_type.elem_type in complex_types for v in graph.graph.value_info)
    assert not {node.op_type for node in graph.graph.node} & {"DFT", "STFT"}
    return graph


@pytest.mark.slow
def test_export_writes_both_graphs_and_their_metadata(exported):
    _, stream, out, figures = exported
    assert sorted(os.listdir(out)) == ["onnx_model.json", "separator.onnx", "stream_step.onnx"]
    metadata = json.load(open(os.path.join(out, "onnx_model.json")))
    assert metadata["sample_rate"] == 8000 and metadata["num_spks"] == 2 and metadata["opset"] == 18
    step = metadata["stream_step"]
    assert step["hop_samples"] == 128 and step["window_samples"] == 128 + 32 - 8  # 16 ms: 4 blocks
    assert stream.latency_samples == (4 - 1) * 8 + 32 - 1  # one block of 4 frames
    assert step["latency_samples"] == (16 - 1) * 8 + 32 - 1  # a step's window of 16 frames
    assert step["state"][0] == {"name": "state.decoder_tail", "shape": [2, 24]}
    separator = metadata["separator"]
    assert separator["inputs"] == ["mixture", "signal_frames"] and separator["block_frames"] == 4
    assert separator["max_frames"] == 64 * 2**16  # S4M: a decoder S4 layer at the finest scale
    for graph in ("separator", "stream_step"):
        assert metadata[graph]["parity"] == figures[graph]
        assert figures[graph]["max_difference_over_peak"] < 1e-4 and figures[graph]["min_si_snr_db"] > 80
    _assert_real_valued(os.path.join(out, "stream_step.onnx"))
    graph = _assert_real_valued(os.path.join(out, "separator.onnx"))
    mixture = graph.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in mixture] == [True, True]  # dynamic batch and time


@pytest.mark.slow
@pytest.mark.parametrize("length", [32, 33, 100, 1000, 8000, 12345])
def test_onnx_separation_equals_the_offline_forward(exported, length):
    """separator.onnx for any length (padded to whole blocks by its runner), and the
    stream graph over the whole signal, equal PyTorch's offline causal forward."""
    lobes, _, out, _ = exported
    mix = torch.randn(length)
    with torch.no_grad():
        offline = EncoderMaskerDecoder(*lobes)(mix[None])[0].numpy()
    stream = OnnxStreamingSeparator(out)
    separated = {
        "separator.onnx": OnnxSeparator(out).separate(mix.numpy()),
        "stream_step.onnx": np.concatenate([stream.process(mix.numpy()), stream.flush()]),
    }
    for graph, got in separated.items():
        assert got.shape == offline.shape, graph
        assert np.abs(got - offline).max() <= 1e-4 * np.abs(offline).max(), graph


@pytest.mark.slow
def test_the_separator_graph_takes_any_batch(exported):
    lobes, _, out, _ = exported
    mix = torch.randn(3, 4321)
    with torch.no_grad():
        offline = EncoderMaskerDecoder(*lobes)(mix).numpy()
    got = OnnxSeparator(out).separate_batch(mix.numpy())
    assert got.shape == offline.shape == (3, 4321, 2)
    assert np.abs(got - offline).max() <= 1e-4 * np.abs(offline).max()


@pytest.mark.slow
def test_a_non_causal_model_exports_the_separator_alone(tmp_path):
    lobes = _random_lobes(num_blocks=1, hidden=8, causal=False, decoder_s4=False, num_scales=2)  # S4M-tiny
    model = EncoderMaskerDecoder(*lobes)
    out = tmp_path / "graphs"
    figures = export_graphs(model, 8000, str(out))
    assert sorted(figures) == ["separator"] and figures["separator"]["min_si_snr_db"] > 80
    assert sorted(os.listdir(out)) == ["onnx_model.json", "separator.onnx"]
    assert json.load(open(out / "onnx_model.json"))["separator"]["max_frames"] == 2 * 64 * 2**16  # S4 at 1/2
    mix = torch.randn(2, 5000)
    with torch.no_grad():
        offline = model(mix).numpy()
    assert np.abs(OnnxSeparator(str(out)).separate_batch(mix.numpy()) - offline).max() < 1e-4 * np.abs(offline).max()
    with pytest.raises(ValueError, match="stream_step.onnx is exported for causal models only"):
        OnnxStreamingSeparator(str(out))


class _GroupNorms(torch.nn.Module):
    """gLN (one group) and a norm of four groups, as the mask network uses them."""

    def __init__(self, channels):
        super().__init__()
        self.gln = torch.nn.GroupNorm(1, channels, eps=1e-8)
        self.grouped = torch.nn.GroupNorm(4, channels, eps=1e-8)
        for p in self.parameters():
            torch.nn.init.normal_(p)

    def forward(self, x):
        return torch.stack([self.gln(x), self.grouped(x)])


def test_group_norms_export_as_exactly_as_pytorch_computes_them_over_a_minute(tmp_path):
    # One float32 sum over C * L values (torch.onnx's own InstanceNormalization) drifts
    # by about 1e-4 of the peak under onnxruntime at these sizes; PyTorch by about 1e-7.
    import onnx
    import onnxruntime as ort

    model, x = _GroupNorms(64).eval(), torch.randn(2, 64, 60000) * 0.1 + 1.0
    path = str(tmp_path / "norms.onnx")
    with torch.no_grad():
        onnx_graphs.export_program(
            model, (x[..., :100],), path, dynamic_shapes=({0: torch.export.Dim("batch"), 2: torch.export.Dim("time")},)
        )
        expected = model.double()(x.double()).numpy()
    assert "InstanceNormalization" not in {node.op_type for node in onnx.load(path).graph.node}
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 2e-6 * np.abs(expected).max()


def test_the_separator_graph_names_the_mask_networks_it_exports():
    encoder, _, decoder = _random_lobes(num_blocks=1, hidden=8)
    with pytest.raises(
        UnsupportedBackbone, match=r"s4m-export-onnx needs an S4M .* is torch.nn.modules.linear.Identity"
    ):
        SeparatorGraph(EncoderMaskerDecoder(encoder, torch.nn.Identity(), decoder))


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
        # The graph emits whole steps of 4 blocks, the PyTorch stream every block: what
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
    separator = OnnxSeparator(out)
    with pytest.raises(ValueError, match="the mixture holds 100 non-finite"):
        separator.separate(np.array([0.0, np.nan] * 100, np.float32))
    with pytest.raises(ValueError, match=r"shape \[batch, time\], got shape \(100,\)"):
        separator.separate_batch(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match=r"a mixture of 31 samples; expected \[batch, time\] with 32 <= time"):
        separator.separate(np.zeros(31, np.float32))
    with pytest.raises(FileNotFoundError, match="not an s4m-export-onnx folder"):
        OnnxSeparator(os.path.dirname(out))


@pytest.mark.slow
def test_the_runner_imports_without_torch(exported, tmp_path):
    _, _, out, _ = exported
    script = (
        "import sys; sys.modules['torch'] = None\n"  # importing torch now fails
        "import numpy as np\n"
        "from speechbrain_s4m.inference.onnx_runtime import OnnxSeparator, OnnxStreamingSeparator\n"
        f"sources = OnnxSeparator({out!r}).separate(np.random.default_rng(0).standard_normal(4000))\n"
        f"stream = OnnxStreamingSeparator({out!r})\n"
        "assert stream.process(np.zeros(4000)).shape[1] == stream.flush().shape[1] == 2\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(sources.shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(4000, 2)"


@pytest.mark.slow
def test_a_failing_parity_check_writes_nothing(tmp_path, monkeypatch):
    _, stream = _random_stream(num_blocks=1, hidden=16)
    monkeypatch.setattr(graph_folder, "PEAK_TOLERANCE", -1.0)  # no graph can pass
    out = tmp_path / "graphs"
    with pytest.raises(ValueError, match="differs from PyTorch: largest difference"):
        export_stream_step(stream, str(out))
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".onnx-export-")] == []


def test_cli_refuses_a_folder_that_is_not_a_model(tmp_path, capsys):
    assert onnx_graphs.main([str(tmp_path), str(tmp_path / "out")]) == 2
    assert "not an s4m-export model folder" in capsys.readouterr().err


def test_a_new_export_removes_the_graph_it_no_longer_writes(tmp_path):
    """A non-causal model's graphs (--force) over a causal model's: the stale
    stream_step.onnx goes, after the new metadata; files that are not graphs stay."""
    out = tmp_path / "graphs"
    out.mkdir()
    for name in ("separator.onnx", "stream_step.onnx", "onnx_model.json", "notes.onnx"):
        (out / name).write_text("old")

    def trace(folder):
        (Path(folder) / "separator.onnx").write_text("new")
        return {"file": "separator.onnx"}

    def check(folder):
        return {"max_difference_over_peak": 0.0, "min_si_snr_db": 100.0}

    onnx_graphs.write_onnx(str(out), 8000, 2, {"separator": (trace, check)})
    assert sorted(os.listdir(out)) == ["notes.onnx", "onnx_model.json", "separator.onnx"]
    assert (out / "separator.onnx").read_text() == "new" and (out / "notes.onnx").read_text() == "old"
    assert sorted(json.load(open(out / "onnx_model.json"))) == [
        "format",
        "num_spks",
        "opset",
        "sample_rate",
        "separator",
    ]
