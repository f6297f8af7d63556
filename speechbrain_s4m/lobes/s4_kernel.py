"""S4 convolution kernels: the state-space parameters and the spectrum of the kernel
they generate (state-spaces' ``s4d.py`` split: a kernel module, and the layer in
:mod:`speechbrain_s4m.lobes.s4` that applies it).

A continuous-time linear state-space model (paper Eq. 3-4)

    h'(t) = A h(t) + B u(t),        y(t) = C h(t)

discretised with a step size ``Delta`` is the recurrence ``h_l = A_bar h_{l-1} +
B_bar u_l`` (Eq. 5), whose output is the convolution of ``u`` with the kernel
``K_bar[l] = C A_bar^l B_bar`` (Eq. 7-8). Two parameterisations of ``A``:

* :class:`DPLRKernel` (S4): ``A = Lambda - P P^*`` (diagonal plus low rank) from
  HiPPO-LegS, bilinear transform (Eq. 6);
* :class:`DiagonalKernel` (S4D): ``A = Lambda``, zero-order hold.

Both evaluate the kernel in closed form, through its generating function

    K_hat(z) = sum_{l < L} C A_bar^l B_bar z^l = (C - z^L C A_bar^L) (I - A_bar z)^{-1} B_bar,

directly at the frequencies of the FFT that applies it: a Cauchy product over the
states (plus, for DPLR, a Woodbury correction for the rank-one term). No kernel taps
are materialised, and the same code gives the spectrum for any truncation ``L`` and
FFT size ``n >= L``.

Both keep ``N // 2`` complex states per channel, the other half being their complex
conjugates, so that every kernel is real. Everything runs in float32 / complex64,
also under autocast.

Legend of dimension letters: ``D`` directions (2 for a bidirectional layer), ``H``
channels, ``N`` states (``N / 2`` stored), ``L`` kernel length, ``F`` frequencies.

Authors
 * speechbrain-s4m contributors
"""

import math
from typing import NamedTuple, Tuple

import torch
from torch import nn

from speechbrain_s4m.lobes.hippo import dplr_legs
from speechbrain_s4m.lobes.precision import without_autocast

FREQUENCY_CHUNK = 2048  # frequencies per Cauchy product: bounds memory on long inputs
SSM_OPTIMIZER_SETTINGS = {"weight_decay": 0.0}  # state-spaces/s4's ``_optim`` tag


