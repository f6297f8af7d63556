"""The stream step compiled by TorchInductor: its decompositions are the lobes' own
operators, and the compiled stream equals the offline causal separation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from speechbrain_s4m.compiled_stream import CompiledStreamingSeparator
from speechbrain_s4m.inductor_lowering import (
    decompositions,
    depthwise_convolution,
    layer_norm_by_moments,
    pointwise_product,
    shared_constants,
)
from speechbrain_s4m.lobes.depthwise import sum_of_taps
from speechbrain_s4m.lobes.pointwise import PointwiseConv1d
from speechbrain_s4m.lobes.s4m import broadcast_gate, gated_repetition, mean_of_pairs, pairwise_mean
from speechbrain_s4m.streaming import StreamingSeparator
from tests.test_streaming import causal_lobes, offline, relative_error


# ------------------------------------------------------------ decompositions
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_decomposed_operators_compute_the_operators(layout):
    torch.manual_seed(0)

    def frames(*shape):  # [B, C, L], laid out as a per-frame layer norm leaves it when transposed
        x = torch.randn(*shape)
        return x if layout == "contiguous" else x.transpose(1, 2).contiguous().transpose(1, 2)

    x = frames(2, 6, 16)
    assert torch.equal(mean_of_pairs(x), pairwise_mean(x))
    rho, tau = frames(2, 6, 4), frames(2, 6, 4)
    assert torch.equal(gated_repetition(x, rho, tau), broadcast_gate(x, rho, tau))
    table = decompositions()
    ops = torch.ops.speechbrain_s4m
    assert table[ops.pairwise_mean.default] is mean_of_pairs
    assert table[ops.broadcast_gate.default] is gated_repetition


def test_the_custom_operators_return_the_layout_their_fake_kernels_say():
    x = torch.randn(1, 8, 6).transpose(1, 2)  # [1, 6, 8], channels strided
    assert pairwise_mean(x).is_contiguous()
    assert broadcast_gate(x, torch.randn(1, 6, 2), torch.randn(1, 6, 2)).is_contiguous()


@pytest.mark.parametrize("stride, padding, kernel", [(1, 2, 5), (2, 0, 5), (1, 0, 4), (2, 1, 3)])
def test_sum_of_taps_is_the_depthwise_convolution(stride, padding, kernel):
    torch.manual_seed(1)
    x, w, b = torch.randn(2, 5, 23), torch.randn(5, 1, kernel), torch.randn(5)
    expected = F.conv1d(x, w, b, stride=stride, padding=padding, groups=5)
    assert torch.allclose(sum_of_taps(x, w, b, stride, padding), expected, atol=1e-5)
    decomposed = depthwise_convolution(x, w, None, [stride], [padding], [1], False, [0], 5)
    assert torch.allclose(decomposed, F.conv1d(x, w, stride=stride, padding=padding, groups=5), atol=1e-5)


def test_other_convolutions_are_left_to_inductor():
    x = torch.randn(1, 4, 12)
    assert depthwise_convolution(x, torch.randn(8, 1, 3), None, [1], [0], [1], False, [0], 4) is NotImplemented
    assert depthwise_convolution(x, torch.randn(4, 4, 3), None, [1], [0], [1], False, [0], 1) is NotImplemented
    assert depthwise_convolution(x, torch.randn(4, 1, 3), None, [1], [0], [2], False, [0], 4) is NotImplemented
    assert depthwise_convolution(x, torch.randn(4, 1, 3), None, [1], [0], [1], True, [0], 4) is NotImplemented


def test_pointwise_product_is_the_pointwise_convolution_of_one_signal():
    torch.manual_seed(4)
    conv, x = PointwiseConv1d(6, 10), torch.randn(1, 6, 3)
    weight, bias = conv.weight[:, :, 0][None], conv.bias[None, :, None]
    assert torch.allclose(pointwise_product(bias, weight, x), conv(x), atol=1e-6)
    assert torch.allclose(pointwise_product(bias, weight, x), F.conv1d(x, conv.weight, conv.bias), atol=1e-6)


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_by_moments_is_the_layer_norm(affine):
    torch.manual_seed(6)
    x = 3 + 2 * torch.randn(1, 16, 512)  # a per-frame norm of 16 frames of 512 channels
    weight, bias = (torch.randn(512), torch.randn(512)) if affine else (None, None)
    out, mean, rstd = layer_norm_by_moments(x, [512], weight, bias, 1e-8)
    expected = torch.ops.aten.native_layer_norm.default(x, [512], weight, bias, 1e-8)
    assert torch.allclose(out, expected[0], atol=1e-5)
    assert torch.allclose(mean, expected[1], atol=1e-6) and torch.allclose(rstd, expected[2], rtol=1e-5)
    assert out.shape == x.shape and mean.shape == rstd.shape == (1, 16, 1)
    assert decompositions()[torch.ops.aten.native_layer_norm.default] is layer_norm_by_moments


def test_other_batched_products_are_left_to_inductor():
    w, x = torch.randn(2, 10, 6), torch.randn(2, 6, 3)
    assert pointwise_product(torch.randn(2, 10, 1), w, x) is NotImplemented  # two signals
    assert pointwise_product(torch.randn(1, 10, 3), w[:1], x[:1]) is NotImplemented  # not a bias per channel
    assert pointwise_product(torch.randn(1, 10, 1), w[:1], x[:1], beta=0.5) is NotImplemented
    assert decompositions()[torch.ops.aten.baddbmm.default] is pointwise_product


@pytest.mark.skipif(not torch._C.has_mkl, reason="MKL's packed products")
def test_every_use_of_a_weight_reads_one_frozen_and_packed_copy():
    """As freezing leaves an unfolded network: each use of one weight with its own copy
    of it, packed on its own for MKL (an opaque buffer that has no values to compare)."""
    torch.manual_seed(5)
    weight, x = torch.randn(10, 6), torch.randn(4, 6)
    module = torch.nn.Module()
    graph = torch.fx.Graph(module)
    uses = []
    for i, rows in enumerate([4, 4, 2]):  # two uses at one batch size, one at another
        setattr(module, f"weight{i}", weight.clone())
        setattr(module, f"packed{i}", torch.ops.mkl._mkl_reorder_linear_weight(weight, rows))
        inputs = (graph.placeholder(f"x{i}"), graph.get_attr(f"packed{i}"), graph.get_attr(f"weight{i}"))
        uses.append(graph.call_function(torch.ops.mkl._mkl_linear, (*inputs, None, rows)))
    graph.output(tuple(uses))
    shared_constants(graph)
    constants = [node.target for node in graph.nodes if node.op == "get_attr"]
    assert constants == ["packed0", "weight0", "packed2"]
    outputs = torch.fx.GraphModule(module, graph)(x, x, x[:2])
    for out in outputs:
        assert torch.allclose(out, x[: out.shape[0]] @ weight.T, atol=1e-5)


# ---------------------------------------------------------- compiled stream
@pytest.fixture(scope="module")
def compiled():
    """One compilation (about half a minute on 2 cores) of a two-pass causal S4M."""
    lobes = causal_lobes(True, num_blocks=2, hidden_channels=16)
    eager = StreamingSeparator(*lobes, sample_rate=8000)
    packed = counters["inductor"]["mkldnn_linear_weight_pack_matcher_count"]
    stream = CompiledStreamingSeparator(eager, chunk_ms=16)
    stream.packed_products = counters["inductor"]["mkldnn_linear_weight_pack_matcher_count"] - packed
    return lobes, eager, stream


def streamed(stream, mix: np.ndarray, chunks) -> np.ndarray:
    parts = [stream.process(chunk) for chunk in np.split(mix, np.cumsum(chunks)[:-1])]
    return np.concatenate(parts + [stream.flush()])


@pytest.mark.parametrize("chunks", [[128] * 30, [1, 7, 300, 64, 65, 1000, 3, 2500]])
def test_compiled_stream_equals_offline(compiled, chunks):
    lobes, _, stream = compiled
    mix = np.random.default_rng(2).standard_normal(sum(chunks) + 77).astype(np.float32)
    out = streamed(stream, mix, chunks + [77])
    assert out.shape == (mix.shape[0], 2)
    assert relative_error(torch.from_numpy(out), offline(lobes, torch.from_numpy(mix))) < 1e-4


def test_compiled_stream_geometry_and_short_signals(compiled):
    lobes, eager, stream = compiled
    assert stream.frames == 16 and stream.hop_samples == 128  # 16 ms at 8 kHz, 1 ms frames
    assert stream.latency_samples == stream.window_samples - 1 >= eager.latency_samples
    assert stream.compile_seconds > 0
    for length in (40, 151, 200):
        mix = np.random.default_rng(length).standard_normal(length).astype(np.float32)
        out = streamed(stream, mix, [length])
        assert relative_error(torch.from_numpy(out), offline(lobes, torch.from_numpy(mix))) < 1e-4, length


def test_compiled_stream_refuses_bad_chunks_and_continues(compiled):
    lobes, _, stream = compiled
    mix = np.random.default_rng(3).standard_normal(3000).astype(np.float32)
    parts = [stream.process(mix[:1000])]
    with pytest.raises(ValueError, match=r"expected mono samples of shape \[time\]"):
        stream.process(np.zeros((2, 100), np.float32))
    bad = np.ones(300, np.float32)
    bad[[5, 50]] = np.nan
    with pytest.raises(ValueError, match=r"chunk 2 \(counting from 0\) holds 2 non-finite"):
        stream.process(bad)
    parts += [stream.process(mix[1000:]), stream.flush()]
    assert relative_error(torch.from_numpy(np.concatenate(parts)), offline(lobes, torch.from_numpy(mix))) < 1e-4


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="weight packing needs oneDNN")
def test_the_compiled_step_freezes_the_weights_into_packed_products(compiled):
    """Frozen weights are constants, so Inductor packs them for its matrix products (the
    1x1 convolutions): on a graph that took the weights as inputs, none would be packed."""
    lobes, _, stream = compiled
    pointwise = sum(isinstance(m, PointwiseConv1d) for lobe in lobes for m in lobe.modules())
    assert stream.packed_products >= pointwise > 0


def test_a_compiled_stream_needs_a_positive_step(compiled):
    _, eager, _ = compiled
    with pytest.raises(ValueError, match="chunk_ms must be positive"):
        CompiledStreamingSeparator(eager, chunk_ms=0)
