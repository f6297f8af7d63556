"""HiPPO-LegS initialisation of a state-space model in diagonal-plus-low-rank form.

The HiPPO-LegS matrix ``A`` (Gu et al., 2020) is not normal, but adding a rank-one
term makes it so: ``S = A + P P^T`` equals ``-1/2 I`` plus a skew-symmetric matrix.
Diagonalising ``S = V Lambda V^*`` with a unitary ``V`` gives, in the new basis,

    V^* A V = Lambda - (V^* P) (V^* P)^*,

the diagonal plus low-rank (DPLR) form that S4 parameterises (paper Sec. 2:
``A = Lambda - p q^*`` with ``q = p``). Because ``A`` is real, the eigenvalues of
``S`` come in complex-conjugate pairs; only the half with positive imaginary part is
kept, the other half being implied by conjugation.

Authors
 * speechbrain-s4m contributors
"""

from typing import NamedTuple

import torch


class DPLRInit(NamedTuple):
    """Half of a conjugate-symmetric DPLR state-space model (``N // 2`` states).

    Attributes
    ----------
    eigenvalues : torch.Tensor
        ``Lambda``, complex, shape ``[N // 2]``; real parts are ``-1/2``.
    low_rank : torch.Tensor
        ``P`` in the eigenbasis, complex, shape ``[N // 2]``.
    input_matrix : torch.Tensor
        ``B`` in the eigenbasis, complex, shape ``[N // 2]``.
    """

    eigenvalues: torch.Tensor
    low_rank: torch.Tensor
    input_matrix: torch.Tensor


def hippo_legs(state_size: int) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
    """Return the real HiPPO-LegS matrices ``(A, B, P)`` in float64.

    ``A[n, k] = -sqrt(2n+1) sqrt(2k+1)`` for ``n > k``, ``-(n+1)`` for ``n = k`` and
    ``0`` above the diagonal; ``B[n] = sqrt(2n+1)``; ``P[n] = sqrt(n + 1/2)``.

    Arguments
    ---------
    state_size : int
        ``N``, the number of states.

    Returns
    -------
    A : torch.Tensor
        ``[N, N]``, lower triangular, eigenvalues ``-1, ..., -N``.
    B : torch.Tensor
        ``[N]``.
    P : torch.Tensor
        ``[N]``, the rank-one correction that makes ``A + P P^T`` normal.

    Example
    -------
    >>> A, B, P = hippo_legs(4)
    >>> A.shape, B.shape, P.shape
    (torch.Size([4, 4]), torch.Size([4]), torch.Size([4]))
    >>> torch.diagonal(A).tolist()
    [-1.0, -2.0, -3.0, -4.0]
    """
    if state_size < 1:
        raise ValueError(f"hippo_legs: state_size must be >= 1, got {state_size}")
    n = torch.arange(state_size, dtype=torch.float64)
    root = torch.sqrt(2 * n + 1)
    A = -torch.tril(root[:, None] * root[None, :], diagonal=-1) - torch.diag(n + 1)
    B = root.clone()
    P = torch.sqrt(n + 0.5)
    return A, B, P


def dplr_legs(state_size: int) -> DPLRInit:
    """HiPPO-LegS in conjugate-symmetric DPLR form, keeping ``N // 2`` states.

    Arguments
    ---------
    state_size : int
        ``N``, the full (real) state size; must be even and positive.

    Returns
    -------
    DPLRInit
        ``Lambda``, ``P`` and ``B`` (complex128) for the ``N // 2`` eigenvalues with
        positive imaginary part, sorted by imaginary part. Together with their complex
        conjugates they describe a system equivalent to the real HiPPO-LegS one.

    Example
    -------
    >>> init = dplr_legs(16)
    >>> init.eigenvalues.shape
    torch.Size([8])
    >>> bool(torch.allclose(init.eigenvalues.real, torch.full((8,), -0.5, dtype=torch.float64)))
    True
    """
    if state_size < 2 or state_size % 2:
        raise ValueError(f"dplr_legs: state_size must be a positive even number, got {state_size}")
    A, B, P = hippo_legs(state_size)
    normal = A + P[:, None] * P[None, :]  # = -1/2 I + skew-symmetric
    skew = normal + 0.5 * torch.eye(state_size, dtype=torch.float64)
    # skew = V diag(i mu) V^*  <=>  -i * skew = V diag(mu) V^*  (Hermitian)
    mu, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))
    keep = torch.nonzero(mu > 0).squeeze(-1)
    keep = keep[torch.argsort(mu[keep])]
    V = V[:, keep]  # [N, N/2]
    eigenvalues = -0.5 + 1j * mu[keep].to(torch.complex128)
    low_rank = V.conj().T @ P.to(torch.complex128)
    input_matrix = V.conj().T @ B.to(torch.complex128)
    return DPLRInit(eigenvalues, low_rank, input_matrix)
