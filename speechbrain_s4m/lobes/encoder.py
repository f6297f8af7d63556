"""The S4M waveform encoder: a learned filterbank applied to the raw waveform.

Authors
 * speechbrain-s4m contributors
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_s4m.frame_geometry import encoder_frames


class WaveformEncoder(nn.Conv1d):
    """Conv1d(1 -> E, kernel K, stride K // 4, no bias), no activation.

    In S4M, ``K`` is 4 ms of samples (32 at 8 kHz, 64 at 16 kHz) and ``E = K // 2 + 1``
    basis channels. Like SpeechBrain's ``Encoder``, it maps waveforms ``[batch, time]``
    to ``[batch, E, frames]``. The end of the signal is zero-padded so that the last
    frame reaches the last sample: SpeechBrain's ``Decoder`` (ConvTranspose1d with the
    same kernel and stride) then returns at least ``time`` samples, which the
    separation pipeline trims to the mixture length.

    Arguments
    ---------
    kernel_size : int
        ``K``, the filter length in samples (at least 4).
    out_channels : int, optional
        ``E``, the number of basis filters; defaults to ``kernel_size // 2 + 1``.

    Example
    -------
    >>> encoder = WaveformEncoder(kernel_size=32)
    >>> mix = torch.randn(2, 8000)  # [batch, time], 1 s at 8 kHz
    >>> encoder(mix).shape  # [batch, E, frames]
    torch.Size([2, 17, 997])
    """

    def __init__(self, kernel_size: int, out_channels: Optional[int] = None):
        if kernel_size < 4:
            raise ValueError(
                f"WaveformEncoder: kernel_size must be >= 4 (stride is kernel_size // 4), got {kernel_size}"
            )
        if out_channels is None:
            out_channels = kernel_size // 2 + 1
        super().__init__(
            in_channels=1,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=kernel_size // 4,
            bias=False,
        )

    def reset_parameters(self) -> None:
        """Xavier-uniform filters, as in the authors' code. SpeechBrain's recipes call
        this on every module before training."""
        nn.init.xavier_uniform_(self.weight)

    def inverse_filters(self) -> torch.Tensor:
        """Filters ``[E, 1, K]`` of a ``ConvTranspose1d`` with this kernel and stride
        (SpeechBrain's ``Decoder``) that inverts this encoder: decoding the encoding
        returns the input, except in the first and last ``K - S`` samples, which fewer
        frames cover. They are the minimum-norm solution of the perfect-reconstruction
        equations. With ``D`` the decoder's and ``W`` the encoder's filters,
        ``G = D^T W`` (``[K, K]``) must satisfy, for every phase ``p < S`` and lag
        ``m``, ``sum_j G[p + jS, p + jS + m] = [m == 0]`` over the ``K / S`` frames
        ``j`` that overlap (indices outside ``[0, K)`` drop out). Each phase is one
        least-squares problem in the columns ``D[:, p + jS]``, solved in float64.

        Example
        -------
        >>> encoder = WaveformEncoder(kernel_size=32)
        >>> decoder = nn.ConvTranspose1d(17, 1, kernel_size=32, stride=8, bias=False)
        >>> with torch.no_grad():
        ...     _ = decoder.weight.copy_(encoder.inverse_filters())
        >>> x = torch.randn(1, 800)
        >>> y = decoder(encoder(x))[0, 0, :800]  # [time]
        >>> bool(torch.allclose(y[24:-24], x[0, 24:-24], atol=1e-4))
        True
        """
        (K,), (S,) = self.kernel_size, self.stride
        if K % S:
            raise ValueError(f"WaveformEncoder.inverse_filters: kernel_size {K} is not a multiple of the stride {S}")
        W = self.weight.detach().double()[:, 0]  # [E, K]
        E, J = W.shape[0], K // S  # J frames overlap each sample
        padded = F.pad(W, (K, K))  # [E, 3K]: column c + K is w_c, zero outside [0, K)
        D = torch.empty_like(W)
        lags = torch.arange(-K + 1, K, device=W.device)  # m
        for p in range(S):
            rows = p + S * torch.arange(J, device=W.device)  # [J]: the rows p + jS of G
            # system[m, j, e] = W[e, p + jS + m]: the lag-m equation's coefficients of D[e, p + jS]
            system = padded[:, (rows[None, :] + lags[:, None]) + K].permute(1, 2, 0)  # [M, J, E]
            target = (lags == 0).double()[:, None]  # [M, 1]
            solution = torch.linalg.pinv(system.reshape(len(lags), J * E)) @ target  # [J * E, 1]
            D[:, rows] = solution.view(J, E).T
        return D.to(self.weight.dtype)[:, None]  # [E, 1, K]

    def num_frames(self, num_samples: int) -> int:
        """Number of frames produced for ``num_samples`` input samples."""
        return encoder_frames(num_samples, self.kernel_size[0], self.stride[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode waveforms.

        Arguments
        ---------
        x : torch.Tensor
            ``[batch, time]`` with ``time >= kernel_size``.

        Returns
        -------
        torch.Tensor
            ``[batch, E, frames]``, with ``frames = ceil((time - K) / S) + 1``.
        """
        (K,), (S,) = self.kernel_size, self.stride
        if x.dim() != 2:
            raise ValueError(f"WaveformEncoder: expected a waveform batch of shape [batch, time], got {tuple(x.shape)}")
        T = x.shape[-1]
        if T < K:
            raise ValueError(
                f"WaveformEncoder: input of {T} samples is shorter than one encoder "
                f"kernel ({K} samples); got shape {tuple(x.shape)}, expected "
                f"[batch, time >= {K}]"
            )
        pad = (K - T) % S  # (num_frames(T) - 1) * S + K - T, for T >= K
        x = F.pad(x, (0, pad)).unsqueeze(1)  # [batch, 1, time + pad]
        return super().forward(x)
