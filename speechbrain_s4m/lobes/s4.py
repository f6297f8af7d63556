"""The S4 layer: a structured state-space sequence model, in pure PyTorch.

A continuous-time linear state-space model (paper Eq. 3-4)

    h'(t) = A h(t) + B u(t),        y(t) = C h(t) + D u(t)

is discretised with a step size ``Delta`` and applied to a sequence as one long
convolution ``y = K * u`` (Eq. 7-8), computed with FFTs in O(L log L). Two
parameterisations of ``A`` are provided:

* ``mode="dplr"`` (S4, Gu et al. 2022): ``A = Lambda - P P^*`` (diagonal plus low
  rank), initialised from HiPPO-LegS, discretised with the bilinear transform
  (Eq. 6). The kernel's spectrum is evaluated from the truncated generating
  function at the roots of unity with a Cauchy kernel and a Woodbury correction for
  the low-rank term.
* ``mode="diag"`` (S4D, Gu et al. 2022): ``A = Lambda`` diagonal (the normal part of
  HiPPO-LegS), discretised with a zero-order hold; the kernel is a Vandermonde
  product.

Both keep ``N // 2`` complex states per channel; the other half are their complex
conjugates, so every kernel is real. The layer works for any length, with no preset
maximum and without modifying parameters or buffers in ``forward``; kernels and FFTs
run in float32 even under autocast.

Authors
 * speechbrain-s4m contributors
"""

import contextlib
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_s4m.lobes.hippo import dplr_legs

_MODES = ("dplr", "diag")
_CHUNK = 2048  # frequencies (or time steps) per kernel evaluation: bounds memory


def fft_length(minimum: int) -> int:
    """The smallest ``n >= minimum`` whose only prime factors are 2, 3 and 5.

    FFTs of such lengths are several times faster than those of lengths with a large
    prime factor (the frame count of one second of audio, 997 at 16 kHz, is prime).
    Zero-padding a convolution (or a truncated generating function) to any length
    at least as long as required gives the same result, so only speed changes.

    Example
    -------
    >>> [fft_length(n) for n in (1, 7, 997, 1994, 2048)]
    [1, 8, 1000, 2000, 2048]
    """
    if minimum < 1:
        raise ValueError(f"fft_length: minimum must be >= 1, got {minimum}")
    best = 1 << (minimum - 1).bit_length()  # a power of two always qualifies
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            # smallest power-of-two multiple of power35 that reaches minimum
            n = power35
            while n < minimum:
                n *= 2
            best = min(best, n)
            power35 *= 3
        power5 *= 5
    return best


_FAST_PATHS = [True]


@contextlib.contextmanager
def reference_implementation():
    """Disable the CPU inference fast paths (:func:`cpu_inference_fast_path`) inside
    the block, so that every layer runs its reference operators (``nn.Conv1d``
    modules and so on); used to count MACs per module with thop.

    Example
    -------
    >>> with reference_implementation():
    ...     cpu_inference_fast_path(torch.zeros(1, 2, 3), torch.zeros(1))
    False
    """
    previous = _FAST_PATHS[0]
    _FAST_PATHS[0] = False
    try:
        yield
    finally:
        _FAST_PATHS[0] = previous


