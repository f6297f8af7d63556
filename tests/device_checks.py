"""A check that no computation mixes tensors of two devices, for the tests that run
the lobes on the ``meta`` device as a stand-in for CUDA.

A CPU tensor mixed into a CUDA computation raises on CUDA only. Most meta kernels
raise the same way, but not all: a matrix product of a meta and a CPU tensor passes
on meta. :class:`SameDevice` checks every operator call instead.

Usage (tests/conftest.py puts tests/ on the path)::

    from device_checks import SameDevice

    with SameDevice():
        model(x).sum().backward()
"""

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# Copies between devices are what .to(device) does on purpose.
TRANSFERS = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}


class SameDevice(TorchDispatchMode):
    """Raise ``AssertionError`` when an operator gets tensors on two devices (a CPU
    scalar, a 0-dim tensor, is allowed, as every device allows it)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in TRANSFERS:
            devices = {
                str(t.device)
                for t in tree_leaves((args, kwargs))
                if isinstance(t, torch.Tensor) and not (t.device.type == "cpu" and t.dim() == 0)
            }
            if len(devices) > 1:
                raise AssertionError(f"{func} mixes tensors on {', '.join(sorted(devices))}")
        return func(*args, **kwargs)