def fft_length(minimum: int) -> int:
    """The smallest ``n >= minimum`` whose only prime factors are 2, 3 and 5.

    FFTs of such lengths are several times faster than those of lengths with a large
    prime factor (the frame count of one second of audio, 997 at 16 kHz, is prime).

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
            n = power35  # smallest power-of-two multiple of power35 reaching minimum
            while n < minimum:
                n *= 2
            best = min(best, n)
            power35 *= 3
        power5 *= 5
    return best


def with_conjugates(z: torch.Tensor) -> torch.Tensor:
    """``[..., N/2] -> [..., N]``: append the complex-conjugate half."""
    return torch.cat([z, z.conj()], dim=-1)


def unit_circle(length: int, fft_size: int, device: torch.device) -> Tuple[torch.Tensor, ...]:
    """``z_k = exp(-2 pi i k / n)`` at the ``n // 2 + 1`` rfft frequencies, ``1 - z``
    (without cancellation near ``z = 1``) and ``z^length``, each complex64 ``[F]``."""
    k = torch.arange(fft_size // 2 + 1, device=device, dtype=torch.float64)
    angle = -2 * math.pi * k / fft_size
    z = torch.polar(torch.ones_like(angle), angle)
    one_minus_z = -2j * torch.sin(angle / 2) * torch.polar(torch.ones_like(angle), angle / 2)
    z_power = torch.polar(torch.ones_like(angle), angle * length)
    return z.to(torch.complex64), one_minus_z.to(torch.complex64), z_power.to(torch.complex64)


class DiscreteSSM(NamedTuple):
    """A discretised state-space system, computed once and reused by every step.

    Attributes
    ----------
    transition : torch.Tensor
        ``A_bar``: complex64 ``[H, N/2]`` (diagonal) or ``[H, N, N]`` (DPLR, with the
        conjugate half, as the low-rank term couples the states).
    input_matrix : torch.Tensor
        ``B_bar``: ``[H, N/2]`` or ``[H, N]``.
    output_matrix : torch.Tensor
        ``C``: ``[D, H, N/2]`` or ``[D, H, N]``; direction 0 is the causal one.
    feedthrough : torch.Tensor
        ``D``: float32 ``[H]``.
    conjugate_symmetric : bool
        True when only half of the states are kept: outputs are ``2 Re(C h)``.
    """

    transition: torch.Tensor
    input_matrix: torch.Tensor
    output_matrix: torch.Tensor
    feedthrough: torch.Tensor
    conjugate_symmetric: bool


class SSMKernel(nn.Module):
    """The system ``(Delta, A, B, C, D)`` and its convolution kernel. Parameters
    shared by both kernels: ``Delta`` (as ``log dt``), ``Lambda``, ``B``, ``C`` and the
    feedthrough ``D`` (``skip``; it is not part of ``K_bar``, the layer adds ``D u``);
    subclasses add their discretisation and resolvent.

    ``Lambda = -exp(log_neg_real) + i imag`` keeps ``Re(Lambda) < 0`` (stable).
    Complex parameters are stored as real views ``[..., 2]``. ``Lambda``, ``B``,
    ``P`` and ``log dt`` carry ``_optim = {"weight_decay": 0.0}`` (see
    :func:`speechbrain_s4m.training.brain.optimizer_parameter_groups`).

    Arguments
    ---------
    d_model : int
        ``H``, the number of channels; one independent SSM per channel.
    d_state : int
        ``N``, the state size of each SSM (even).
    directions : int
        ``D``: 1 (causal) or 2 (a second kernel for the time-reversed sequence).
    dt_min : float
        Lower bound of the log-uniform draw of ``Delta``.
    dt_max : float
        Upper bound of that draw.
    """

    rank_one_term = False  # whether A has the low-rank part -P P^* (parameter P)

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        directions: int = 2,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ):
        super().__init__()
        if d_model < 1:
            raise ValueError(f"S4: d_model must be >= 1, got {d_model}")
        if d_state < 2 or d_state % 2:
            raise ValueError(f"S4: d_state must be a positive even number, got {d_state}")
        if directions not in (1, 2):
            raise ValueError(f"S4: directions must be 1 or 2, got {directions}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"S4: expected 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.d_model = d_model
        self.d_state = d_state
        self.directions = directions
        self.dt_min = dt_min
        self.dt_max = dt_max
        H, half = d_model, d_state // 2
        self.log_dt = self._ssm_parameter(H)
        self.log_neg_real = self._ssm_parameter(H, half)
        self.imag = self._ssm_parameter(H, half)
        self.input_matrix = self._ssm_parameter(H, half, 2)  # B
        # P (DPLR only), registered here to keep the parameter order of checkpoints
        # (optimizer states are matched to parameters by position).
        self.register_parameter("low_rank", self._ssm_parameter(H, half, 2) if self.rank_one_term else None)
        self.output_matrix = nn.Parameter(torch.empty(directions, H, half, 2))  # C
        self.skip = nn.Parameter(torch.empty(H))  # D, the feedthrough (not in the kernel)
        self.reset_parameters()

    @staticmethod
    def _ssm_parameter(*shape: int) -> nn.Parameter:
        parameter = nn.Parameter(torch.empty(*shape))
        parameter._optim = dict(SSM_OPTIMIZER_SETTINGS)
        return parameter

    def reset_parameters(self) -> None:
        """HiPPO-LegS ``Lambda, P, B``, complex standard normal ``C``, standard normal
        ``D`` and log-uniform ``Delta`` in ``[dt_min, dt_max]``."""
        init = dplr_legs(self.d_state)
        with torch.no_grad():
            self.log_dt.uniform_(math.log(self.dt_min), math.log(self.dt_max))
            self.log_neg_real.copy_(torch.log(-init.eigenvalues.real).expand_as(self.imag))
            self.imag.copy_(init.eigenvalues.imag.expand_as(self.imag))
            self.input_matrix.copy_(torch.view_as_real(init.input_matrix).expand_as(self.input_matrix))
            if self.low_rank is not None:
                self.low_rank.copy_(torch.view_as_real(init.low_rank).expand_as(self.low_rank))
            self.output_matrix.normal_(0.0, math.sqrt(0.5))  # variance 1/2 per component
            self.skip.normal_()

    def _continuous(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``Delta [H]`` (float32), ``Lambda, B [H, N/2]`` and ``C [D, H, N/2]``
        (complex64)."""
        dt = torch.exp(self.log_dt.float())
        lam = torch.complex(-torch.exp(self.log_neg_real.float()), self.imag.float())
        B = torch.view_as_complex(self.input_matrix.float().contiguous())
        C = torch.view_as_complex(self.output_matrix.float().contiguous())
        return dt, lam, B, C

    def discretize(self) -> DiscreteSSM:
        """The discrete system of the recurrence (Eq. 5)."""
        raise NotImplementedError

    def _generating_terms(self, length: int) -> Tuple[torch.Tensor, ...]:
        """What the generating function needs at every frequency, computed once per
        call of :meth:`spectrum` (numerators of the Cauchy products, poles)."""
        raise NotImplementedError

    def _resolvent_sums(
        self, terms: Tuple[torch.Tensor, ...], z: torch.Tensor, one_minus_z: torch.Tensor
    ) -> torch.Tensor:
        """``X (I - A_bar z)^{-1} B_bar`` at the points ``z [F]`` for ``X = C`` then
        ``X = C A_bar^L``: complex64 ``[H, 2D, F]``."""
        raise NotImplementedError

    def spectrum(self, length: int, fft_size: int) -> torch.Tensor:
        """The rfft of the kernel truncated to ``length`` taps and zero-padded to
        ``fft_size`` samples, computed in closed form.

        Arguments
        ---------
        length : int
            ``L``, the number of kernel taps.
        fft_size : int
            ``n >= L``, the FFT size.

        Returns
        -------
        torch.Tensor
            complex64 ``[D, H, n // 2 + 1]``.

        Example
        -------
        >>> kernel = DiagonalKernel(d_model=4)
        >>> spectrum = kernel.spectrum(50, 128)
        >>> spectrum.shape
        torch.Size([2, 4, 65])
        >>> taps = torch.fft.rfft(kernel(50), n=128)
        >>> bool(torch.allclose(spectrum, taps, atol=1e-4))
        True
        """
        if not 1 <= length <= fft_size:
            raise ValueError(f"S4 kernel: expected 1 <= length <= fft_size, got length={length}, fft_size={fft_size}")
        device = self.log_dt.device
        with without_autocast(device):
            z, one_minus_z, z_power = unit_circle(length, fft_size, device)
            terms = self._generating_terms(length)
            sums = torch.cat(
                [
                    self._resolvent_sums(terms, *chunk)
                    for chunk in zip(z.split(FREQUENCY_CHUNK), one_minus_z.split(FREQUENCY_CHUNK))
                ],
                dim=-1,
            )  # [H, 2D, F]
            D = self.directions
            # K_hat(z) = C (I - A_bar z)^{-1} B_bar - z^L C A_bar^L (I - A_bar z)^{-1} B_bar
            return (sums[:, :D] - z_power * sums[:, D:]).transpose(0, 1)

    def forward(self, length: int) -> torch.Tensor:
        """The kernel taps ``K_bar[0 .. L-1]``: float32 ``[D, H, L]``; direction 1
        (when bidirectional) is applied to the time-reversed sequence.

        Example
        -------
        >>> DPLRKernel(d_model=4)(50).shape
        torch.Size([2, 4, 50])
        """
        if length < 1:
            raise ValueError(f"S4: kernel length must be >= 1, got {length}")
        n = fft_length(length)
        return torch.fft.irfft(self.spectrum(length, n), n=n)[..., :length]


