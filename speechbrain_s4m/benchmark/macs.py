"""Multiply-accumulates (MACs) of a forward pass: thop, the paper's tool, with its
per-module rules matched by ``isinstance``, plus what thop does not see (gLN, S4's FFT
convolutions and kernel generation, ``nn.MultiheadAttention``), per
:data:`COUNTING_RULE`.

Authors
 * speechbrain-s4m contributors
"""

import contextlib
import math
import warnings
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
from torch import nn

from speechbrain_s4m.benchmark.models import SAMPLE_RATE
from speechbrain_s4m.lobes.s4 import S4, fft_length

COUNTING_RULE = """\
MAC counting rule (1 MAC = one real multiply-accumulate; batch 1, 1 s of 16 kHz audio):
  thop: thop.profile with thop's per-module rules matched by
        isinstance, so that subclasses (WaveformEncoder, PointwiseConv1d,
        DepthwiseConv1d are nn.Conv1d) count like their base class. Conv and
        transposed conv: output elements x
        C_in/groups x kernel (thop's formula, C_in read from the module);
        Linear: output elements x in_features; LayerNorm/BatchNorm: 2 (4 with affine)
        per element; activations (ReLU, GELU, sigmoid, GLU) and bias adds: 0.
  all = thop + what thop does not see:
    - GroupNorm (gLN): thop's normalisation rule, 4 MACs per element (affine).
    - S4 FFT convolution, per call, per channel and example, FFT length
      n = fft_length(2L): rfft + irfft (1.25 n log2 n real MACs each: half of a
      complex FFT's 5 n log2 n flops = 2.5 n log2 n MACs), the pointwise product
      with the kernel spectrum (n/2 + 1 complex products; D is folded into it).
    - S4 kernel generation (once per call of S4.kernel_spectrum, per channel; N =
      d_state states with conjugates, d = directions, F = n/2 + 1 frequencies of
      the FFT that applies it): the generating function of the L-tap kernel in
      closed form, C (I - A_bar z)^-1 B_bar - z^L C A_bar^L (I - A_bar z)^-1 B_bar,
      at the F frequencies. DPLR: bilinear discretisation (two LU factorisations
      2 N^3/3 and solves (N+1) N^2), A_bar^L by repeated squaring
      ((floor(log2 L) + popcount(L) - 1) N^3), C A_bar^L (d N^2), numerators
      ((4d+2) N), Cauchy kernel per state and frequency (denominator 2, reciprocal
      1, numerator product 4d+2), Woodbury correction (4 per numerator pair and
      frequency) and the truncation term (d F). Diagonal: zero-order hold (3 N/2),
      numerators (2d N), Cauchy kernel per state and frequency (denominator 1,
      reciprocal 1, numerator product 2d) and the truncation term (d F).
      Complex multiplies, multiply-adds and reciprocals count 4 real MACs each;
      additions and exponentials 0.
    - nn.MultiheadAttention (Sepformer): Q/K/V and output projections ((L + 2S + L)
      E^2) and the attention products QK^T and AV (2 L S E) per example, which thop
      misses (its projections are functional calls).
  Elementwise products (local-attention gating, GLU, masks) count 0 in both figures,
  as thop counts activations.
  LSTMs (DPRNN, SkiM): thop's rule for nn.LSTM (each step's input and hidden-state
  products of the four gates, and the gates' elementwise products).
  Not seen by thop, and not added: SpeechBrain's own GlobalLayerNorm,
  ChannelwiseLayerNorm and CumulativeLayerNorm modules (Conv-TasNet, SkiM,
  RE-SepFormer; about 4 MACs per element, a few % of their totals)."""


def rfft_macs(n: int) -> float:
    """Real MACs of a real-input FFT (rfft or irfft) of length ``n``:
    ``1.25 n log2 n``, half of a complex FFT's ``2.5 n log2 n`` (5 n log2 n flops).

    Example
    -------
    >>> rfft_macs(8)
    30.0
    >>> rfft_macs(1)
    0.0
    """
    return 1.25 * n * math.log2(n) if n > 1 else 0.0


def _matrix_power_products(power: int) -> int:
    """Matrix products of ``torch.linalg.matrix_power`` by repeated squaring."""
    if power <= 1:
        return 0
    return int(math.floor(math.log2(power))) + bin(power).count("1") - 1


def s4_kernel_macs(layer: S4, length: int) -> float:
    """Real MACs of ``layer.kernel_spectrum(length)`` under :data:`COUNTING_RULE`.

    Example
    -------
    >>> s4_kernel_macs(S4(d_model=1, d_state=2), 4) > 0
    True
    """
    H, N = layer.d_model, layer.d_state
    d = 2 if layer.bidirectional else 1
    F = fft_length(2 * length) // 2 + 1
    if layer.mode == "dplr":
        complex_macs = 2 * N**3 / 3 + (N + 1) * N**2  # bilinear: two LUs + solves
        complex_macs += _matrix_power_products(length) * N**3  # A_bar^L
        complex_macs += d * N**2  # C A_bar^L
        complex_macs += (4 * d + 2) * N  # numerators
        complex_macs += (2 + 1 + (4 * d + 2)) * N * F  # Cauchy kernel
        complex_macs += 4 * 2 * d * F + d * F  # Woodbury, truncation term
    else:
        complex_macs = 3 * N / 2 + 2 * d * N  # zero-order hold, numerators
        complex_macs += (1 + 1 + 2 * d) * N * F + d * F  # Cauchy kernel, truncation
    return H * 4 * complex_macs