def cpu_inference_fast_path(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a layer may replace its reference operators by an equivalent, faster
    computation: CPU, no autograd, no autocast, matching float dtypes, ``[B, C, L]``,
    and not inside :func:`reference_implementation`. Training, autocast and GPUs keep
    the reference operators."""
    return (
        _FAST_PATHS[0]
        and x.device.type == "cpu"
        and x.dim() == 3
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and x.dtype == weight.dtype
    )


class PointwiseConv1d(nn.Conv1d):
    """``Conv1d`` with kernel size 1 (a per-frame linear map ``C_in -> C_out``) with a
    faster CPU inference path; parameters, state dict and results are ``nn.Conv1d``'s.

    On the CPU, with gradients and autocast off, the layer calls one batched matrix
    product with the bias fused (``baddbmm``) instead of oneDNN's convolution, which
    is up to 1.8x slower for these shapes (512 -> 1024 channels, 997 frames:
    4.9 ms against 2.8 ms on 2 threads).

    Arguments
    ---------
    in_channels : int
        ``C_in``.
    out_channels : int
        ``C_out``.
    bias : bool
        Whether to add a learned bias.

    Example
    -------
    >>> conv = PointwiseConv1d(8, 16)
    >>> x = torch.randn(2, 8, 50)
    >>> with torch.no_grad():
    ...     fast, reference = conv(x), nn.Conv1d.forward(conv, x)
    >>> fast.shape, bool(torch.allclose(fast, reference, atol=1e-5))
    (torch.Size([2, 16, 50]), True)
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not cpu_inference_fast_path(x, self.weight) or self.groups != 1:
            return super().forward(x)
        weight = self.weight[:, :, 0].expand(x.shape[0], -1, -1)  # [B, C_out, C_in]
        if self.bias is None:
            return torch.bmm(weight, x)
        return torch.baddbmm(self.bias[None, :, None], weight, x)  # [B, C_out, L]


def _float32_region(device: torch.device):
    """Context in which autocast is off, so that kernels and FFTs stay float32."""
    return torch.autocast(device_type=device.type, enabled=False)


class S4(nn.Module):
    """S4 layer: SSM convolution, ``D`` skip, GELU, then a 1x1 conv ``H -> 2H`` and GLU.

    Arguments
    ---------
    d_model : int
        ``H``, the number of channels; one independent SSM per channel.
    d_state : int
        ``N``, the state size of each SSM (even; ``N // 2`` complex states are stored).
    bidirectional : bool
        If True, a second kernel runs over the time-reversed sequence and the two
        outputs are summed (non-causal). If False, the layer is causal and can be run
        one step at a time with :meth:`step`.
    mode : str
        ``"dplr"`` (HiPPO-LegS, diagonal plus low rank, bilinear) or ``"diag"``
        (S4D, diagonal, zero-order hold).
    dropout : float
        Dropout applied after the GELU.
    dt_min : float
        Lower bound of the log-uniform draw of the per-channel step size ``Delta``.
    dt_max : float
        Upper bound of that draw.

    Example
    -------
    >>> layer = S4(d_model=8, d_state=16)
    >>> x = torch.randn(2, 8, 100)  # [batch, channels, time]
    >>> layer(x).shape
    torch.Size([2, 8, 100])
    >>> causal = S4(d_model=8, bidirectional=False)
    >>> state = causal.default_state(batch_size=2)
    >>> y_t, state = causal.step(x[:, :, 0], state)
    >>> y_t.shape
    torch.Size([2, 8])
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        bidirectional: bool = True,
        mode: str = "dplr",
        dropout: float = 0.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ):
        super().__init__()
        if d_model < 1:
            raise ValueError(f"S4: d_model must be >= 1, got {d_model}")
        if d_state < 2 or d_state % 2:
            raise ValueError(f"S4: d_state must be a positive even number, got {d_state}")
        if mode not in _MODES:
            raise ValueError(f"S4: mode must be one of {_MODES}, got {mode!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(
                f"S4: expected 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}"
            )
        self.d_model = d_model
        self.d_state = d_state
        self.bidirectional = bidirectional
        self.mode = mode
        self.dt_min = dt_min
        self.dt_max = dt_max
        H, half = d_model, d_state // 2
        directions = 2 if bidirectional else 1

        # Lambda = -exp(log_neg_real) + i * imag keeps Re(Lambda) < 0 (stable).
        self.log_dt = nn.Parameter(torch.empty(H))
        self.log_neg_real = nn.Parameter(torch.empty(H, half))
        self.imag = nn.Parameter(torch.empty(H, half))
        # Complex parameters are stored as real views [..., 2].
        self.input_matrix = nn.Parameter(torch.empty(H, half, 2))  # B
        self.low_rank = (
            nn.Parameter(torch.empty(H, half, 2)) if mode == "dplr" else None
        )  # P
        self.output_matrix = nn.Parameter(torch.empty(directions, H, half, 2))  # C
        self.skip = nn.Parameter(torch.empty(H))  # D
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.output_linear = PointwiseConv1d(H, 2 * H)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """(Re-)initialise every parameter: HiPPO-LegS ``Lambda, P, B``, random ``C, D``,
        log-uniform ``Delta`` in ``[dt_min, dt_max]`` and the output projection."""
        init = dplr_legs(self.d_state)
        with torch.no_grad():
            self.log_dt.uniform_(math.log(self.dt_min), math.log(self.dt_max))
            self.log_neg_real.copy_(torch.log(-init.eigenvalues.real).expand_as(self.imag))
            self.imag.copy_(init.eigenvalues.imag.expand_as(self.imag))
            self.input_matrix.copy_(
                torch.view_as_real(init.input_matrix).expand_as(self.input_matrix)
            )
            if self.low_rank is not None:
                self.low_rank.copy_(torch.view_as_real(init.low_rank).expand_as(self.low_rank))
            # C ~ complex standard normal (variance 1/2 per real component).
            self.output_matrix.normal_(0.0, math.sqrt(0.5))
            self.skip.normal_()
        self.output_linear.reset_parameters()

    # ------------------------------------------------------------------ SSM tensors
    def _ssm(self) -> Tuple[torch.Tensor, ...]:
        """Return ``Delta [H]``, ``Lambda, B, P [H, N/2]`` and ``C [dirs, H, N/2]``
        as float32 / complex64 (``P`` is None in diagonal mode)."""
        dt = torch.exp(self.log_dt.float())
        lam = torch.complex(-torch.exp(self.log_neg_real.float()), self.imag.float())
        B = torch.view_as_complex(self.input_matrix.float().contiguous())
        C = torch.view_as_complex(self.output_matrix.float().contiguous())
        P = None
        if self.low_rank is not None:
            P = torch.view_as_complex(self.low_rank.float().contiguous())
        return dt, lam, B, P, C

    @staticmethod
    def _with_conjugates(z: torch.Tensor) -> torch.Tensor:
        """``[..., N/2] -> [..., N]``: append the complex-conjugate half."""
        return torch.cat([z, z.conj()], dim=-1)

    def _bilinear_dense(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Full DPLR system discretised with the bilinear transform (Eq. 6).

        Returns ``A_bar [H, N, N]`` and ``B_bar [H, N]`` (complex64) for the
        ``N``-state system that includes the conjugate half.
        """
        dt, lam, B, P, _ = self._ssm()
        lam, B, P = (self._with_conjugates(t) for t in (lam, B, P))
        N = lam.shape[-1]
        eye = torch.eye(N, dtype=lam.dtype, device=lam.device)
        A = torch.diag_embed(lam) - P.unsqueeze(-1) * P.conj().unsqueeze(-2)  # [H, N, N]
        half_step = (dt / 2).to(lam.dtype)[:, None, None]
        backward = eye - half_step * A  # I - Delta/2 A
        A_bar = torch.linalg.solve(backward, eye + half_step * A)
        B_bar = torch.linalg.solve(backward, (dt.to(lam.dtype)[:, None] * B).unsqueeze(-1))
        return A_bar, B_bar.squeeze(-1)

    def _zoh_diagonal(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Diagonal system discretised with a zero-order hold.

        Returns ``A_bar [H, N/2]`` and ``B_bar [H, N/2]`` (complex64).
        """
        dt, lam, B, _, _ = self._ssm()
        dt_lam = dt[:, None] * lam
        A_bar = torch.exp(dt_lam)
        B_bar = (A_bar - 1) / lam * B
        return A_bar, B_bar

    # ---------------------------------------------------------------------- kernels
    def convolution_kernel(self, length: int) -> torch.Tensor:
        """The SSM convolution kernel ``K_bar`` of Eq. 8, truncated to ``length``.

        Arguments
        ---------
        length : int
            ``L``, the number of kernel taps (the sequence length).

        Returns
        -------
        torch.Tensor
            Real kernel, float32, ``[directions, H, L]``; direction 1 (when
            bidirectional) is applied to the time-reversed sequence.

        Example
        -------
        >>> S4(d_model=4).convolution_kernel(50).shape
        torch.Size([2, 4, 50])
        """
        if length < 1:
            raise ValueError(f"S4: kernel length must be >= 1, got {length}")
        device = self.log_dt.device
        with _float32_region(device):
            if self.mode == "dplr":
                return self._dplr_kernel(length)
            return self._diagonal_kernel(length)

    def _dplr_kernel(self, L: int) -> torch.Tensor:
        dt, lam, B, P, C = self._ssm()
        A_bar, _ = self._bilinear_dense()
        lam, B, P, C = (self._with_conjugates(t) for t in (lam, B, P, C))
        # The generating function truncated to M >= L taps, evaluated at the M-th
        # roots of unity, is the spectrum of the first M taps; its first L taps are
        # the kernel. M is an FFT-friendly length (L itself is often prime).
        M = fft_length(L)
        # Truncated generating function: C_tilde = C (I - A_bar^M).
        C_tilde = C - torch.einsum("chn,hnm->chm", C, torch.linalg.matrix_power(A_bar, M))
        directions = C.shape[0]
        numerators = torch.cat(
            [
                (C_tilde * B).transpose(0, 1),  # C_tilde B       [H, dirs, N]
                (C_tilde * P).transpose(0, 1),  # C_tilde P       [H, dirs, N]
                (P.conj() * B).unsqueeze(1),  # P^* B           [H, 1, N]
                (P.conj() * P).unsqueeze(1),  # P^* P           [H, 1, N]
            ],
            dim=1,
        )
        # Roots of unity z_k = exp(-2 pi i k / M) at the rfft frequencies, in chunks
        # so that the [H, N, frequencies] Cauchy matrix stays small for long inputs.
        k = torch.arange(M // 2 + 1, device=lam.device, dtype=torch.float32)
        spectrum = torch.cat(
            [
                self._dplr_spectrum(dt, lam, numerators, directions, -2 * math.pi * chunk / M)
                for chunk in k.split(_CHUNK)
            ],
            dim=-1,
        )  # [H, dirs, F]
        kernel = torch.fft.irfft(spectrum, n=M)[..., :L]  # [H, dirs, L]
        return kernel.transpose(0, 1).contiguous()

    @staticmethod
    def _dplr_spectrum(
        dt: torch.Tensor,
        lam: torch.Tensor,
        numerators: torch.Tensor,
        directions: int,
        angles: torch.Tensor,
    ) -> torch.Tensor:
        """Truncated generating function at ``z = exp(i * angles)``: ``[H, dirs, F]``."""
        z = torch.exp(torch.complex(torch.zeros_like(angles), angles))  # [F]
        # (1 + z)(g - lambda) with g = (2 / Delta)(1 - z)/(1 + z); finite at z = -1.
        denominator = (2 / dt).to(lam.dtype)[:, None, None] * (1 - z) - (1 + z) * lam[
            :, :, None
        ]  # [H, N, F]
        cauchy = numerators @ denominator.reciprocal()  # [H, 2 dirs + 2, F]
        k_CB = cauchy[:, :directions]
        k_CP = cauchy[:, directions : 2 * directions]
        k_PB = cauchy[:, 2 * directions : 2 * directions + 1]
        k_PP = cauchy[:, 2 * directions + 1 :]
        # Woodbury identity for the rank-one term; 2 / (1 + z) is folded into the
        # denominator above.
        return 2 * (k_CB - (1 + z) * k_CP * k_PB / (1 + (1 + z) * k_PP))

    def _diagonal_kernel(self, L: int) -> torch.Tensor:
        dt, lam, _, _, C = self._ssm()
        _, B_bar = self._zoh_diagonal()
        dt_lam = (dt[:, None] * lam).unsqueeze(-1)  # [H, N/2, 1]
        steps = torch.arange(L, device=lam.device, dtype=torch.float32)
        # Vandermonde product, in chunks of time steps to bound memory.
        return torch.cat(
            [
                2 * torch.einsum("chn,hnl->chl", C * B_bar, torch.exp(dt_lam * chunk)).real
                for chunk in steps.split(_CHUNK)
            ],
            dim=-1,
        )

    def kernel_spectrum(self, length: int) -> torch.Tensor:
        """Spectrum of the full (causal plus anti-causal) kernel for an FFT
        convolution of a length-``length`` sequence, zero-padded to
        ``fft_length(2 * length)`` samples.

        Compute it once and pass it to :meth:`forward` to apply the same layer many
        times at one length (as S4M's unfolded blocks do).

        Arguments
        ---------
        length : int
            ``L``, the sequence length.

        Returns
        -------
        torch.Tensor
            complex64, ``[H, n // 2 + 1]`` with ``n = fft_length(2 * length)``, the
            FFT length :meth:`forward` uses (``n = 2 * length`` when that is a
            product of 2, 3 and 5).

        Example
        -------
        >>> S4(d_model=4).kernel_spectrum(50).shape
        torch.Size([4, 51])
        >>> S4(d_model=4).kernel_spectrum(997).shape  # n = 2000, not 1994 = 2 * 997
        torch.Size([4, 1001])
        """
        kernel = self.convolution_kernel(length)
        with _float32_region(kernel.device):
            n = fft_length(2 * length)
            spectrum = torch.fft.rfft(kernel, n=n)  # [dirs, H, n // 2 + 1]
            if self.bidirectional:
                # Correlation with the second kernel == convolution of the reversed
                # sequence, reversed back.
                return spectrum[0] + spectrum[1].conj()
            return spectrum[0]

    # ---------------------------------------------------------------------- forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.d_model or x.shape[-1] < 1:
            raise ValueError(
                f"S4: expected input of shape [batch, {self.d_model}, time] with "
                f"time >= 1, got {tuple(x.shape)}"
            )

    def _output(self, y: torch.Tensor, dtype: torch.dtype, in_place: bool = False) -> torch.Tensor:
        """GELU, dropout, 1x1 conv ``H -> 2H`` and GLU over channels (``in_place``:
        GELU overwrites ``y``, a temporary, in inference)."""
        if in_place and not self.training:
            y = torch.ops.aten.gelu_(y, approximate=self.activation.approximate)
        else:
            y = self.dropout(self.activation(y))
        y = y.to(self.output_linear.weight.dtype)
        return F.glu(self.output_linear(y), dim=1).to(dtype)

    def forward(
        self, x: torch.Tensor, spectrum: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Apply the layer.

        Arguments
        ---------
        x : torch.Tensor
            ``[batch, H, L]``.
        spectrum : torch.Tensor, optional
            ``kernel_spectrum(L)``, ``[H, n // 2 + 1]``; computed here when omitted.

        Returns
        -------
        torch.Tensor
            ``[batch, H, L]``, of the same dtype as ``x``.
        """
        self._check_input(x)
        L = x.shape[-1]
        n = fft_length(2 * L)  # linear (not circular) convolution needs n >= 2L - 1
        if spectrum is None:
            spectrum = self.kernel_spectrum(L)
        elif spectrum.shape != (self.d_model, n // 2 + 1):
            raise ValueError(
                f"S4: spectrum must have shape [{self.d_model}, {n // 2 + 1}] (from "
                f"kernel_spectrum({L})) for an input of length {L}, got "
                f"{tuple(spectrum.shape)}"
            )
        with _float32_region(x.device):
            u = x.float()
            fast = cpu_inference_fast_path(u, self.skip)
            if fast:
                # CPU inference: D u is folded into the convolution (the kernel plus
                # D at tap 0, whose spectrum is ``spectrum + D``), which saves two
                # full-size temporaries; the product overwrites the input's spectrum.
                spectrum = spectrum + self.skip.float()[:, None]
            u_f = torch.fft.rfft(u, n=n)  # [batch, H, n // 2 + 1]
            y = torch.fft.irfft(u_f.mul_(spectrum) if fast else u_f * spectrum, n=n)[..., :L]
            if not fast:
                y = y + self.skip.float()[:, None] * u
        return self._output(y, x.dtype, in_place=fast)

    # ------------------------------------------------------------------ recurrence
    def default_state(
        self, batch_size: int, device: Optional[torch.device] = None
    ) -> torch.Tensor:
        """Zero state for :meth:`step` (unidirectional layers only).

        Returns
        -------
        torch.Tensor
            complex64 ``[batch, H, N]`` in ``"dplr"`` mode (the full conjugate-
            symmetric state), ``[batch, H, N/2]`` in ``"diag"`` mode.
        """
        self._require_causal("default_state")
        states = self.d_state if self.mode == "dplr" else self.d_state // 2
        device = self.log_dt.device if device is None else device
        return torch.zeros(
            batch_size, self.d_model, states, dtype=torch.complex64, device=device
        )

    def step(
        self, x_t: torch.Tensor, state: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One step of the recurrence ``h_k = A_bar h_{k-1} + B_bar u_k`` (Eq. 5).

        Stepping through a sequence reproduces :meth:`forward` (convolution mode).

        Arguments
        ---------
        x_t : torch.Tensor
            ``[batch, H]``, one time step.
        state : torch.Tensor
            From :meth:`default_state` or the previous call.

        Returns
        -------
        y_t : torch.Tensor
            ``[batch, H]``.
        state : torch.Tensor
            The next state.
        """
        self._require_causal("step")
        if x_t.dim() != 2 or x_t.shape[1] != self.d_model:
            raise ValueError(
                f"S4.step: expected x_t of shape [batch, {self.d_model}], "
                f"got {tuple(x_t.shape)}"
            )
        expected = self.default_state(x_t.shape[0], device=x_t.device).shape
        if state.shape != expected:
            raise ValueError(
                f"S4.step: expected state of shape {tuple(expected)}, got {tuple(state.shape)}"
            )
        with _float32_region(x_t.device):
            u = x_t.float()
            _, _, _, _, C = self._ssm()
            if self.mode == "dplr":
                A_bar, B_bar = self._bilinear_dense()
                state = torch.einsum("hnm,bhm->bhn", A_bar, state) + B_bar * u[..., None]
                y = torch.einsum("hn,bhn->bh", self._with_conjugates(C[0]), state).real
            else:
                A_bar, B_bar = self._zoh_diagonal()
                state = A_bar * state + B_bar * u[..., None]
                y = 2 * torch.einsum("hn,bhn->bh", C[0], state).real
            y = y + self.skip.float() * u
        return self._output(y.unsqueeze(-1), x_t.dtype).squeeze(-1), state

    def _require_causal(self, method: str) -> None:
        if self.bidirectional:
            raise ValueError(
                f"S4.{method}: the recurrent mode needs a unidirectional layer "
                "(bidirectional=False)"
            )
