"""Decisions that every DDP rank takes together.

Under DDP a rank that skips a backward pass, or stops training, on its own leaves the
others waiting for ever in the next gradient all-reduce. Whatever changes what a rank
does next (a batch with non-finite audio, a non-finite loss, a spent time budget) is
therefore decided once for all ranks: each rank votes with its own flags, and a flag
that is set on any rank is set on all of them.

Authors
 * speechbrain-s4m contributors
"""

from typing import Dict, Union

import torch
import torch.distributed as dist
from speechbrain.utils.distributed import is_distributed_initialized

Flag = Union[bool, torch.Tensor]


def any_rank(flags: torch.Tensor) -> torch.Tensor:
    """Element-wise OR of the boolean ``flags`` over all ranks (one all-reduce; on one
    process, ``flags`` itself). The result lives on ``flags``' device.

    Example
    -------
    >>> any_rank(torch.tensor([True, False])).tolist()  # one process
    [True, False]
    """
    if flags.dtype != torch.bool:
        raise ValueError(f"any_rank: expected boolean flags, got dtype {flags.dtype}")
    if not is_distributed_initialized():
        return flags
    votes = flags.to(torch.int32)  # every backend reduces integers
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return votes.bool()


def agree(device: Union[str, torch.device], **flags: Flag) -> Dict[str, bool]:
    """The named ``flags`` OR-ed over all ranks and read on the host, with at most one
    synchronisation for all of them. A flag is a Python bool or a one-element boolean
    tensor (read without a host synchronisation of its own); ``device`` is where the
    vote is taken (the one the process group's backend reduces on). On one process,
    Python bools are returned as they are and only the tensors are read.

    Example
    -------
    >>> loss = torch.tensor(float("nan"))
    >>> agree("cpu", non_finite=~torch.isfinite(loss), out_of_time=False)
    {'non_finite': True, 'out_of_time': False}
    """
    votes = {}
    for name, flag in flags.items():
        if torch.is_tensor(flag):
            if flag.numel() != 1:
                raise ValueError(f"agree: flag {name} must hold one value, got shape {tuple(flag.shape)}")
            votes[name] = flag.reshape(()).to(device=device, dtype=torch.bool)
        elif is_distributed_initialized():  # a kernel fill, not a host-to-device copy
            votes[name] = torch.full((), bool(flag), dtype=torch.bool, device=device)
    decided = {name: bool(flag) for name, flag in flags.items()}
    if votes:
        decided.update(zip(votes, any_rank(torch.stack(list(votes.values()))).tolist()))  # the one synchronisation
    return decided
