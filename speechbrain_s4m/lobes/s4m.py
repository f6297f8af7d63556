"""S4M and S4M-tiny mask networks (Chen et al., Interspeech 2023).

The mask network maps the encoder output ``x0 [batch, E, L]`` to one non-negative
mask per speaker. One :class:`S4MBlock` is unfolded ``num_blocks`` times with shared
weights (A-FRCNN): pass 1 takes the bottleneck features, pass ``k > 1`` takes
``fuse(bottleneck + previous output)``.

Inside the block (paper Fig. 1), with paper symbols:

* ``F_0 .. F_{S-1}``: a pyramid of depthwise convolutions, scale ``i`` at length
  ``~ L / 2^i`` ("three down-sampling encoders" for ``S = 4`` scales);
* ``F_m``: every scale average-pooled to the coarsest length and summed, then the
  S4 block (pre-norm S4 layer and pre-norm feed-forward, both residual);
* local attention (Eq. 9-10) merges every scale with ``F_m``, then a top-down
  decoder merges the scales from coarse to fine;
* S4M only: a residual S4 layer after each decoder local attention (Fig. 1-C).

The mask network pads the frames once to a multiple of ``2^(S-1)`` (8 for ``S = 4``),
so that every scale is exactly half the previous one: average pooling is then a mean
of even and odd frames, and nearest-neighbour upsampling an exact repetition (a
broadcast). The masks
are trimmed back to the input length. One computation serves training, inference,
autocast, CPU and GPU.

``causal=True`` builds the same modules chunk-causal, for streaming: unidirectional S4
layers, per-frame layer norms in place of gLN, and depthwise convolutions with left
context only, the strided ones aligned to the blocks of ``2^(S-1)`` frames. Given a
:class:`~speechbrain_s4m.lobes.stream_state.StreamState`, the same forward pass then
continues a sequence chunk by chunk (the S4 layers run their recurrence, the
convolutions take their left context from the previous chunk).

Legend: ``B`` batch, ``E`` encoder channels, ``C`` hidden channels, ``L`` frames,
``S`` scales, ``G`` stacked embeddings.

Authors
 * speechbrain-s4m contributors
"""

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_s4m.frame_geometry import whole_blocks
from speechbrain_s4m.lobes.depthwise import DepthwiseConv1d
from speechbrain_s4m.lobes.pointwise import PointwiseConv1d
from speechbrain_s4m.lobes.s4 import S4
from speechbrain_s4m.lobes.stream_state import StreamState

NORM_EPS = 1e-8
OPERATOR_NAMESPACE = "speechbrain_s4m"  # torch.ops.speechbrain_s4m: operators an ONNX export lowers whole


def global_layer_norm(channels: int) -> nn.GroupNorm:
    """gLN: normalisation over channels and time of each example, with a per-channel
    gain and bias (``GroupNorm`` with one group)."""
    return nn.GroupNorm(1, channels, eps=NORM_EPS)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a ``[batch, channels, time]`` tensor, frame by
    frame (causal, and stateless in a stream).

    Example
    -------
    >>> ChannelLayerNorm(4)(torch.randn(2, 4, 10)).shape
    torch.Size([2, 4, 10])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def feature_norm(channels: int, causal: bool = False) -> nn.Module:
    """The block's feature normalisation: gLN, or for a causal network the per-frame
    layer norm over channels (:class:`ChannelLayerNorm`, same parameters), which needs
    no statistics from other frames and so carries nothing in a stream."""
    return ChannelLayerNorm(channels, eps=NORM_EPS) if causal else global_layer_norm(channels)