class DiagonalKernel(SSMKernel):
    """S4D: ``A = Lambda`` diagonal, zero-order hold:
    ``A_bar = exp(Delta Lambda)``, ``B_bar = (exp(Delta Lambda) - 1) / Lambda * B``.

    The generating function is a sum of geometric series,
    ``K_hat(z) = sum_n C_n B_bar_n (1 - (A_bar_n z)^L) / (1 - A_bar_n z)`` (plus the
    conjugate states), with ``1 - A_bar z = (1 - z) - z expm1(Delta Lambda)``
    evaluated without cancellation for small steps.

    Example
    -------
    >>> DiagonalKernel(d_model=4, directions=1)(10).shape
    torch.Size([1, 4, 10])
    """

    def _expm1_dt_lambda(self) -> Tuple[torch.Tensor, ...]:
        """``Delta Lambda`` and ``exp(Delta Lambda) - 1`` (accurate for small steps),
        ``[H, N/2]``, then ``Lambda``, ``B`` and ``C`` as :meth:`_continuous` gives them."""
        dt, lam, B, C = self._continuous()
        dt_lam = dt[:, None] * lam
        a, b = dt_lam.real, dt_lam.imag
        # exp(a + ib) - 1 = expm1(a) cos b - 2 sin^2(b / 2) + i exp(a) sin b
        expm1 = torch.complex(torch.expm1(a) * torch.cos(b) - 2 * torch.sin(b / 2) ** 2, torch.exp(a) * torch.sin(b))
        return dt_lam, expm1, lam, B, C

    def discretize(self) -> DiscreteSSM:
        """``A_bar, B_bar [H, N/2]`` and ``C [D, H, N/2]`` (conjugate-symmetric).

        Example
        -------
        >>> system = DiagonalKernel(d_model=3, d_state=8).discretize()
        >>> system.transition.shape, system.output_matrix.shape
        (torch.Size([3, 4]), torch.Size([2, 3, 4]))
        """
        _, expm1, lam, B, C = self._expm1_dt_lambda()
        return DiscreteSSM(1 + expm1, expm1 / lam * B, C, self.skip.float(), True)

    def _generating_terms(self, length):
        dt_lam, expm1, lam, B, C = self._expm1_dt_lambda()
        CB = with_conjugates(C * (expm1 / lam * B))  # C_n B_bar_n, [D, H, N]
        CBA = CB * with_conjugates(torch.exp(dt_lam * length))  # ... A_bar_n^L
        return torch.cat([CB, CBA]).transpose(0, 1), with_conjugates(expm1)  # [H, 2D, N], [H, N]

    def _resolvent_sums(self, terms, z, one_minus_z):
        numerators, expm1 = terms
        # 1 / (1 - A_bar z) = 1 / ((1 - z) - z expm1(Delta Lambda)): [H, N, F]
        return numerators @ (one_minus_z - z * expm1[..., None]).reciprocal()


