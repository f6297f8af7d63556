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

In CPU inference (no autograd, no autocast) some layers take equivalent faster
routes: stride-1 depthwise convolutions as sums of shifted inputs
(:class:`DepthwiseConv1d`), 1x1 convolutions as one matrix product
(:class:`~speechbrain_s4m.lobes.s4.PointwiseConv1d`), the gate and global embeddings
that share an input computed together (:func:`gated_embeddings`), and temporaries
updated in place. The parameters and the function computed are unchanged (outputs
agree to float32 rounding); training, autocast and GPUs use the reference operators,
as does :func:`~speechbrain_s4m.lobes.s4.reference_implementation`.

Authors
 * speechbrain-s4m contributors
"""

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_s4m.lobes.s4 import S4, PointwiseConv1d, cpu_inference_fast_path


def global_layer_norm(channels: int) -> nn.GroupNorm:
    """gLN: normalisation over channels and time of each example, with a per-channel
    gain and bias (``GroupNorm`` with one group)."""
    return nn.GroupNorm(1, channels, eps=1e-8)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a ``[batch, channels, time]`` tensor.

    Example
    -------
    >>> ChannelLayerNorm(4)(torch.randn(2, 4, 10)).shape
    torch.Size([2, 4, 10])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class DepthwiseConv1d(nn.Conv1d):
    """Depthwise ``Conv1d`` (``groups == in_channels == out_channels``) with a faster
    CPU inference path; parameters, state dict and results are those of ``nn.Conv1d``.

    On the CPU, with gradients and autocast off, oneDNN's stride-1 depthwise
    convolution is slow and its speed jumps erratically with the sequence length
    (1.5 ms for 512 channels x 997 frames, 0.1 ms for 499 frames). There the layer
    computes the same sum directly: the per-channel-scaled input for the centre tap,
    plus each other tap's scaled, shifted input on the frames where it does not fall
    into the zero padding (no padded copy is built; for ``kernel_size == 1`` this is
    a single per-channel scale). Other cases (training, autocast, stride > 1, GPUs)
    use ``nn.Conv1d`` itself.

    Arguments
    ---------
    channels : int
        Input and output channels.
    kernel_size : int
        Kernel size; padding ``(kernel_size - 1) // 2`` (odd sizes keep the length at
        stride 1; only they take the fast path).
    stride : int
        Stride.
    bias : bool
        Whether to add a learned per-channel bias.

    Example
    -------
    >>> conv = DepthwiseConv1d(8, 5)
    >>> x = torch.randn(2, 8, 50)
    >>> with torch.no_grad():
    ...     fast, reference = conv(x), nn.Conv1d.forward(conv, x)
    >>> fast.shape, bool(torch.allclose(fast, reference, atol=1e-5))
    (torch.Size([2, 8, 50]), True)
    """

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, bias: bool = True):
        super().__init__(
            channels,
            channels,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2,
            groups=channels,
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.stride[0] != 1
            or self.kernel_size[0] % 2 == 0
            or not cpu_inference_fast_path(x, self.weight)
        ):
            return super().forward(x)
        bias = None if self.bias is None else self.bias[None]
        return depthwise_same(x, self.weight[None, :, 0, :], bias)[:, 0]


def depthwise_same(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``G`` stride-1 depthwise convolutions of one input with zero "same" padding,
    computed as sums of shifted, per-channel-scaled copies of the input.

    Arguments
    ---------
    x : torch.Tensor
        ``[batch, C, L]``.
    weight : torch.Tensor
        ``[G, C, K]`` with ``K`` odd: filter ``g`` of channel ``c``.
    bias : torch.Tensor, optional
        ``[G, C]``.

    Returns
    -------
    torch.Tensor
        ``[batch, G, C, L]``: ``out[:, g] == conv1d(x, weight[g, :, None], bias[g],
        padding=K // 2, groups=C)``.

    Example
    -------
    >>> x, w = torch.randn(2, 3, 20), torch.randn(2, 3, 5)
    >>> out = depthwise_same(x, w)
    >>> reference = F.conv1d(x, w[1, :, None], padding=2, groups=3)
    >>> out.shape, bool(torch.allclose(out[:, 1], reference, atol=1e-6))
    (torch.Size([2, 2, 3, 20]), True)
    """
    K = weight.shape[-1]
    pad = (K - 1) // 2
    L = x.shape[-1]
    x = x.unsqueeze(1)  # [batch, 1, C, L]
    taps = weight.unsqueeze(-1)  # [G, C, K, 1]
    # Centre tap over the whole length, then each other tap j (offset d = j - pad)
    # on the frames where it does not fall into the zero padding.
    if bias is None:
        out = x * taps[:, :, pad]  # [batch, G, C, L]
    else:
        out = torch.addcmul(bias.unsqueeze(-1), x, taps[:, :, pad])
    for j in range(K):
        d = j - pad
        if d == 0 or abs(d) >= L:
            continue
        if d > 0:
            out[..., : L - d].addcmul_(x[..., d:], taps[:, :, j])
        else:
            out[..., -d:].addcmul_(x[..., : L + d], taps[:, :, j])
    return out


