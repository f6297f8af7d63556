"""ONNX lowerings of ATen operators that replace torch.onnx's own where onnxruntime
computes those less exactly than PyTorch.

``aten.native_group_norm`` (gLN, ``GroupNorm`` with one group, and the grouped norms
of :func:`~speechbrain_s4m.lobes.s4m.gated_embeddings`): torch.onnx lowers it to
``InstanceNormalization`` over ``C / G * L`` values per group, whose float32 sums in
onnxruntime drift with the length. Over ``512 x 7300`` values (a 7.3 s check signal
at 16 kHz) the result differs from float64 by ``8e-5`` of the peak against
PyTorch's ``1e-7``, enough to fail the export's parity check on full-size S4M.
:func:`group_norm` takes the statistics as PyTorch's one pass over each row would be
taken in two steps: means over each channel's frames, then over the channels of the
group (``7e-7`` there), and is no slower under onnxruntime.

``speechbrain_s4m::broadcast_gate`` (the local attention's ``a' * up(rho) + up(tau)``,
an operator of the lobes so that it is lowered whole): PyTorch computes it on
broadcast views, which onnxruntime evaluates a few elements at a time (3.6 ms for
``512 x 1000`` frames at ``r = 2``); :func:`broadcast_gate` upsamples with ``Resize``
and multiplies and adds tensors of one shape (0.8 ms).

``speechbrain_s4m::pairwise_mean`` (average pooling of two frames, a mean of strided
slices in PyTorch): one ``AveragePool``.

Each lowering computes its operator's function (the export's parity check compares
the whole graph with PyTorch), so the lobes keep one implementation.

Legend: ``N`` batch, ``C`` channels, ``G`` groups, ``L`` the trailing (time) size.

Authors
 * speechbrain-s4m contributors
"""

from typing import Dict

import torch
from onnxscript import opset18 as op


def group_norm(input, num_groups: int, weight=None, bias=None, eps: float = 1e-5, cudnn_enabled: bool = True):
    """``aten::group_norm(input [N, C, *], num_groups, weight [C], bias [C], eps)`` as ONNX
    operators: the mean and the variance of each group from per-channel means over
    the trailing axes (the biased variance, as PyTorch's)."""
    return _group_norm(input, weight, bias, num_groups, eps)[0]


def native_group_norm(input, weight=None, bias=None, N=None, C=None, HxW=None, group: int = 1, eps: float = 1e-5):
    """``aten::native_group_norm(...) -> (out, mean [N, G], rstd [N, G])``, as
    :func:`group_norm` (``N``, ``C`` and ``HxW`` are read from ``input``'s shape)."""
    return _group_norm(input, weight, bias, group, eps)


def _group_norm(input, weight, bias, group: int, eps: float):
    rank = len(input.shape)
    channels = op.Reshape(input, op.Constant(value_ints=[0, 0, -1]))  # [N, C, L]
    grouped = op.Reshape(input, op.Constant(value_ints=[0, group, -1]))  # [N, G, C / G * L]

    def group_mean(values):  # [N, G, C / G * L] -> [N, G, 1], through the channel means
        per_channel = op.ReduceMean(op.Reshape(values, op.Shape(channels)), op.Constant(value_ints=[2]))
        return op.ReduceMean(
            op.Reshape(per_channel, op.Constant(value_ints=[0, group, -1])), op.Constant(value_ints=[2])
        )

    mean = group_mean(grouped)
    centred = op.Sub(grouped, mean)
    rstd = op.Reciprocal(op.Sqrt(op.Add(group_mean(op.Mul(centred, centred)), op.CastLike(eps, input))))
    out = op.Reshape(op.Mul(centred, rstd), op.Shape(input))  # [N, C, *]
    trailing = op.Constant(value_ints=list(range(1, rank - 1)))  # weight [C] -> [C, 1, ...]
    if weight is not None:
        out = op.Mul(out, op.Unsqueeze(weight, trailing))
    if bias is not None:
        out = op.Add(out, op.Unsqueeze(bias, trailing))
    statistics_shape = op.Constant(value_ints=[0, group])
    return out, op.Reshape(mean, statistics_shape), op.Reshape(rstd, statistics_shape)


def broadcast_gate(local, rho, tau):
    """``speechbrain_s4m::broadcast_gate(local [B, C, L], rho [B, C, L / r], tau)``
    (:func:`speechbrain_s4m.lobes.s4m.broadcast_gate`): ``local * up(rho) + up(tau)``
    with ``up`` a nearest-neighbour ``Resize`` to ``L`` frames (source frame
    ``floor(t / r)``, exact for an integer ``r``)."""
    sizes = op.Shape(local)
    same_length = local.shape is not None and rho.shape is not None and local.shape[-1] == rho.shape[-1]

    def upsampled(x):  # r = 1 where the traced lengths are one symbol (F_m and the coarsest scale)
        if same_length:
            return x
        return op.Resize(
            x, None, None, sizes, mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"
        )

    return op.Add(op.Mul(local, upsampled(rho)), upsampled(tau))


def pairwise_mean(x):
    """``speechbrain_s4m::pairwise_mean(x [B, C, L]) -> [B, C, L / 2]``
    (:func:`speechbrain_s4m.lobes.s4m.pairwise_mean`): one ``AveragePool`` of two
    frames, stride two."""
    return op.AveragePool(x, kernel_shape=[2], strides=[2])


def translation_table() -> Dict[object, object]:
    """The ``custom_translation_table`` of ``torch.onnx.export`` for both graphs."""
    import speechbrain_s4m.lobes.s4m  # noqa: F401 (defines torch.ops.speechbrain_s4m)

    return {
        torch.ops.aten.group_norm.default: group_norm,
        torch.ops.aten.native_group_norm.default: native_group_norm,
        torch.ops.speechbrain_s4m.broadcast_gate.default: broadcast_gate,
        torch.ops.speechbrain_s4m.pairwise_mean.default: pairwise_mean,
    }
