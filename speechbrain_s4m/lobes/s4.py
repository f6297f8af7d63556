"""The S4 layer: a structured state-space sequence model, in pure PyTorch.

The layer applies the SSM convolution of its kernel module (:mod:`speechbrain_s4m.
lobes.s4_kernel`: ``"dplr"`` for S4 with HiPPO-LegS, ``"diag"`` for S4D) to each of its
``H`` channels by FFT in O(L log L), adds the ``D`` skip, then GELU, a 1x1 conv ``H ->
2H`` and GLU. A bidirectional layer adds a second kernel run over the time-reversed
sequence (a correlation in the same FFT). A unidirectional layer is causal and can also
be run one step at a time with :meth:`S4.step` on the discretised system.

The layer works for any length, with no preset maximum and without modifying
parameters or buffers in ``forward``; kernels and FFTs run in float32 even under
autocast. One computation serves training, inference, CPU and GPU.

Legend: ``B`` batch, ``H`` channels, ``L`` time steps, ``N`` states, ``n`` FFT size.

Authors
 * speechbrain-s4m contributors
"""

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_s4m.lobes.pointwise import PointwiseConv1d
from speechbrain_s4m.lobes.s4_kernel import (
    DiagonalKernel,
    DiscreteSSM,
    DPLRKernel,
    SSMKernel,
    fft_length,
)

__all__ = ["S4", "fft_length"]

