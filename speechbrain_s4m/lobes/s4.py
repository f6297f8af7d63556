"""The S4 layer: a structured state-space sequence model, in pure PyTorch.

The layer applies the SSM convolution of its kernel module (:mod:`speechbrain_s4m.
lobes.s4_kernel`: ``"dplr"`` for S4 with HiPPO-LegS, ``"diag"`` for S4D) to each of its
``H`` channels by FFT in O(L log L), adds the ``D`` skip, then GELU, a 1x1 conv ``H ->
2H`` and GLU. A bidirectional layer adds a second kernel run over the time-reversed
sequence (a correlation in the same FFT). A unidirectional layer is causal and can also
be run chunk by chunk, carrying its state, with :meth:`S4.forward_recurrent`: the
recurrence of :mod:`speechbrain_s4m.lobes.s4_recurrence`, in real arithmetic.

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
from speechbrain_s4m.lobes.precision import without_autocast
from speechbrain_s4m.lobes.s4_kernel import DiagonalKernel, DPLRKernel, SSMKernel, fft_length
from speechbrain_s4m.lobes.s4_recurrence import (
    MAX_CHUNK,
    MAX_SCAN_STEPS,
    ChunkScan,
    SSMRecurrence,
    real_system,
    stacked,
)

__all__ = ["S4", "ScannedS4", "fft_length"]

KERNELS = {"dplr": DPLRKernel, "diag": DiagonalKernel}
# Parameters that lived on the layer before the kernel module was split off.
_KERNEL_PARAMETERS = ("log_dt", "log_neg_real", "imag", "input_matrix", "low_rank", "output_matrix", "skip")


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
        outputs are summed (non-causal). If False, the layer is causal and can also be run
        chunk by chunk, carrying its state, with :meth:`forward_recurrent`.
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
    >>> recurrence = causal.recurrence()  # the discretised system, once
    >>> y_first, state = causal.forward_recurrent(x[..., :60], None, recurrence)
    >>> y_rest, state = causal.forward_recurrent(x[..., 60:], state, recurrence)
    >>> bool(torch.allclose(torch.cat([y_first, y_rest], -1), causal(x), atol=1e-5))
    True
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
        with without_autocast(self.kernel.skip.device):
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
        with without_autocast(x.device):
            u_f = torch.fft.rfft(x.float(), n=n)  # [B, H, n // 2 + 1]
            y = torch.fft.irfft(u_f * spectrum, n=n)[..., :L]  # [B, H, L]
        return self._output(y, x.dtype)

    # ------------------------------------------------------------------ recurrence
    def recurrence(self) -> SSMRecurrence:
        """The layer's SSM as a chunked real recurrence (unidirectional layers only),
        from the discretised system computed once: build it once per stream and pass
        it to every :meth:`forward_recurrent` call."""
        self._require_causal("recurrence")
        with without_autocast(self.kernel.skip.device):
            return SSMRecurrence(self.kernel.discretize())

    def forward_recurrent(
        self, x: torch.Tensor, state: Optional[torch.Tensor], recurrence: SSMRecurrence
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Apply the layer to the next ``L`` frames of a sequence, carrying the SSM
        state: stepping through a sequence in chunks of any lengths reproduces
        :meth:`forward` on the whole of it.

        Arguments
        ---------
        x : torch.Tensor
            ``[batch, H, L]``, the next frames.
        state : torch.Tensor, optional
            ``[batch, H, N]`` from the previous call; None (zero) at the start.
        recurrence : SSMRecurrence
            :meth:`recurrence`.

        Returns
        -------
        y : torch.Tensor
            ``[batch, H, L]``.
        state : torch.Tensor
            The state after the last frame.
        """
        self._require_causal("forward_recurrent")
        self._check_input(x)
        if state is None:
            state = recurrence.initial_state(x.shape[0])
        with without_autocast(x.device):
            y, state = recurrence(x, state)
        return self._output(y, x.dtype), state

    def _require_causal(self, method: str) -> None:
        if self.bidirectional:
            raise ValueError(f"S4.{method}: the recurrent mode needs a unidirectional layer (bidirectional=False)")


class ScannedS4(nn.Module):
    """An S4 layer whose SSM is evaluated by chunk scans (:class:`~speechbrain_s4m.
    lobes.s4_recurrence.ChunkScan`) instead of FFT convolution: the same function, in
    real arithmetic only, with operators fixed from the layer's discretised system. It
    takes the layer's place where FFTs and complex numbers are not available (an ONNX
    graph); the GELU, 1x1 conv and GLU are the layer's own. A bidirectional layer's
    anti-causal kernel is the same scan on the time-reversed sequence.

    It answers the offline interface of :class:`S4` (``forward(x, spectrum)``,
    ``kernel_spectrum``), so that it replaces a layer inside a mask network unchanged.

    Arguments
    ---------
    layer : S4
        The trained layer (held, not copied).
    chunk : int
        Frames per chunk of the scan.
    steps : int
        Doubling steps of the scan: inputs of up to ``chunk * 2^steps`` frames.

    Example
    -------
    >>> layer = S4(d_model=4, d_state=8)
    >>> x = torch.randn(2, 4, 300)
    >>> bool(torch.allclose(ScannedS4(layer)(x), layer(x), atol=1e-5))
    True
    """

    def __init__(self, layer: S4, chunk: int = MAX_CHUNK, steps: int = MAX_SCAN_STEPS):
        super().__init__()
        self.layer = layer
        with torch.no_grad(), without_autocast(layer.kernel.skip.device):
            system = layer.kernel.discretize()
            directions = 2 if layer.bidirectional else 1
            # Both directions of a bidirectional layer in one scan, their channels stacked.
            self.scan = ChunkScan(stacked([real_system(system, d) for d in range(directions)]), chunk, steps)

    @property
    def max_frames(self) -> int:
        """The longest input the scan covers."""
        return self.scan.max_frames

    def kernel_spectrum(self, length: int) -> None:
        """No spectrum: the scans need none (see :meth:`S4.kernel_spectrum`)."""
        return None

    def forward(self, x: torch.Tensor, spectrum: None = None) -> torch.Tensor:
        """``[batch, H, L] -> [batch, H, L]``, as :meth:`S4.forward`."""
        self.layer._check_input(x)
        if self.layer.bidirectional:  # the anti-causal kernel is the causal scan of the reversed input
            forward, backward = self.scan(torch.cat([x, x.flip(-1)], 1)).chunk(2, dim=1)
            y = forward + backward.flip(-1)
        else:
            y = self.scan(x)
        return self.layer._output(y, x.dtype)
