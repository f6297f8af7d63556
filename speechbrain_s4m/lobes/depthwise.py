"""Depthwise 1-D convolutions with a fast backward pass.

A depthwise convolution filters each channel with its own ``K`` taps. Its forward pass
is fast in oneDNN and cuDNN, but oneDNN's backward pass for these shapes is not: it
took 28 % of an S4M-tiny training step on 2 CPU threads (7.5 ms per call for 512
channels x 2 x 2000 frames). The gradients are themselves a depthwise convolution
(of the output gradient with the flipped taps, on the stride-dilated gradient for
stride 2) and ``K`` per-channel dot products, which :class:`DepthwiseConvolution`
computes directly, on the CPU only (:func:`depthwise_conv1d`: elsewhere the native
backward runs). A 1x1 depthwise convolution is a per-channel scale and is computed
as one broadcast multiply-add (oneDNN's is 35x slower on the CPU).

Legend: ``B`` batch, ``C`` channels, ``L`` input frames, ``T`` output frames, ``K`` taps.

Authors
 * speechbrain-s4m contributors
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_s4m.lobes.precision import autocast_dtype, without_autocast
from speechbrain_s4m.lobes.stream_state import StreamState


class DepthwiseConvolution(torch.autograd.Function):
    """``F.conv1d(x, weight, bias, stride, padding, groups=C)`` for ``weight [C, 1, K]``,
    with the backward pass written out (first-order gradients only).

    Example
    -------
    >>> x = torch.randn(2, 3, 20, dtype=torch.float64, requires_grad=True)
    >>> w = torch.randn(3, 1, 5, dtype=torch.float64, requires_grad=True)
    >>> b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    >>> torch.autograd.gradcheck(lambda *t: DepthwiseConvolution.apply(*t, 2, 2), (x, w, b))
    True
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor],
        stride: int,
        padding: int,
    ) -> torch.Tensor:
        dtype = autocast_dtype(x)
        with without_autocast(x.device):
            x_c, w_c = x.to(dtype), weight.to(dtype)
            b_c = None if bias is None else bias.to(dtype)
            y = F.conv1d(x_c, w_c, b_c, stride=stride, padding=padding, groups=x.shape[1])
        ctx.save_for_backward(x_c, w_c)
        ctx.stride, ctx.padding = stride, padding
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return y  # [B, C, T]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        batch, C, L = x.shape
        K, T = weight.shape[-1], grad.shape[-1]
        grad = grad.to(x.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # d x[s] = sum_j w[j] g_dilated[s + padding - j]: a convolution of the
            # stride-dilated gradient with the flipped taps.
            dilated = grad
            if stride > 1:
                dilated = grad.new_zeros(batch, C, max(L, stride * T))
                dilated[..., : stride * T : stride] = grad
            flipped = weight.flip(-1)
            grad_x = F.conv1d(dilated, flipped, padding=K - 1 - padding, groups=C)
            grad_x = grad_x[..., :L].to(x_dtype)
        if ctx.needs_input_grad[1]:
            # d w[c, j] = sum_{b, t} g[b, c, t] x_padded[b, c, stride t + j]: per
            # example, a depthwise correlation of the input with the gradient (T taps,
            # dilation = stride), which reads each tensor once.
            padded = F.pad(x, (padding, max(0, stride * (T - 1) + K - L - padding)))
            grad_w = sum(
                F.conv1d(padded[b : b + 1], grad[b, :, None, :], dilation=stride, groups=C)[0, :, :K]
                for b in range(batch)
            )[:, None, :].to(w_dtype)  # [C, 1, K]
        if b_dtype is not None and ctx.needs_input_grad[2]:
            grad_b = grad.sum(-1).sum(0).to(b_dtype)
        return grad_x, grad_w, grad_b, None, None


def depthwise_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int, padding: int
) -> torch.Tensor:
    """``F.conv1d(x, weight, bias, stride, padding, groups=C)``, one forward pass whose
    backward pass is chosen by device: on the CPU the written-out one of
    :class:`DepthwiseConvolution` (measured faster than oneDNN's there), elsewhere the
    native one (cuDNN's on CUDA).

    Example
    -------
    >>> x, w = torch.randn(2, 3, 20, requires_grad=True), torch.randn(3, 1, 5, requires_grad=True)
    >>> y = depthwise_conv1d(x, w, None, 2, 2)
    >>> y.shape, y.grad_fn.name()  # on the CPU
    (torch.Size([2, 3, 10]), 'DepthwiseConvolutionBackward')
    """
    if x.device.type == "cpu":
        return DepthwiseConvolution.apply(x, weight, bias, stride, padding)
    return F.conv1d(x, weight, bias, stride=stride, padding=padding, groups=x.shape[1])