def s4_convolution_macs(layer: S4, batch: int, length: int) -> float:
    """Real MACs of the FFT convolution in ``layer.forward`` (``D u`` is folded into
    the kernel spectrum) for an input ``[batch, H, length]`` under
    :data:`COUNTING_RULE` (the 1x1 output convolution is counted by thop).

    Example
    -------
    >>> s4_convolution_macs(S4(d_model=1), batch=1, length=8)  # 2 x 80 + 4 x 9
    196.0
    """
    n = fft_length(2 * length)
    per_channel = 2 * rfft_macs(n) + 4 * (n // 2 + 1)
    return float(batch * layer.d_model * per_channel)


def attention_macs(module: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor) -> float:
    """Real MACs of ``nn.MultiheadAttention`` that thop misses: the Q, K, V and output
    projections and the products ``Q K^T`` and ``A V``.

    Example
    -------
    >>> mha = nn.MultiheadAttention(4, 2)
    >>> attention_macs(mha, torch.zeros(3, 1, 4), torch.zeros(5, 1, 4))  # L=3, S=5
    376.0
    """
    E = module.embed_dim
    if module.batch_first:
        B, L, S = query.shape[0], query.shape[1], key.shape[1]
    else:
        L, B, S = query.shape[0], query.shape[1], key.shape[0]
    return float(B * ((L + 2 * S + L) * E * E + 2 * L * S * E))


def count_convolution(module: nn.modules.conv._ConvNd, inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    """thop's convolution rule (output elements x ``C_in / groups`` x kernel) with
    ``C_in`` read from the module: thop reads it from the input's second dimension,
    which is wrong for modules that reshape their input first (``WaveformEncoder``
    takes ``[batch, time]``)."""
    kernel = math.prod(module.kernel_size)
    module.total_ops += output.numel() * (module.in_channels // module.groups) * kernel


def _isinstance_rules(model: nn.Module) -> Dict[type, Callable]:
    """thop's rules for every module type of ``model``, matched by ``isinstance``
    (thop matches types exactly, so subclasses would count 0), with
    :func:`count_convolution` for convolutions and thop's normalisation rule for
    nothing else than what thop already covers."""
    from thop.profile import register_hooks

    custom: Dict[type, Callable] = {}
    for module in model.modules():
        kind = type(module)
        if kind in custom:
            continue
        if isinstance(module, nn.modules.conv._ConvNd):
            custom[kind] = count_convolution
            continue
        if kind in register_hooks:
            continue
        for base, rule in register_hooks.items():
            if base is not nn.Sequential and isinstance(module, base):
                custom[kind] = rule
                break
    return custom


@contextlib.contextmanager
def _extra_counters(model: nn.Module, totals: Dict[str, float]) -> Iterator[Dict[str, float]]:
    """Count what thop misses (see :data:`COUNTING_RULE`) while the block runs."""
    handles = []
    patched = []

    def s4_forward(layer, args, kwargs, output):
        x = args[0]
        totals["s4_fft_convolution"] += s4_convolution_macs(layer, x.shape[0], x.shape[-1])

    def group_norm(module, args, output):
        totals["group_norm"] += 4.0 * args[0].numel()

    def mha(module, args, kwargs, output):
        query = args[0] if args else kwargs["query"]
        key = args[1] if len(args) > 1 else kwargs["key"]
        totals["attention"] += attention_macs(module, query, key)

    for module in model.modules():
        if isinstance(module, S4):
            handles.append(module.register_forward_hook(s4_forward, with_kwargs=True))
            original = module.kernel_spectrum

            def counting(length, _layer=module, _original=original):
                totals["s4_kernel_generation"] += s4_kernel_macs(_layer, length)
                return _original(length)

            module.kernel_spectrum = counting  # instance attribute shadows the method
            patched.append(module)
        elif isinstance(module, nn.GroupNorm):
            handles.append(module.register_forward_hook(group_norm))
        elif isinstance(module, nn.MultiheadAttention):
            handles.append(module.register_forward_hook(mha, with_kwargs=True))
    try:
        yield totals
    finally:
        for handle in handles:
            handle.remove()
        for module in patched:
            del module.kernel_spectrum


def count_macs(
    model: nn.Module,
    seconds: float = 1.0,
    sample_rate: int = SAMPLE_RATE,
    inputs: Optional[Tuple[torch.Tensor, ...]] = None,
) -> Dict[str, float]:
    """MACs of one forward pass on ``seconds`` of audio (batch 1), or on ``inputs``,
    per :data:`COUNTING_RULE`.

    Returns
    -------
    dict
        ``thop``, ``group_norm``, ``s4_fft_convolution``, ``s4_kernel_generation``,
        ``attention`` and ``all`` (their sum), in MACs.

    Example
    -------
    >>> count_macs(nn.Conv1d(2, 3, 1), inputs=(torch.zeros(1, 2, 10),))["all"]  # 3 x 10 x 2
    60.0
    """
    with _quiet():
        import thop

    if inputs is None:
        generator = torch.Generator().manual_seed(0)
        inputs = (torch.randn(1, int(round(seconds * sample_rate)), generator=generator),)
    totals = {"group_norm": 0.0, "s4_fft_convolution": 0.0, "s4_kernel_generation": 0.0, "attention": 0.0}
    training = model.training
    with _extra_counters(model, totals), _quiet():
        try:
            thop_macs, _ = thop.profile(model, inputs=inputs, custom_ops=_isinstance_rules(model), verbose=False)
        finally:
            for module in model.modules():  # thop leaves these on modules without a rule
                module._buffers.pop("total_ops", None)
                module._buffers.pop("total_params", None)
    model.train(training)
    result = {"thop": float(thop_macs), **totals}
    result["all"] = result["thop"] + sum(totals.values())
    return result


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence thop's deprecation warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
