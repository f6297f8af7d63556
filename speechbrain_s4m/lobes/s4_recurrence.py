"""The S4 recurrence in real arithmetic, evaluated a chunk of frames at a time.

A unidirectional S4 layer is the recurrence (paper Eq. 5)

    h_t = A_bar h_{t-1} + B_bar u_t,        y_t = C h_t + D u_t,

whose complex states come in conjugate pairs, so that in the real basis
``x = (Re h, Im h)`` of the ``N / 2`` stored states the same system has real matrices
``A [H, N, N]``, ``B [H, N]`` and ``C [H, N]`` (:func:`real_system`). Over a chunk of
``m`` frames that starts from the state ``x0``,

    y[t]  = sum_{j <= t} K[t - j] u[j] + D u[t] + O[t] x0,   K[k] = C A^k B,  O[t] = C A^(t+1)
    x_end = A^m x0 + sum_j G[j] u[j],                        G[j] = A^(m-1-j) B,

two matrix products per chunk (:class:`ChunkOperators`). The operators are computed
once per chunk length, in float64, from the discretised system; applying them needs no
complex numbers and no FFT, so the stream of :mod:`speechbrain_s4m.inference.streaming` and an
exported graph evaluate the layer with the same code. The layer's own forward pass
computes the same function by FFT convolution (:class:`~speechbrain_s4m.lobes.s4.S4`);
the tests check that the two agree.

Legend: ``B`` batch, ``H`` channels, ``N`` real states (twice the stored complex
states), ``m`` frames of a chunk.

Authors
 * speechbrain-s4m contributors
"""

from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_s4m.lobes.s4_kernel import DiscreteSSM, with_conjugates

__all__ = ["ChunkOperators", "ChunkScan", "RealSSM", "SSMRecurrence", "chunk_lengths", "real_system", "stacked"]

MAX_CHUNK = 64  # frames per pair of matrix products (a power of two); longer inputs are split


class RealSSM(NamedTuple):
    """A discretised system in the real basis of its conjugate-pair states, float64.

    Attributes
    ----------
    transition : torch.Tensor
        ``A [H, N, N]``.
    input_matrix : torch.Tensor
        ``B [H, N]``.
    output_matrix : torch.Tensor
        ``C [H, N]`` of the causal direction.
    feedthrough : torch.Tensor
        ``D [H]``.
    """

    transition: torch.Tensor
    input_matrix: torch.Tensor
    output_matrix: torch.Tensor
    feedthrough: torch.Tensor


def real_system(system: DiscreteSSM, direction: int = 0) -> RealSSM:
    """One direction of ``system`` (0, the causal one, with the ``D`` skip; 1, the
    anti-causal kernel of a bidirectional layer, without it) in the basis
    ``x = (Re h, Im h)`` of its ``N / 2`` stored states, where the full state is
    ``h = T x``, ``T = [[I, iI], [I, -iI]]``: ``A = T^-1 A_bar T``, ``B = T^-1 B_bar``,
    ``C = C T``. A diagonal (S4D) system is first written with its conjugate half.

    Example
    -------
    >>> from speechbrain_s4m.lobes.s4_kernel import DiagonalKernel
    >>> system = real_system(DiagonalKernel(d_model=3, d_state=8).discretize())
    >>> system.transition.shape, system.transition.dtype
    (torch.Size([3, 8, 8]), torch.float64)
    """
    transition, input_matrix, output_matrix, feedthrough, halved = system
    transition, input_matrix = transition.detach().cdouble(), input_matrix.detach().cdouble()
    if not 0 <= direction < output_matrix.shape[0]:
        raise ValueError(
            f"real_system: the system has {output_matrix.shape[0]} direction(s), got direction {direction}"
        )
    output_matrix = output_matrix.detach().cdouble()[direction]
    if halved:  # diagonal: y = 2 Re(C h) = [C, conj C] [h; conj h]
        transition = torch.diag_embed(with_conjugates(transition))
        input_matrix = with_conjugates(input_matrix)
        output_matrix = with_conjugates(output_matrix)
    half = transition.shape[-1] // 2
    eye = torch.eye(half, dtype=transition.dtype, device=transition.device)
    T = torch.cat([torch.cat([eye, 1j * eye], 1), torch.cat([eye, -1j * eye], 1)], 0)  # [N, N]
    T_inv = 0.5 * torch.cat([torch.cat([eye, eye], 1), torch.cat([-1j * eye, 1j * eye], 1)], 0)
    return RealSSM(
        (T_inv @ transition @ T).real,
        (input_matrix @ T_inv.T).real,
        (output_matrix @ T).real,
        feedthrough.detach().double() * (direction == 0),
    )