def sum_of_taps(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int, padding: int
) -> torch.Tensor:
    """The depthwise convolution of :class:`DepthwiseConvolution` written as its ``K``
    taps, ``y[..., t] = b + sum_k w[:, k] x[..., stride t + k]``: ``K`` shifted
    multiply-adds, which a compiler fuses into one loop (a compiled stream step
    decomposes the convolution into them, :mod:`speechbrain_s4m.export.inductor_lowering`).
    In eager mode oneDNN's single pass is faster at training sizes.

    Example
    -------
    >>> x, w, b = torch.randn(2, 3, 20), torch.randn(3, 1, 5), torch.randn(3)
    >>> y = sum_of_taps(x, w, b, 2, 2)
    >>> y.shape, bool(torch.allclose(y, F.conv1d(x, w, b, stride=2, padding=2, groups=3), atol=1e-6))
    (torch.Size([2, 3, 10]), True)
    """
    if padding:
        x = F.pad(x, (padding, padding))
    K = weight.shape[-1]
    T = (x.shape[-1] - K) // stride + 1
    span = stride * (T - 1) + 1
    y = x[..., 0:span:stride] * weight[:, 0, 0:1]  # [B, C, T]
    for k in range(1, K):
        y = y + x[..., k : k + span : stride] * weight[:, 0, k : k + 1]
    return y if bias is None else y + bias[:, None]


class DepthwiseConv1d(nn.Conv1d):
    """Depthwise ``Conv1d`` (``groups == in_channels == out_channels``); parameters and
    state dict are ``nn.Conv1d``'s.

    Non-causal ("same" padding ``(kernel_size - 1) // 2``), or causal: ``kernel_size -
    stride`` frames of left context and none on the right, so output frame ``j`` sees
    input frames up to ``stride * j + stride - 1``, the last of the ``stride`` frames it
    replaces (block-aligned down-sampling). The left context is zeros at the start of a
    sequence; given a :class:`~speechbrain_s4m.lobes.stream_state.StreamState`, it is
    the previous chunk's last input frames, so that a sequence fed in chunks (of
    multiples of ``stride`` frames) gives the output of the whole.

    Arguments
    ---------
    channels : int
        Input and output channels.
    kernel_size : int
        Kernel size (odd sizes keep the length at stride 1).
    stride : int
        Stride (2 halves an even length).
    bias : bool
        Whether to add a learned per-channel bias.
    causal : bool
        Left context only (see above).

    Example
    -------
    >>> conv = DepthwiseConv1d(8, 5, stride=2)
    >>> x = torch.randn(2, 8, 48)  # [batch, channels, time]
    >>> y = conv(x)
    >>> y.shape, bool(torch.allclose(y, nn.Conv1d.forward(conv, x), atol=1e-6))
    (torch.Size([2, 8, 24]), True)
    >>> causal = DepthwiseConv1d(8, 5, stride=2, causal=True)
    >>> causal(x).shape
    torch.Size([2, 8, 24])
    """

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, bias: bool = True, causal: bool = False):
        if causal and kernel_size < stride:
            raise ValueError(
                f"DepthwiseConv1d: a causal kernel needs kernel_size >= stride, got {kernel_size} < {stride}"
            )
        super().__init__(
            channels,
            channels,
            kernel_size,
            stride=stride,
            padding=0 if causal else (kernel_size - 1) // 2,
            groups=channels,
            bias=bias,
        )
        self.causal = causal

    @property
    def left_context(self) -> int:
        """Input frames a causal convolution keeps from before each chunk."""
        return self.kernel_size[0] - self.stride[0] if self.causal else 0

    def forward(self, x: torch.Tensor, stream: Optional[StreamState] = None) -> torch.Tensor:
        """``[B, C, L] -> [B, C, L / stride]``; ``stream`` carries a causal
        convolution's left context from one chunk to the next."""
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"DepthwiseConv1d: expected input of shape [batch, {self.in_channels}, time], got {tuple(x.shape)}"
            )
        if self.kernel_size[0] == 1 and self.stride[0] == 1:  # a per-channel scale
            scale = self.weight[:, 0]  # [C, 1]
            return x * scale if self.bias is None else torch.addcmul(self.bias[:, None], x, scale)
        if self.left_context:
            past = None if stream is None else stream.get(self)
            if past is None:
                past = x.new_zeros(x.shape[0], x.shape[1], self.left_context)
            x = torch.cat([past, x], dim=-1)  # [B, C, left + L]
            if stream is not None:
                stream.set(self, x[..., -self.left_context :])
        return depthwise_conv1d(x, self.weight, self.bias, self.stride[0], self.padding[0])