def depthwise_conv_norm(
    channels: int, kernel_size: int, stride: int = 1, bias: bool = True
) -> nn.Sequential:
    """Depthwise Conv1d (same padding) followed by gLN."""
    return nn.Sequential(
        DepthwiseConv1d(channels, kernel_size, stride=stride, bias=bias),
        global_layer_norm(channels),
    )


class LocalAttention(nn.Module):
    """Light local attention (paper Eq. 9-10) between a fine feature ``a`` and a
    coarse feature ``g``:

        out = a' * up(rho) + up(tau),   rho = sigmoid(f_1(g)),   tau = f_2(g),

    where ``a' = f_0(a)`` and ``f_0, f_1, f_2`` are depthwise convolutions followed by
    gLN, and ``up`` is nearest-neighbour interpolation to the length of ``a``.

    Arguments
    ---------
    channels : int
        Number of channels of both inputs.
    kernel_size : int
        Kernel of the three depthwise convolutions (1 to merge with ``F_m``, 5 in
        the top-down decoder).

    Example
    -------
    >>> attention = LocalAttention(channels=8, kernel_size=5)
    >>> attention(torch.randn(2, 8, 40), torch.randn(2, 8, 5)).shape
    torch.Size([2, 8, 40])
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.local_embedding = depthwise_conv_norm(channels, kernel_size, bias=False)  # f_0
        self.gate_embedding = depthwise_conv_norm(channels, kernel_size, bias=False)  # f_1
        self.global_embedding = depthwise_conv_norm(channels, kernel_size, bias=False)  # f_2

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        local = self.local_embedding(fine)  # a'
        if self.gate_embedding[0].kernel_size[0] % 2 and cpu_inference_fast_path(
            coarse, self.gate_embedding[0].weight
        ):
            return self.combine(local, self.coarse_embeddings(coarse), in_place=True)
        rho = torch.sigmoid(self.gate_embedding(coarse))
        tau = self.global_embedding(coarse)
        length = fine.shape[-1]
        if coarse.shape[-1] != length:  # (nearest interpolation to the same length is a copy)
            rho = F.interpolate(rho, size=length, mode="nearest")  # [batch, C, L_fine]
            tau = F.interpolate(tau, size=length, mode="nearest")
        return torch.addcmul(tau, local, rho)

    def coarse_embeddings(self, coarse: torch.Tensor) -> torch.Tensor:
        """``rho`` and ``tau`` of one coarse input, ``[batch, 2, C, L_coarse]``, computed
        together (CPU inference path): both depthwise convolutions in one pass over
        the input and both gLNs as one GroupNorm with two groups."""
        return gated_embeddings(coarse, [self.gate_embedding, self.global_embedding])

    @staticmethod
    def combine(
        local: torch.Tensor, embeddings: torch.Tensor, in_place: bool = False
    ) -> torch.Tensor:
        """``a' * up(rho) + up(tau)`` for ``a'`` ``[batch, C, L]`` and ``embeddings``
        ``[batch, 2, C, L_coarse]`` holding ``rho`` and ``tau``; ``in_place`` writes
        the result over ``local`` (a temporary in the CPU inference path)."""
        batch, _, C, length = embeddings.shape
        if length != local.shape[-1]:  # one interpolation for both
            embeddings = F.interpolate(
                embeddings.reshape(batch, 2 * C, length), size=local.shape[-1], mode="nearest"
            ).view(batch, 2, C, -1)
        return torch.addcmul(embeddings[:, 1], local, embeddings[:, 0], out=local if in_place else None)


def gated_embeddings(x: torch.Tensor, embeddings: Sequence[nn.Sequential]) -> torch.Tensor:
    """Pairs ``(sigmoid(f_gate(x)), f_global(x))`` of several local attentions on one
    input ``x`` ``[batch, C, L]``, where each ``f`` is ``Sequential(DepthwiseConv1d
    (stride 1), gLN)`` and ``embeddings`` lists gate, global, gate, global, ...

    Returns ``[batch, len(embeddings), C, L]``: every depthwise convolution in one
    :func:`depthwise_same` call and every gLN as one group of a single GroupNorm,
    the same sums as the modules' but in a few operator calls instead of many.
    """
    batch, C, L = x.shape
    convs = [f[0] for f in embeddings]
    norms = [f[1] for f in embeddings]
    weight = torch.stack([conv.weight[:, 0, :] for conv in convs])  # [G, C, K]
    bias = None
    if any(conv.bias is not None for conv in convs):
        bias = torch.stack(
            [conv.bias if conv.bias is not None else torch.zeros_like(conv.weight[:, 0, 0]) for conv in convs]
        )
    y = depthwise_same(x, weight, bias)  # [batch, G, C, L]
    y = F.group_norm(
        y.view(batch, -1, L),
        len(embeddings),
        torch.cat([norm.weight for norm in norms]),
        torch.cat([norm.bias for norm in norms]),
        norms[0].eps,
    ).view(batch, len(embeddings), C, L)
    y[:, 0::2].sigmoid_()  # rho = sigmoid(f_gate(x))
    return y


def add_residual(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + y`` for a branch output ``y`` that nothing else holds: without autograd
    (and at ``x``'s dtype) the sum overwrites ``y``, saving one full-size allocation."""
    if torch.is_grad_enabled() or y.dtype != x.dtype:
        return x + y
    return y.add_(x)