class ChunkOperators(NamedTuple):
    """The two matrices that advance the real system over ``m`` frames, acting on the
    stacked column ``s = [x0; u[0 .. m-1]]`` of each channel (``[H, N + m, B]``).

    Attributes
    ----------
    output : torch.Tensor
        ``[H, m, N + m]``: ``y = output @ s``, i.e. ``[O | Toeplitz(K) + D I]``.
    state : torch.Tensor
        ``[H, N, N + m]``: ``x_end = state @ s``, i.e. ``[A^m | G]``.
    """

    output: torch.Tensor
    state: torch.Tensor

    @classmethod
    def build(cls, system: RealSSM, length: int, dtype: torch.dtype = torch.float32) -> "ChunkOperators":
        """The operators of a chunk of ``length`` frames, computed in float64.

        Example
        -------
        >>> from speechbrain_s4m.lobes.s4_kernel import DPLRKernel
        >>> system = real_system(DPLRKernel(d_model=3, d_state=8, directions=1).discretize())
        >>> operators = ChunkOperators.build(system, 5)
        >>> operators.output.shape, operators.state.shape
        (torch.Size([3, 5, 13]), torch.Size([3, 8, 13]))
        """
        if length < 1:
            raise ValueError(f"ChunkOperators: expected a chunk of at least 1 frame, got {length}")
        A, B, C, D = system
        H, N = B.shape
        powers_B = [B]  # A^k B, k = 0 .. m-1: [H, N] each
        observers = [torch.einsum("hn,hnk->hk", C, A)]  # C A^(t+1), t = 0 .. m-1
        for _ in range(length - 1):
            powers_B.append(torch.einsum("hnk,hk->hn", A, powers_B[-1]))
            observers.append(torch.einsum("hn,hnk->hk", observers[-1], A))
        taps = torch.einsum("hn,khn->hk", C, torch.stack(powers_B))  # K[k] = C A^k B: [H, m]
        taps[:, 0] += D
        frames = torch.arange(length, device=taps.device)
        lag = frames[:, None] - frames[None, :]  # t - j
        toeplitz = torch.where(lag >= 0, taps[:, lag.clamp(min=0)], taps.new_zeros(()))  # [H, m, m]
        output = torch.cat([torch.stack(observers, 1), toeplitz], -1)  # [H, m, N + m]
        gathered = torch.stack(powers_B[::-1], -1)  # G[j] = A^(m-1-j) B: [H, N, m]
        state = torch.cat([torch.linalg.matrix_power(A, length), gathered], -1)  # [H, N, N + m]
        return cls(output.to(dtype), state.to(dtype))

    def apply(self, u: torch.Tensor, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``u [B, H, m]`` from ``state [B, H, N]`` -> ``y [B, H, m]`` and the state
        after the chunk."""
        stacked = torch.cat([state, u], -1).permute(1, 2, 0)  # s: [H, N + m, B]
        y = torch.bmm(self.output, stacked).permute(2, 0, 1)  # [B, H, m]
        return y, torch.bmm(self.state, stacked).permute(2, 0, 1)  # [B, H, N]


def chunk_lengths(length: int, max_chunk: int = MAX_CHUNK) -> List[int]:
    """Split ``length`` frames into chunks whose lengths are powers of two up to
    ``max_chunk`` (whole ``max_chunk`` chunks, then the binary digits of the rest), so
    that a recurrence needs the operators of at most ``log2(max_chunk) + 1`` lengths.

    Example
    -------
    >>> chunk_lengths(150), chunk_lengths(16), chunk_lengths(0)
    ([64, 64, 16, 4, 2], [16], [])
    """
    lengths = [max_chunk] * (length // max_chunk)
    rest = length % max_chunk
    return lengths + [1 << bit for bit in range(rest.bit_length() - 1, -1, -1) if rest >> bit & 1]


class SSMRecurrence:
    """A causal S4 layer's SSM as a recurrence over inputs of any length, in chunks of
    power-of-two lengths up to ``max_chunk`` frames (:func:`chunk_lengths`), with the
    operators of each chunk length built once.

    Arguments
    ---------
    system : DiscreteSSM
        The layer's discretised system (computed once).
    max_chunk : int
        Frames per pair of matrix products, a power of two (memory and work per
        frame grow with it).

    Example
    -------
    >>> from speechbrain_s4m.lobes.s4_kernel import DiagonalKernel
    >>> recurrence = SSMRecurrence(DiagonalKernel(d_model=3, d_state=8, directions=1).discretize())
    >>> state = recurrence.initial_state(batch_size=2)
    >>> y, state = recurrence(torch.randn(2, 3, 100), state)
    >>> y.shape, state.shape
    (torch.Size([2, 3, 100]), torch.Size([2, 3, 8]))
    """

    def __init__(self, system: DiscreteSSM, max_chunk: int = MAX_CHUNK):
        if max_chunk < 1 or max_chunk & (max_chunk - 1):
            raise ValueError(f"SSMRecurrence: max_chunk must be a power of two, got {max_chunk}")
        self.system = real_system(system)
        self.max_chunk = max_chunk
        self.device = self.system.transition.device
        self._operators: Dict[int, ChunkOperators] = {}

    @property
    def channels(self) -> int:
        return self.system.input_matrix.shape[0]

    @property
    def states(self) -> int:
        return self.system.input_matrix.shape[1]

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """The zero state: float32 ``[batch, H, N]``."""
        return torch.zeros(batch_size, self.channels, self.states, device=self.device)

    def operators(self, length: int) -> ChunkOperators:
        """The operators of a chunk of ``length`` frames (built on first use)."""
        if length not in self._operators:
            self._operators[length] = ChunkOperators.build(self.system, length)
        return self._operators[length]

    def __call__(self, u: torch.Tensor, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``u [B, H, L]`` from ``state [B, H, N]`` -> the SSM output (``D`` skip
        included) ``[B, H, L]`` and the state after the last frame."""
        expected = (u.shape[0], self.channels, self.states)
        if u.dim() != 3 or u.shape[1] != self.channels or tuple(state.shape) != expected:
            raise ValueError(
                f"SSMRecurrence: expected u [batch, {self.channels}, frames] and a state of shape "
                f"{list(expected)}, got {tuple(u.shape)} and {tuple(state.shape)}"
            )
        outputs = []
        for chunk in u.float().split(chunk_lengths(u.shape[-1], self.max_chunk), dim=-1):
            y, state = self.operators(chunk.shape[-1]).apply(chunk, state)
            outputs.append(y)
        return torch.cat(outputs, -1), state


def delayed(
    x: torch.Tensor, shift: int, then: Callable[[torch.Tensor], torch.Tensor] = lambda kept: kept
) -> torch.Tensor:
    """``x [..., c, N]`` delayed by ``shift`` chunks along ``c``, zeros first (any
    ``shift``, also beyond ``c``): the first ``c - min(shift, c)`` chunks, mapped by
    ``then`` (which keeps the chunk axis), after ``min(shift, c)`` zero chunks. ``then``
    works on the kept chunks only, none once ``shift >= c``. The minimum is symbolic
    (``torch.sym_min``), so that an exported graph works for every ``c`` and never
    builds more than ``c`` chunks.

    Example
    -------
    >>> delayed(torch.arange(3.0).view(3, 1), 1).flatten(), delayed(torch.ones(3, 1), 5).flatten()
    (tensor([0., 0., 1.]), tensor([0., 0., 0.]))
    >>> delayed(torch.arange(3.0).view(3, 1), 2, then=lambda kept: kept + 10).flatten()
    tensor([ 0.,  0., 10.])
    """
    chunks = x.shape[-2]
    zeros = torch.sym_min(shift, chunks)
    return F.pad(then(x[..., : chunks - zeros, :]), (0, 0, zeros, 0))


def stacked(systems: Sequence[RealSSM]) -> RealSSM:
    """Several systems as one, their channels side by side (``H`` the sum of theirs), so
    that one :class:`ChunkScan` evaluates them all (both directions of a layer).

    Example
    -------
    >>> from speechbrain_s4m.lobes.s4_kernel import DPLRKernel
    >>> system = DPLRKernel(d_model=3, d_state=8, directions=2).discretize()
    >>> stacked([real_system(system, 0), real_system(system, 1)]).transition.shape
    torch.Size([6, 8, 8])
    """
    return RealSSM(*(torch.cat(parts) for parts in zip(*systems)))


MAX_SCAN_STEPS = 16  # ChunkScan's doubling steps: sequences of up to MAX_CHUNK * 2^16 frames


class ChunkScan(nn.Module):
    """The causal SSM over a whole sequence of any length from the zero state, with the
    chunk operators of :class:`ChunkOperators` applied to every chunk at once: a graph
    of fixed operations for every length (real arithmetic, no FFT, no loop over the
    sequence), as an exported graph needs.

    The sequence is zero-padded to ``c`` chunks of ``m`` frames. Each chunk's end state
    from the zero state is ``G u``; the state at the start of every chunk follows by a
    parallel prefix scan of ``x_c = A^m x_(c-1) + G u_(c-1)`` in ``steps`` doubling
    steps (step ``k`` adds ``(A^m)^(2^k)`` times the partial sums ``2^k`` chunks back),
    and the outputs by ``[O | Toeplitz(K) + D]`` on ``[x_c; u_c]``. Every operator is
    computed once, in float64, and kept as a float32 buffer.

    Arguments
    ---------
    system : RealSSM
        One direction of a discretised system (:func:`real_system`).
    chunk : int
        ``m``, frames per chunk.
    steps : int
        Doubling steps of the scan: sequences of up to ``m * 2^steps`` frames
        (:attr:`max_frames`).

    Example
    -------
    >>> from speechbrain_s4m.lobes.s4_kernel import DiagonalKernel
    >>> system = DiagonalKernel(d_model=3, d_state=8, directions=1).discretize()
    >>> scan = ChunkScan(real_system(system))
    >>> u = torch.randn(2, 3, 150)
    >>> y, _ = SSMRecurrence(system)(u, torch.zeros(2, 3, 8))
    >>> scan(u).shape, bool(torch.allclose(scan(u), y, atol=1e-5))
    (torch.Size([2, 3, 150]), True)
    """

    def __init__(self, system: RealSSM, chunk: int = MAX_CHUNK, steps: int = MAX_SCAN_STEPS):
        super().__init__()
        operators = ChunkOperators.build(system, chunk)
        states = system.input_matrix.shape[1]
        jump = torch.linalg.matrix_power(system.transition, chunk)  # A^m: [H, N, N]
        jumps = [jump]
        for _ in range(steps - 1):
            jumps.append(jumps[-1] @ jumps[-1])
        self.chunk = chunk
        self.steps = steps
        # Transposed, to multiply rows of frames: [x0; u]^T [O | Toeplitz(K) + D]^T and so on.
        self.register_buffer("output", operators.output.transpose(1, 2).contiguous())  # [H, N + m, m]
        self.register_buffer("gather", operators.state[..., states:].transpose(1, 2).contiguous())  # G^T: [H, m, N]
        self.register_buffer("jumps", torch.stack(jumps).transpose(2, 3).float().contiguous())  # [steps, H, N, N]

    @property
    def max_frames(self) -> int:
        """The longest sequence the scan covers."""
        return self.chunk << self.steps

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``u [B, H, L]`` -> the SSM output (``D`` skip included) ``[B, H, L]``."""
        batch, channels, length = u.shape
        chunks = (length + self.chunk - 1) // self.chunk  # c
        m, N = self.chunk, self.gather.shape[-1]
        u = F.pad(u.float(), (0, chunks * m - length)).view(batch, channels, chunks, m).transpose(0, 1)  # [H, B, c, m]
        # Channel-batched matrix products (bmm) of all B * c chunks at once.
        sums = torch.bmm(u.reshape(channels, -1, m), self.gather)  # each chunk's end state from 0: [H, B c, N]
        sums = sums.view(channels, batch, chunks, N)
        for step, jump in enumerate(self.jumps):  # sums[c] = sum over the last 2^(step+1) chunks up to c
            # (A^m)^(2^step) sums[c - 2^step], zero before 0, multiplied for the kept chunks only
            # (none once 2^step >= c): [H, B, c, N]
            sums = sums + delayed(sums, 1 << step, then=lambda back, jump=jump: transformed(back, jump))
        starts = delayed(sums, 1)  # x_c = the sum up to chunk c - 1
        y = torch.bmm(torch.cat([starts, u], -1).reshape(channels, -1, N + m), self.output)  # [H, B c, m]
        y = y.view(channels, batch, chunks * m).transpose(0, 1)  # [B, H, c m]
        return F.pad(y, (0, length - chunks * m))  # trimmed (a negative pad) to [B, H, L]


def transformed(states: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Row states ``[H, B, c, N]`` times each channel's ``matrix [H, N, N]``."""
    channels, batch, chunks, N = states.shape
    return torch.bmm(states.reshape(channels, -1, N), matrix).view(channels, batch, chunks, N)