KERNELS = {"dplr": DPLRKernel, "diag": DiagonalKernel}
# Parameters that lived on the layer before the kernel module was split off.
_KERNEL_PARAMETERS = ("log_dt", "log_neg_real", "imag", "input_matrix", "low_rank", "output_matrix", "skip")


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
        if mode not in KERNELS:
            raise ValueError(f"S4: mode must be one of {tuple(KERNELS)}, got {mode!r}")
        self.bidirectional = bidirectional
        self.mode = mode
        self.kernel: SSMKernel = KERNELS[mode](d_model, d_state, 2 if bidirectional else 1, dt_min, dt_max)
        self.d_model = d_model
        self.d_state = d_state
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.output_linear = PointwiseConv1d(d_model, 2 * d_model)
        self._register_load_state_dict_pre_hook(self._move_kernel_parameters)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """(Re-)initialise every parameter: the system's (HiPPO-LegS ``Lambda, P, B``,
        random ``C`` and ``D``, log-uniform ``Delta``) and the output projection."""
        self.kernel.reset_parameters()
        self.output_linear.reset_parameters()

    @staticmethod
    def _move_kernel_parameters(state_dict: Dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Load state dicts saved before the kernel module was split off: their SSM
        parameters sit on the layer (``s4.log_dt``), now on ``s4.kernel.log_dt``. The
        parameters keep their order (``kernel.*`` with ``D`` last, then
        ``output_linear``), so optimizer states saved then still match by position."""
        for name in _KERNEL_PARAMETERS:
            if prefix + name in state_dict:
                state_dict[prefix + "kernel." + name] = state_dict.pop(prefix + name)

    def convolution_kernel(self, length: int) -> torch.Tensor:
        """The SSM convolution kernel ``K_bar`` of Eq. 8, truncated to ``length`` taps:
        float32 ``[directions, H, L]`` (see :class:`~speechbrain_s4m.lobes.s4_kernel.
        SSMKernel`).

        Example
        -------
        >>> S4(d_model=4).convolution_kernel(50).shape
        torch.Size([2, 4, 50])
        """
        return self.kernel(length)

    def kernel_spectrum(self, length: int) -> torch.Tensor:
        """Spectrum of the whole convolution the layer applies to a length-``length``
        sequence: causal kernel, plus the anti-causal one when bidirectional, plus the
        ``D`` skip at lag 0, at the rfft frequencies of ``n = fft_length(2 * length)``
        points (enough for a linear, not circular, convolution).

        Compute it once and pass it to :meth:`forward` to apply the same layer many
        times at one length (as S4M's unfolded blocks do).

        Returns
        -------
        torch.Tensor
            complex64, ``[H, n // 2 + 1]``.

        Example
        -------
        >>> S4(d_model=4).kernel_spectrum(50).shape
        torch.Size([4, 51])
        >>> S4(d_model=4).kernel_spectrum(997).shape  # n = 2000, not 1994 = 2 * 997
        torch.Size([4, 1001])
        """
        if length < 1:
            raise ValueError(f"S4: kernel length must be >= 1, got {length}")
        with _float32_region(self.kernel.skip.device):
            # The taps come from the generating function at fft_length(L) points, half
            # as many Cauchy evaluations as at the n points of the convolution.
            spectrum = torch.fft.rfft(self.kernel(length), n=fft_length(2 * length))
            feedthrough = self.kernel.skip.float()[:, None]  # D u: D at lag 0
            if self.bidirectional:
                # Correlation with the second kernel == convolution of the reversed
                # sequence, reversed back.
                return spectrum[0] + spectrum[1].conj() + feedthrough
            return spectrum[0] + feedthrough

    # ---------------------------------------------------------------------- forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.d_model or x.shape[-1] < 1:
            raise ValueError(
                f"S4: expected input of shape [batch, {self.d_model}, time] with time >= 1, got {tuple(x.shape)}"
            )

    def _output(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """GELU, dropout, 1x1 conv ``H -> 2H`` and GLU over channels."""
        y = self.dropout(self.activation(y)).to(self.output_linear.weight.dtype)
        return F.glu(self.output_linear(y), dim=1).to(dtype)

    def forward(self, x: torch.Tensor, spectrum: Optional[torch.Tensor] = None) -> torch.Tensor:
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
            u_f = torch.fft.rfft(x.float(), n=n)  # [B, H, n // 2 + 1]
            y = torch.fft.irfft(u_f * spectrum, n=n)[..., :L]  # [B, H, L]
        return self._output(y, x.dtype)

    # ------------------------------------------------------------------ recurrence
    def discrete_system(self) -> DiscreteSSM:
        """The discretised system for :meth:`step`: compute it once per sequence."""
        self._require_causal("discrete_system")
        with _float32_region(self.kernel.skip.device):
            return self.kernel.discretize()

    def default_state(self, batch_size: int, device: Optional[torch.device] = None) -> torch.Tensor:
        """Zero state for :meth:`step` (unidirectional layers only).

        Returns
        -------
        torch.Tensor
            complex64 ``[batch, H, N]`` in ``"dplr"`` mode (the full conjugate-
            symmetric state), ``[batch, H, N/2]`` in ``"diag"`` mode.
        """
        self._require_causal("default_state")
        states = self.d_state if self.mode == "dplr" else self.d_state // 2
        device = self.kernel.skip.device if device is None else device
        return torch.zeros(batch_size, self.d_model, states, dtype=torch.complex64, device=device)

    def step(
        self, x_t: torch.Tensor, state: torch.Tensor, system: Optional[DiscreteSSM] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One step of the recurrence ``h_k = A_bar h_{k-1} + B_bar u_k`` (Eq. 5),
        ``y_k = C h_k + D u_k``, then the layer's output map.

        Stepping through a sequence reproduces :meth:`forward` (convolution mode).

        Arguments
        ---------
        x_t : torch.Tensor
            ``[batch, H]``, one time step.
        state : torch.Tensor
            From :meth:`default_state` or the previous call.
        system : DiscreteSSM, optional
            :meth:`discrete_system`, computed once for all steps; computed here when
            omitted.

        Returns
        -------
        y_t : torch.Tensor
            ``[batch, H]``.
        state : torch.Tensor
            The next state.
        """
        self._require_causal("step")
        if x_t.dim() != 2 or x_t.shape[1] != self.d_model:
            raise ValueError(f"S4.step: expected x_t of shape [batch, {self.d_model}], got {tuple(x_t.shape)}")
        expected = self.default_state(x_t.shape[0], device=x_t.device).shape
        if state.shape != expected:
            raise ValueError(f"S4.step: expected state of shape {tuple(expected)}, got {tuple(state.shape)}")
        if system is None:
            system = self.discrete_system()
        with _float32_region(x_t.device):
            u = x_t.float()
            A_bar, B_bar, C, D, halved = system
            if A_bar.dim() == 3:  # dense transition (DPLR)
                state = torch.einsum("hnm,bhm->bhn", A_bar, state) + B_bar * u[..., None]
            else:
                state = A_bar * state + B_bar * u[..., None]
            y = torch.einsum("hn,bhn->bh", C[0], state).real * (2 if halved else 1)
            y = y + D * u
        return self._output(y.unsqueeze(-1), x_t.dtype).squeeze(-1), state

    def _require_causal(self, method: str) -> None:
        if self.bidirectional:
            raise ValueError(f"S4.{method}: the recurrent mode needs a unidirectional layer (bidirectional=False)")
