"""The lowering of ``s4m-compile``'s packages: its decompositions are the lobes' own
operators, and each weight is one constant (the compiled folder itself is tested with a
trained model in tests/inference/test_streaming_recipe.py)."""

import pytest
import torch
import torch.nn.functional as F

from speechbrain_s4m.export.inductor_lowering import (
    decompositions,
    depthwise_convolution,
    layer_norm_by_moments,
    pointwise_product,
)
from speechbrain_s4m.lobes.depthwise import sum_of_taps
from speechbrain_s4m.lobes.pointwise import PointwiseConv1d
from speechbrain_s4m.lobes.s4m import broadcast_gate, gated_repetition, mean_of_pairs, pairwise_mean


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