def pooled_sum(scales: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_i pool(F_i)``: every scale ``F_i [B, C, L / 2^i]`` average-pooled to the
    coarsest length and summed, computed coarse-wards as ``t <- pool2(t) + F_{i+1}``
    (a mean of equal-sized means is the mean), where ``pool2`` averages the even and
    odd frames.

    Example
    -------
    >>> fine, coarse = torch.arange(8.0).view(1, 1, 8), torch.ones(1, 1, 2)
    >>> pooled_sum([fine, torch.zeros(1, 1, 4), coarse])  # means 1.5 and 5.5, plus 1
    tensor([[[2.5000, 6.5000]]])
    """
    total = scales[0]
    for f in scales[1:]:
        total = pairwise_mean(total) + f
    return total


@torch.library.custom_op(f"{OPERATOR_NAMESPACE}::pairwise_mean", mutates_args=())
def pairwise_mean(x: torch.Tensor) -> torch.Tensor:
    """``pool2``: the means of the even and odd frames, ``[B, C, L] -> [B, C, L / 2]``
    for an even ``L``, with its backward written out (half the gradient to each of
    the two frames).

    An operator of its own (``torch.ops.speechbrain_s4m.pairwise_mean``), so that an
    ONNX export lowers it to one ``AveragePool`` (:mod:`speechbrain_s4m.export.onnx_lowering`)
    instead of strided slices, which onnxruntime copies an element at a time, and
    that a compiled stream step decomposes into :func:`mean_of_pairs`
    (:mod:`speechbrain_s4m.export.inductor_lowering`).
    """
    return mean_of_pairs(x, out=x.new_empty(*x.shape[:-1], x.shape[-1] // 2))  # contiguous, as the fake


def mean_of_pairs(x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The formula of :func:`pairwise_mean`: ``lerp(x[..., 0::2], x[..., 1::2], 1/2)``.

    Example
    -------
    >>> mean_of_pairs(torch.arange(4.0).view(1, 1, 4))
    tensor([[[0.5000, 2.5000]]])
    """
    return torch.lerp(x[..., 0::2], x[..., 1::2], 0.5, out=out)


@pairwise_mean.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], x.shape[-1] // 2)


def _pairwise_mean_backward(ctx, grad: torch.Tensor) -> torch.Tensor:
    return (0.5 * grad)[..., None].expand(*grad.shape, 2).flatten(-2)


pairwise_mean.register_autograd(_pairwise_mean_backward)


class ConvNorm(nn.Sequential):
    """Depthwise Conv1d (same padding, or causal) followed by :func:`feature_norm`
    (modules ``0`` and ``1``, as the ``nn.Sequential`` of earlier checkpoints).

    Example
    -------
    >>> ConvNorm(8, 5, stride=2, causal=True)(torch.randn(2, 8, 40)).shape
    torch.Size([2, 8, 20])
    """

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, bias: bool = True, causal: bool = False):
        super().__init__(
            DepthwiseConv1d(channels, kernel_size, stride=stride, bias=bias, causal=causal),
            feature_norm(channels, causal),
        )

    def forward(self, x: torch.Tensor, stream: Optional[StreamState] = None) -> torch.Tensor:
        return self[1](self[0](x, stream))