class ResidualS4(nn.Module):
    """Pre-norm residual S4 layer: ``x + S4(LayerNorm(x))``.

    Example
    -------
    >>> ResidualS4(channels=8)(torch.randn(2, 8, 30)).shape
    torch.Size([2, 8, 30])
    """

    def __init__(self, channels: int, d_state: int = 16):
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.s4 = S4(channels, d_state=d_state, bidirectional=True)

    def forward(
        self, x: torch.Tensor, spectrum: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        return add_residual(x, self.s4(self.norm(x), spectrum))


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

    Example
    -------
    >>> block = S4MBlock(bottleneck_channels=8, hidden_channels=16)
    >>> block(torch.randn(2, 8, 50)).shape
    torch.Size([2, 8, 50])
    """

    def __init__(
        self,
        bottleneck_channels: int = 128,
        hidden_channels: int = 512,
        num_scales: int = 4,
        d_state: int = 16,
        decoder_s4: bool = True,
    ):
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"S4MBlock: num_scales must be >= 1, got {num_scales}")
        C = hidden_channels
        self.num_scales = num_scales
        self.input_projection = nn.Sequential(
            PointwiseConv1d(bottleneck_channels, C), global_layer_norm(C), nn.PReLU()
        )
        self.pyramid = nn.ModuleList(
            [depthwise_conv_norm(C, 5, stride=1)]
            + [depthwise_conv_norm(C, 5, stride=2) for _ in range(num_scales - 1)]
        )
        self.global_s4 = ResidualS4(C, d_state)
        self.global_feed_forward = ResidualFeedForward(C)
        self.scale_attention = nn.ModuleList(
            [LocalAttention(C, 1) for _ in range(num_scales)]
        )
        self.decoder_attention = nn.ModuleList(
            [LocalAttention(C, 5) for _ in range(num_scales - 1)]
        )
        self.decoder_s4 = (
            nn.ModuleList([ResidualS4(C, d_state) for _ in range(num_scales - 1)])
            if decoder_s4
            else None
        )
        self.output_projection = PointwiseConv1d(C, bottleneck_channels)

    def scale_lengths(self, length: int) -> List[int]:
        """Lengths of ``F_0 .. F_{S-1}`` for an input of ``length`` frames."""
        lengths = [length]
        for _ in range(self.num_scales - 1):
            lengths.append((lengths[-1] - 1) // 2 + 1)  # k=5, stride 2, padding 2
        return lengths

    def _project_input(self, x: torch.Tensor) -> torch.Tensor:
        """1x1 conv, gLN, PReLU; in CPU inference the (single-slope) PReLU overwrites
        the gLN output, a temporary, instead of allocating another full-size tensor."""
        conv, norm, prelu = self.input_projection
        if prelu.num_parameters != 1 or not cpu_inference_fast_path(x, conv.weight):
            return self.input_projection(x)
        # PReLU with one slope a is leaky ReLU with negative slope a.
        return F.leaky_relu_(norm(conv(x)), float(prelu.weight))

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
        self, scales: Sequence[torch.Tensor], global_feature: torch.Tensor
    ) -> List[torch.Tensor]:
        """Local attention of every scale ``F_i`` with ``F_m``.

        The gate and global embeddings of all scales act on the same ``F_m``; in CPU
        inference they are computed together (:func:`gated_embeddings`: ``2 S`` groups
        of one GroupNorm) instead of in ``4 S`` separate operator calls on small
        tensors.
        """
        if not cpu_inference_fast_path(global_feature, global_feature):
            return [
                attention(f, global_feature)
                for attention, f in zip(self.scale_attention, scales)
            ]
        batch, C, length = global_feature.shape
        embeddings = gated_embeddings(
            global_feature,
            [
                module
                for attention in self.scale_attention
                for module in (attention.gate_embedding, attention.global_embedding)
            ],
        ).view(batch, self.num_scales, 2, C, length)
        return [
            LocalAttention.combine(attention.local_embedding(f), embeddings[:, i], in_place=True)
            for i, (attention, f) in enumerate(zip(self.scale_attention, scales))
        ]

    def forward(
        self, x: torch.Tensor, spectra: Optional[Sequence[torch.Tensor]] = None
    ) -> torch.Tensor:
        """``[batch, bottleneck, L] -> [batch, bottleneck, L]``; ``spectra`` from
        :meth:`kernel_spectra` (computed here when omitted)."""
        if spectra is None:
            spectra = self.kernel_spectra(x.shape[-1])
        scales = [self.pyramid[0](self._project_input(x))]  # F_0: [batch, C, L]
        for encoder in self.pyramid[1:]:
            scales.append(encoder(scales[-1]))  # F_i: [batch, C, ~L / 2^i]
        coarsest = scales[-1].shape[-1]
        global_feature = sum(  # F_m; pooling to the same length is the identity
            F.adaptive_avg_pool1d(f, coarsest) if f.shape[-1] != coarsest else f
            for f in scales
        )
        global_feature = self.global_feed_forward(
            self.global_s4(global_feature, spectra[0])
        )
        fused = self._fuse_scales(scales, global_feature)
        expanded = fused[-1]
        for level, i in enumerate(range(self.num_scales - 2, -1, -1)):
            expanded = self.decoder_attention[i](fused[i], expanded)
            if self.decoder_s4 is not None:
                expanded = self.decoder_s4[i](expanded, spectra[1 + level])
        return self.output_projection(expanded) + x


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

    Example
    -------
    >>> masknet = S4MMaskNet(in_channels=17, hidden_channels=32, num_blocks=2)
    >>> masknet(torch.randn(3, 17, 101)).shape  # [spks, batch, E, L]
    torch.Size([2, 3, 17, 101])
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
    ):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"S4MMaskNet: num_blocks must be >= 1, got {num_blocks}")
        if num_spks < 1:
            raise ValueError(f"S4MMaskNet: num_spks must be >= 1, got {num_spks}")
        self.in_channels = in_channels
        self.num_spks = num_spks
        self.num_blocks = num_blocks
        self.norm = global_layer_norm(in_channels)
        self.bottleneck = PointwiseConv1d(in_channels, bottleneck_channels)
        self.block = S4MBlock(
            bottleneck_channels, hidden_channels, num_scales, d_state, decoder_s4
        )
        self.fuse = nn.Sequential(
            DepthwiseConv1d(bottleneck_channels, 1),
            nn.PReLU(),
        )
        self.mask_head = nn.Sequential(
            nn.PReLU(),
            PointwiseConv1d(bottleneck_channels, num_spks * in_channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Estimate masks.

        Arguments
        ---------
        x : torch.Tensor
            Encoder output ``[batch, E, L]``, ``L >= 1``.

        Returns
        -------
        torch.Tensor
            Non-negative masks ``[num_spks, batch, E, L]``.
        """
        if x.dim() != 3 or x.shape[1] != self.in_channels or x.shape[-1] < 1:
            raise ValueError(
                f"S4MMaskNet: expected encoder output of shape "
                f"[batch, {self.in_channels}, frames >= 1], got {tuple(x.shape)}"
            )
        batch, E, L = x.shape
        bottleneck = self.bottleneck(self.norm(x))  # [batch, bottleneck, L]
        spectra = self.block.kernel_spectra(L)  # once for all unfolded passes
        out = self.block(bottleneck, spectra)
        for _ in range(self.num_blocks - 1):
            out = self.block(self.fuse(bottleneck + out), spectra)
        masks = self.mask_head(out)  # [batch, spks * E, L]
        return masks.view(batch, self.num_spks, E, L).transpose(0, 1)