class DPLRKernel(SSMKernel):
    """S4: ``A = Lambda - P P^*`` (HiPPO-LegS), bilinear transform (Eq. 6).

    With ``g(z) = (2 / Delta) (1 - z) / (1 + z)``, the resolvent
    ``(I - A_bar z)^{-1} B_bar = 2 / (1 + z) (g(z) - A)^{-1} B`` of the diagonal
    part is a Cauchy product, and the rank-one term is removed with the Woodbury
    identity; ``2 / (1 + z)`` is folded into the denominators so that ``z = -1``
    stays finite.

    Example
    -------
    >>> DPLRKernel(d_model=4, directions=1)(10).shape
    torch.Size([1, 4, 10])
    """

    rank_one_term = True

    def _full_system(self) -> Tuple[torch.Tensor, ...]:
        """``Delta [H]`` and ``Lambda, B, P [H, N]``, ``C [D, H, N]`` with the
        conjugate half (the low-rank term couples all ``N`` states)."""
        dt, lam, B, C = self._continuous()
        P = torch.view_as_complex(self.low_rank.float().contiguous())
        return (dt,) + tuple(with_conjugates(t) for t in (lam, B, P, C))

    def discretize(self) -> DiscreteSSM:
        """Dense ``A_bar [H, N, N]``, ``B_bar [H, N]`` and ``C [D, H, N]``.

        Example
        -------
        >>> system = DPLRKernel(d_model=3, d_state=8).discretize()
        >>> system.transition.shape, system.output_matrix.shape
        (torch.Size([3, 8, 8]), torch.Size([2, 3, 8]))
        """
        dt, lam, B, P, C = self._full_system()
        A_bar, B_bar = self._bilinear(dt, lam, B, P)
        return DiscreteSSM(A_bar, B_bar, C, self.skip.float(), False)

    @staticmethod
    def _bilinear(
        dt: torch.Tensor, lam: torch.Tensor, B: torch.Tensor, P: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Bilinear transform (Eq. 6) of the full system: ``A_bar [H, N, N]`` and
        ``B_bar [H, N]``."""
        eye = torch.eye(lam.shape[-1], dtype=lam.dtype, device=lam.device)
        A = torch.diag_embed(lam) - P.unsqueeze(-1) * P.conj().unsqueeze(-2)  # [H, N, N]
        half_step = (dt / 2).to(lam.dtype)[:, None, None]
        backward = eye - half_step * A  # I - Delta/2 A
        # solve_ex without its error check: solve would read the LU's status on the
        # host, a synchronisation on CUDA (I - Delta/2 A is invertible for Re(lambda) < 0)
        A_bar, _ = torch.linalg.solve_ex(backward, eye + half_step * A)
        B_bar, _ = torch.linalg.solve_ex(backward, (dt.to(lam.dtype)[:, None] * B).unsqueeze(-1))
        return A_bar, B_bar.squeeze(-1)

    def _generating_terms(self, length):
        dt, lam, B, P, C = self._full_system()
        A_bar, _ = self._bilinear(dt, lam, B, P)
        A_power = torch.linalg.matrix_power(A_bar, length)
        C_late = torch.einsum("dhn,hnm->dhm", C, A_power)  # C A_bar^L
        outputs = torch.cat([C, C_late])  # [2D, H, N]
        numerators = torch.cat(
            [
                outputs * B,  # C B, C A_bar^L B   [2D, H, N]
                outputs * P,  # C P, C A_bar^L P   [2D, H, N]
                (P.conj() * B).unsqueeze(0),  # P^* B   [1, H, N]
                (P.conj() * P).unsqueeze(0),  # P^* P   [1, H, N]
            ]
        ).transpose(0, 1)  # [H, 4D + 2, N]
        return numerators, (2 / dt).to(lam.dtype)[:, None, None], lam[:, :, None]

    def _resolvent_sums(self, terms, z, one_minus_z):
        numerators, two_over_dt, lam = terms
        one_plus_z = 2 - one_minus_z
        # (1 + z)(g(z) - lambda) = (2 / Delta)(1 - z) - (1 + z) lambda: [H, N, F]
        cauchy = numerators @ (two_over_dt * one_minus_z - one_plus_z * lam).reciprocal()
        D2 = numerators.shape[1] // 2 - 1  # 2D
        k_CB, k_CP = cauchy[:, :D2], cauchy[:, D2 : 2 * D2]
        k_PB, k_PP = cauchy[:, 2 * D2 : 2 * D2 + 1], cauchy[:, 2 * D2 + 1 :]
        return 2 * (k_CB - one_plus_z * k_CP * k_PB / (1 + one_plus_z * k_PP))  # [H, 2D, F]