class LocalAttention(nn.Module):
    """Light local attention (paper Eq. 9-10) between a fine feature ``a`` and a
    coarse feature ``g``:

        out = a' * up(rho) + up(tau),   rho = sigmoid(f_1(g)),   tau = f_2(g),

    where ``a' = f_0(a)`` and ``f_0, f_1, f_2`` are depthwise convolutions followed by
    gLN, and ``up`` is nearest-neighbour interpolation to the length of ``a`` (an
    integer multiple of the length of ``g``).

    Arguments
    ---------
    channels : int
        Number of channels of both inputs.
    kernel_size : int
        Kernel of the three depthwise convolutions (1 to merge with ``F_m``, 5 in
        the top-down decoder).
    causal : bool
        Causal convolutions and per-frame normalisation.

    Example
    -------
    >>> attention = LocalAttention(channels=8, kernel_size=5)
    >>> attention(torch.randn(2, 8, 40), torch.randn(2, 8, 5)).shape
    torch.Size([2, 8, 40])
    """

    def __init__(self, channels: int, kernel_size: int, causal: bool = False):
        super().__init__()
        self.local_embedding = ConvNorm(channels, kernel_size, bias=False, causal=causal)  # f_0
        self.gate_embedding = ConvNorm(channels, kernel_size, bias=False, causal=causal)  # f_1
        self.global_embedding = ConvNorm(channels, kernel_size, bias=False, causal=causal)  # f_2

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor, stream: Optional[StreamState] = None) -> torch.Tensor:
        """``fine [B, C, L]``, ``coarse [B, C, L / r]`` -> ``[B, C, L]``."""
        rho, tau = (
            e.squeeze(1) for e in gated_embeddings(coarse, [self.gate_embedding, self.global_embedding], stream)
        )
        return self.combine(self.local_embedding(fine, stream), rho, tau)

    @staticmethod
    def combine(local: torch.Tensor, rho: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """``a' * up(rho) + up(tau)`` for ``a' [B, C, L]`` and ``rho, tau [B, C, L / r]``,
        as one multiply-add on broadcast views (:func:`broadcast_gate`):
        nearest-neighbour upsampling by the integer factor ``r`` repeats each coarse
        frame over ``r`` fine frames, so no upsampled tensor is built.

        Example
        -------
        >>> local, rho, tau = torch.ones(1, 1, 4), torch.tensor([[[2.0, 3.0]]]), torch.zeros(1, 1, 2)
        >>> LocalAttention.combine(local, rho, tau)
        tensor([[[2., 2., 3., 3.]]])
        >>> local = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
        >>> rho, tau = (torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True) for _ in "12")
        >>> torch.autograd.gradcheck(LocalAttention.combine, (local, rho, tau))
        True
        """
        batch, C, length = local.shape
        if length % rho.shape[-1] or rho.shape != tau.shape or rho.shape[:2] != local.shape[:2]:
            raise ValueError(
                f"LocalAttention: expected rho and tau of shape [{batch}, {C}, L / r] for a "
                f"fine input of shape {tuple(local.shape)} and an integer r, got "
                f"{tuple(rho.shape)} and {tuple(tau.shape)}"
            )
        return broadcast_gate(local, rho, tau)


def sum_of_runs(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Sums of each run of ``factor`` frames: ``[B, C, L] -> [B, C, L / factor]``, for a
    power-of-two ``factor`` as repeated sums of even and odd frames (a reduction over
    a trailing dimension of 2 is several times slower on the CPU).

    Example
    -------
    >>> sum_of_runs(torch.arange(8.0).view(1, 1, 8), 4)
    tensor([[[ 6., 22.]]])
    """
    if factor & (factor - 1):
        batch, C, length = x.shape
        return x.reshape(batch, C, length // factor, factor).sum(-1)
    while factor > 1:
        x = x[..., 0::2] + x[..., 1::2]
        factor //= 2
    return x


@torch.library.custom_op(f"{OPERATOR_NAMESPACE}::broadcast_gate", mutates_args=())
def broadcast_gate(local: torch.Tensor, rho: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``a' * up(rho) + up(tau)`` for ``a' [B, C, L]`` and ``rho, tau [B, C, L / r]`` (see
    :meth:`LocalAttention.combine`, which checks the shapes), as one multiply-add over
    broadcast views, and with its backward pass written out: the gradients of
    ``rho`` and ``tau`` are :func:`sum_of_runs` of ``g * a'`` and ``g``.

    An operator of its own (``torch.ops.speechbrain_s4m.broadcast_gate``), so that an
    ONNX export lowers it as a whole, to ``Resize`` and a multiply-add
    (:mod:`speechbrain_s4m.export.onnx_lowering`): onnxruntime repeats frames several times
    faster than it broadcasts over a trailing axis of ``r``. A compiled stream step
    decomposes it into :func:`gated_repetition` (:mod:`speechbrain_s4m.export.inductor_lowering`).
    """
    batch, C, length = local.shape
    dtype = torch.promote_types(torch.promote_types(tau.dtype, local.dtype), rho.dtype)
    out = local.new_empty(batch, C, rho.shape[-1], length // rho.shape[-1], dtype=dtype)  # contiguous, as the fake
    return gated_repetition(local, rho, tau, out=out)


def gated_repetition(
    local: torch.Tensor, rho: torch.Tensor, tau: torch.Tensor, out: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """The formula of :func:`broadcast_gate`: ``addcmul(tau, a', rho)`` over the fine
    frames viewed as ``[B, C, L / r, r]`` (into ``out`` of that shape when given).

    Example
    -------
    >>> gated_repetition(torch.ones(1, 1, 4), torch.tensor([[[2.0, 3.0]]]), torch.zeros(1, 1, 2))
    tensor([[[2., 2., 3., 3.]]])
    """
    batch, C, length = local.shape
    fine = local.reshape(batch, C, rho.shape[-1], -1)  # [B, C, L / r, r]
    return torch.addcmul(tau[..., None], fine, rho[..., None], out=out).reshape(batch, C, length)


@broadcast_gate.register_fake
def _(local: torch.Tensor, rho: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    dtype = torch.promote_types(torch.promote_types(tau.dtype, local.dtype), rho.dtype)
    return local.new_empty(local.shape, dtype=dtype)


def _broadcast_gate_context(ctx, inputs, output) -> None:
    local, rho, tau = inputs
    ctx.save_for_backward(local, rho)
    ctx.dtypes = (local.dtype, rho.dtype, tau.dtype)


def _broadcast_gate_backward(ctx, grad: torch.Tensor):
    local, rho = ctx.saved_tensors
    batch, C, length = local.shape
    factor = length // rho.shape[-1]
    grad_local = grad_rho = grad_tau = None
    if ctx.needs_input_grad[0]:
        grad_local = (grad.reshape(batch, C, -1, factor) * rho[..., None]).view(batch, C, length)
        grad_local = grad_local.to(ctx.dtypes[0])
    if ctx.needs_input_grad[1]:
        grad_rho = sum_of_runs(grad * local, factor).to(ctx.dtypes[1])
    if ctx.needs_input_grad[2]:
        grad_tau = sum_of_runs(grad, factor).to(ctx.dtypes[2])
    return grad_local, grad_rho, grad_tau


broadcast_gate.register_autograd(_broadcast_gate_backward, setup_context=_broadcast_gate_context)


def gated_embeddings(
    x: torch.Tensor, embeddings: Sequence[ConvNorm], stream: Optional[StreamState] = None
) -> torch.Tensor:
    """The pairs ``(rho, tau) = (sigmoid(f_gate(x)), f_global(x))`` of one or several
    local attentions on one input ``x [B, C, L]``, where each ``f`` is a
    :class:`ConvNorm` and ``embeddings`` lists gate, global, gate, global, ...

    Every gLN runs as one group of a single GroupNorm (every per-frame norm as one
    layer norm over the channels of each group), so several attentions on the same
    input (S4M's scales on ``F_m``) cost a few operator calls instead of many.

    Returns
    -------
    tuple of torch.Tensor
        ``rho`` and ``tau``, each ``[B, G / 2, C, L]`` with ``G = len(embeddings)``:
        index ``g`` holds the pair of the ``g``-th attention.

    Example
    -------
    >>> attention = LocalAttention(channels=8, kernel_size=5)
    >>> pair = [attention.gate_embedding, attention.global_embedding]
    >>> rho, tau = gated_embeddings(torch.randn(2, 8, 10), pair)
    >>> rho.shape, tau.shape, bool((rho > 0).all())
    (torch.Size([2, 1, 8, 10]), torch.Size([2, 1, 8, 10]), True)
    """
    batch, C, L = x.shape
    G, norms = len(embeddings), [f[1] for f in embeddings]
    y = torch.stack([f[0](x, stream) for f in embeddings], dim=1)  # [B, G, C, L]
    weight, bias = torch.cat([norm.weight for norm in norms]), torch.cat([norm.bias for norm in norms])
    if isinstance(norms[0], nn.GroupNorm):
        y = F.group_norm(y.view(batch, -1, L), G, weight, bias, norms[0].eps).view(batch, G, C, L)
    else:  # per frame: over the C channels of each group
        y = F.layer_norm(y.transpose(2, 3), (C,), eps=norms[0].eps).transpose(2, 3)
        y = torch.addcmul(bias.view(G, C, 1), y, weight.view(G, C, 1))
    gates, embeddings = y.view(batch, G // 2, 2, C, L).unbind(2)  # f_gate(x), f_global(x)
    return gates.sigmoid(), embeddings  # out of place: in an ONNX graph, no scatter into y


def add_residual(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + y`` for a branch output ``y`` that nothing else holds and that its
    producer's backward does not need (a matrix product's or a GLU's output): the sum
    overwrites ``y``, saving one full-size allocation. Under autocast (``y`` in lower
    precision) the sum is taken at ``x``'s precision instead."""
    if y.dtype != x.dtype:
        return x + y
    return y.add_(x)


class ResidualS4(nn.Module):
    """Pre-norm residual S4 layer: ``x + S4(LayerNorm(x))``, bidirectional, or
    unidirectional for a causal network. Given a stream, a causal layer runs its
    recurrence from the state the stream carries.

    Example
    -------
    >>> ResidualS4(channels=8)(torch.randn(2, 8, 30)).shape
    torch.Size([2, 8, 30])
    """

    def __init__(self, channels: int, d_state: int = 16, causal: bool = False):
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.s4 = S4(channels, d_state=d_state, bidirectional=not causal)

    def forward(
        self, x: torch.Tensor, spectrum: Optional[torch.Tensor] = None, stream: Optional[StreamState] = None
    ) -> torch.Tensor:
        if stream is None:
            return add_residual(x, self.s4(self.norm(x), spectrum))
        recurrence = stream.cached(self.s4, self.s4.recurrence)
        y, state = self.s4.forward_recurrent(self.norm(x), stream.get(self.s4), recurrence)
        stream.set(self.s4, state)
        return add_residual(x, y)


class ResidualFeedForward(nn.Module):
    """Pre-norm residual feed-forward: ``x + W_2 GELU(W_1 LayerNorm(x))`` with 1x1
    convolutions ``C -> expansion * C -> C``.

    Example
    -------
    >>> ResidualFeedForward(channels=8)(torch.randn(2, 8, 30)).shape
    torch.Size([2, 8, 30])
    """

    def __init__(self, channels: int, expansion: int = 2):
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.feed_forward = nn.Sequential(
            PointwiseConv1d(channels, expansion * channels),
            nn.GELU(),
            PointwiseConv1d(expansion * channels, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return add_residual(x, self.feed_forward(self.norm(x)))


class S4MBlock(nn.Module):
    """One S4M block (paper Fig. 1), shared by every unfolded pass.

    Arguments
    ---------
    bottleneck_channels : int
        Channels at the block's input and output.
    hidden_channels : int
        Channels inside the block (``C`` in the paper).
    num_scales : int
        Number of pyramid scales ``S`` (scale 0 plus ``S - 1`` down-sampling
        encoders).
    d_state : int
        State size of every S4 layer.
    decoder_s4 : bool
        Add an S4 layer after each decoder local attention (S4M); False gives
        S4M-tiny.
    causal : bool
        Chunk-causal: every output frame depends only on input frames up to the end
        of its block of :attr:`frame_multiple` frames (see :class:`S4MMaskNet`).

    Example
    -------
    >>> block = S4MBlock(bottleneck_channels=8, hidden_channels=16)
    >>> block(torch.randn(2, 8, 48)).shape
    torch.Size([2, 8, 48])
    """

    def __init__(
        self,
        bottleneck_channels: int = 128,
        hidden_channels: int = 512,
        num_scales: int = 4,
        d_state: int = 16,
        decoder_s4: bool = True,
        causal: bool = False,
    ):
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"S4MBlock: num_scales must be >= 1, got {num_scales}")
        C = hidden_channels
        self.num_scales = num_scales
        self.causal = causal
        self.input_projection = nn.Sequential(
            PointwiseConv1d(bottleneck_channels, C), feature_norm(C, causal), nn.PReLU()
        )
        self.pyramid = nn.ModuleList(
            [ConvNorm(C, 5, stride=1, causal=causal)]
            + [ConvNorm(C, 5, stride=2, causal=causal) for _ in range(num_scales - 1)]
        )
        self.global_s4 = ResidualS4(C, d_state, causal)
        self.global_feed_forward = ResidualFeedForward(C)
        self.scale_attention = nn.ModuleList([LocalAttention(C, 1, causal) for _ in range(num_scales)])
        self.decoder_attention = nn.ModuleList([LocalAttention(C, 5, causal) for _ in range(num_scales - 1)])
        self.decoder_s4 = (
            nn.ModuleList([ResidualS4(C, d_state, causal) for _ in range(num_scales - 1)]) if decoder_s4 else None
        )
        self.output_projection = PointwiseConv1d(C, bottleneck_channels)

    @property
    def frame_multiple(self) -> int:
        """``2^(S-1)``: the block's input length must be a multiple of it."""
        return 2 ** (self.num_scales - 1)

    def scale_lengths(self, length: int) -> List[int]:
        """Lengths of ``F_0 .. F_{S-1}`` for an input of ``length`` frames (a multiple
        of :attr:`frame_multiple`): ``L, L / 2, ..., L / 2^(S-1)``."""
        if length < 1 or length % self.frame_multiple:
            raise ValueError(
                f"S4MBlock: expected a length that is a positive multiple of {self.frame_multiple} frames, got {length}"
            )
        return [length >> i for i in range(self.num_scales)]

    def kernel_spectra(self, length: int) -> List[torch.Tensor]:
        """S4 kernel spectra for an input of ``length`` frames, in the order the
        block uses them: ``F_m``'s S4, then the decoder S4 layers from coarse to fine
        (S4M only). Computing them once lets every unfolded pass reuse them."""
        lengths = self.scale_lengths(length)
        spectra = [self.global_s4.s4.kernel_spectrum(lengths[-1])]
        if self.decoder_s4 is not None:
            for i in range(self.num_scales - 2, -1, -1):
                spectra.append(self.decoder_s4[i].s4.kernel_spectrum(lengths[i]))
        return spectra

    def _fuse_scales(
        self, scales: Sequence[torch.Tensor], global_feature: torch.Tensor, stream: Optional[StreamState]
    ) -> List[torch.Tensor]:
        """Local attention of every scale ``F_i`` with ``F_m``; the gate and global
        embeddings of all scales act on the same ``F_m`` and are computed together
        (:func:`gated_embeddings`, ``2 S`` groups of one GroupNorm)."""
        rhos, taus = gated_embeddings(
            global_feature,
            [
                module
                for attention in self.scale_attention
                for module in (attention.gate_embedding, attention.global_embedding)
            ],
            stream,
        )  # [B, S, C, L / 2^(S-1)] each
        return [
            LocalAttention.combine(attention.local_embedding(f, stream), rho, tau)
            for attention, f, rho, tau in zip(self.scale_attention, scales, rhos.unbind(1), taus.unbind(1))
        ]  # unbind: a cheap backward, unlike indexing

    def forward(
        self,
        x: torch.Tensor,
        spectra: Optional[Sequence[Optional[torch.Tensor]]] = None,
        stream: Optional[StreamState] = None,
    ) -> torch.Tensor:
        """``[B, bottleneck, L] -> [B, bottleneck, L]`` for ``L`` a multiple of
        :attr:`frame_multiple`; ``spectra`` from :meth:`kernel_spectra` (computed
        here when omitted). Given a ``stream`` (causal blocks only), ``x`` is the next
        chunk of a sequence and the S4 layers run their recurrences instead."""
        self.scale_lengths(x.shape[-1])  # checks the length
        if stream is not None:
            if not self.causal:
                raise ValueError("S4MBlock: a stream needs a causal block (causal=True)")
            spectra = [None] * (1 + (0 if self.decoder_s4 is None else len(self.decoder_s4)))
        elif spectra is None:
            spectra = self.kernel_spectra(x.shape[-1])
        scales = [self.pyramid[0](self.input_projection(x), stream)]  # F_0: [B, C, L]
        for encoder in self.pyramid[1:]:
            scales.append(encoder(scales[-1], stream))  # F_i: [B, C, L / 2^i]
        global_feature = pooled_sum(scales)  # F_m: [B, C, L / 2^(S-1)]
        global_feature = self.global_feed_forward(self.global_s4(global_feature, spectra[0], stream))
        fused = self._fuse_scales(scales, global_feature, stream)
        expanded = fused[-1]
        for level, i in enumerate(range(self.num_scales - 2, -1, -1)):
            expanded = self.decoder_attention[i](fused[i], expanded, stream)
            if self.decoder_s4 is not None:
                expanded = self.decoder_s4[i](expanded, spectra[1 + level], stream)
        return add_residual(x, self.output_projection(expanded))


class S4MMaskNet(nn.Module):
    """The S4M mask network, a drop-in ``MaskNet`` for SpeechBrain separation recipes.

    Arguments
    ---------
    in_channels : int
        ``E``, the encoder's number of basis channels.
    num_spks : int
        Number of speakers (masks).
    bottleneck_channels : int
        Channels of the bottleneck between the unfolded blocks.
    hidden_channels : int
        Channels inside each block.
    num_scales : int
        Pyramid scales per block (4: scale 0 plus three down-sampling encoders).
    num_blocks : int
        ``B``, the number of unfolded passes of the shared block (16 in the paper).
    d_state : int
        State size of every S4 layer.
    decoder_s4 : bool
        True for S4M, False for S4M-tiny (no S4 layers in the block's decoder).
    causal : bool
        A chunk-causal network for streaming: output frame ``t`` depends only on
        input frames up to the end of the block of ``2^(S-1)`` frames that holds
        ``t``. Unidirectional S4 layers, per-frame layer norms in place of gLN,
        left-padded depthwise convolutions (the strided ones aligned to the blocks),
        pooling and upsampling within blocks. :meth:`forward` then also takes a
        :class:`~speechbrain_s4m.lobes.stream_state.StreamState` to continue a
        sequence chunk by chunk.

    Example
    -------
    >>> masknet = S4MMaskNet(in_channels=17, hidden_channels=32, num_blocks=2)
    >>> masknet(torch.randn(3, 17, 101)).shape  # [spks, batch, E, L]
    torch.Size([2, 3, 17, 101])
    >>> causal = S4MMaskNet(in_channels=17, hidden_channels=32, num_blocks=2, causal=True)
    >>> x, stream = torch.randn(1, 17, 48), StreamState()
    >>> chunks = [causal(chunk, stream) for chunk in x.split([16, 8, 24], dim=-1)]
    >>> bool(torch.allclose(torch.cat(chunks, -1), causal(x), atol=1e-5))
    True
    """

    def __init__(
        self,
        in_channels: int,
        num_spks: int = 2,
        bottleneck_channels: int = 128,
        hidden_channels: int = 512,
        num_scales: int = 4,
        num_blocks: int = 16,
        d_state: int = 16,
        decoder_s4: bool = True,
        causal: bool = False,
    ):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"S4MMaskNet: num_blocks must be >= 1, got {num_blocks}")
        if num_spks < 1:
            raise ValueError(f"S4MMaskNet: num_spks must be >= 1, got {num_spks}")
        self.in_channels = in_channels
        self.num_spks = num_spks
        self.num_blocks = num_blocks
        self.causal = causal
        self.norm = feature_norm(in_channels, causal)
        self.bottleneck = PointwiseConv1d(in_channels, bottleneck_channels)
        self.block = S4MBlock(bottleneck_channels, hidden_channels, num_scales, d_state, decoder_s4, causal)
        self.fuse = nn.Sequential(
            DepthwiseConv1d(bottleneck_channels, 1),
            nn.PReLU(),
        )
        self.mask_head = nn.Sequential(
            nn.PReLU(),
            PointwiseConv1d(bottleneck_channels, num_spks * in_channels),
            nn.ReLU(),
        )

    def forward(
        self, x: torch.Tensor, stream: Optional[StreamState] = None, signal_frames: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Estimate masks.

        Arguments
        ---------
        x : torch.Tensor
            Encoder output ``[batch, E, L]``, ``L >= 1``.
        stream : StreamState, optional
            For a causal network: the state carried from the previous chunks of the
            same sequence. Then ``L`` must be a multiple of :attr:`block_frames`,
            except in the last chunk (which is zero-padded like a whole sequence).
        signal_frames : torch.Tensor, optional
            How many of the ``L`` frames hold the signal (an integer tensor, so that
            an exported graph takes it as an input; all of them when omitted). The
            later frames are padding, as the frames up to whole blocks that this
            forward pass appends: when ``L`` is ``signal_frames`` rounded up to
            whole blocks, the masks are those of the first ``signal_frames`` frames
            alone, followed by zero masks. This lets a caller pad a signal to whole
            blocks itself (the last chunk of a stream, an exported graph).

        Returns
        -------
        torch.Tensor
            Non-negative masks ``[num_spks, batch, E, L]``, zero from
            ``signal_frames`` on.
        """
        if x.dim() != 3 or x.shape[1] != self.in_channels or x.shape[-1] < 1:
            raise ValueError(
                f"S4MMaskNet: expected encoder output of shape "
                f"[batch, {self.in_channels}, frames >= 1], got {tuple(x.shape)}"
            )
        if stream is not None and not self.causal:
            raise ValueError("S4MMaskNet: streaming needs a causal=True model")
        batch, E, L = x.shape
        padded = self.padded_length(L)
        signal = torch.arange(padded, device=x.device) < (L if signal_frames is None else signal_frames)  # [L']
        x = F.pad(x, (0, padded - L))  # [B, E, L']: zero frames up to whole blocks
        # The padding frames are zeros after the bottleneck, as they would be at the end of a signal.
        bottleneck = self.bottleneck(self.input_norm(x, signal)).masked_fill(~signal, 0.0)  # [B, bottleneck, L']
        # Kernel spectra once for all unfolded passes (a stream runs recurrences).
        spectra = self.block.kernel_spectra(padded) if stream is None else None
        out = None
        for unfolded_pass in range(self.num_blocks):
            if stream is not None:
                stream.scope = unfolded_pass  # every pass carries its own state
            block_input = bottleneck if out is None else self.fuse(bottleneck + out)
            out = self.block(block_input, spectra, stream)
        masks = self.mask_head(out).masked_fill(~signal, 0.0)  # [B, spks * E, L']
        masks = F.pad(masks, (0, L - padded))  # trimmed (a negative pad) to [B, spks * E, L]
        return masks.view(batch, self.num_spks, E, L).transpose(0, 1)

    def input_norm(self, x: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        """The first normalisation of ``x [B, E, L]``, ``signal [L]`` marking the frames
        that hold the signal: gLN with its mean and variance over those frames alone
        (the same statistics as on the unpadded signal; float32, also under
        autocast), or the causal per-frame layer norm, which needs no statistics over
        frames.

        Example
        -------
        >>> masknet = S4MMaskNet(in_channels=4, hidden_channels=16, num_blocks=1)
        >>> x = torch.randn(1, 4, 10)
        >>> padded = torch.cat([x, torch.randn(1, 4, 6)], -1)
        >>> signal = torch.arange(16) < 10
        >>> bool(torch.allclose(masknet.input_norm(padded, signal)[..., :10], masknet.norm(x), atol=1e-5))
        True
        """
        if not isinstance(self.norm, nn.GroupNorm):
            return self.norm(x)
        dtype = x.dtype  # returned in it: a model cast with .half() or .bfloat16() goes on in its dtype
        x, weights = x.float(), signal.float()  # float32 statistics, as GroupNorm's under autocast
        count = weights.sum() * x.shape[1]

        def total(values: torch.Tensor) -> torch.Tensor:  # [B, E, L] -> [B, 1, 1]
            # over each channel's frames, then over the channels: in an ONNX graph, one
            # float32 sum over E * L values loses 1e-4 at a minute of audio
            return (values * weights).sum(-1, keepdim=True).sum(1, keepdim=True)

        mean = total(x) / count
        centred = x - mean
        variance = total(centred.square()) / count
        normalised = centred * torch.rsqrt(variance + self.norm.eps)
        return torch.addcmul(self.norm.bias[:, None].float(), normalised, self.norm.weight[:, None].float()).to(dtype)

    def start_from_uniform_masks(self, weight_scale: float = 0.1) -> None:
        """Re-initialise the mask head so that every mask starts near ``1 / num_spks``:
        its last 1x1 convolution gets the bias ``1 / num_spks`` and its weights are
        scaled by ``weight_scale``. With a decoder that inverts the encoder
        (:meth:`WaveformEncoder.inverse_filters`), training then starts from estimates
        close to ``mixture / num_spks``, and the ReLU passes gradients from the start.

        Example
        -------
        >>> masknet = S4MMaskNet(in_channels=17, hidden_channels=32, num_blocks=1)
        >>> masknet.start_from_uniform_masks()
        >>> masks = masknet(torch.randn(3, 17, 101))  # [spks, batch, E, L]
        >>> bool((masks - 0.5).abs().max() < 0.25)
        True
        """
        head = self.mask_head[1]  # PointwiseConv1d(bottleneck, spks * E)
        with torch.no_grad():
            head.weight.mul_(weight_scale)
            head.bias.fill_(1.0 / self.num_spks)

    @property
    def block_frames(self) -> int:
        """``2^(S-1)``: the frames of one causal block (a stream advances by whole
        blocks)."""
        return self.block.frame_multiple

    def padded_length(self, length: int) -> int:
        """The length the blocks run at: ``length`` rounded up to a multiple of
        ``2^(S-1)`` frames (the padding frames are zeros after the bottleneck, and
        the masks are trimmed back).

        Example
        -------
        >>> S4MMaskNet(in_channels=9, num_scales=4).padded_length(997)
        1000
        """
        return whole_blocks(length, self.block.frame_multiple)
