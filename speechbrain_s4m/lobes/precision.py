"""Where the lobes leave autocast: the S4 kernels and FFTs run in float32, and the
depthwise convolution in the dtype autocast would pick, on any device.

Autocast exists for some device types only (``cpu``, ``cuda``, ...). The ``meta``
device, on which the tests run every lobe as a stand-in for CUDA, has none: there
nothing is cast, and these helpers do nothing.

Authors
 * speechbrain-s4m contributors
"""

import contextlib
from typing import ContextManager

import torch


@torch.compiler.assume_constant_result  # Dynamo cannot trace the query; it is a constant per device type
def has_autocast(device_type: str) -> bool:
    """Whether autocast exists for ``device_type`` (not for ``meta``).

    Example
    -------
    >>> has_autocast("cpu"), has_autocast("meta")
    (True, False)
    """
    return torch.amp.is_autocast_available(device_type)


def without_autocast(device: torch.device) -> ContextManager:
    """A context in which autocast is off on ``device``, so that what runs inside stays
    in the dtypes it is given (float32 for the S4 kernels and FFTs).

    Example
    -------
    >>> with torch.autocast("cpu", dtype=torch.bfloat16), without_autocast(torch.device("cpu")):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    torch.float32
    >>> with without_autocast(torch.device("meta")):  # no autocast on meta
    ...     (torch.ones(2, 2, device="meta") @ torch.ones(2, 2, device="meta")).dtype
    torch.float32
    """
    if not has_autocast(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a convolution of ``x`` in (``x``'s without it).

    Example
    -------
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     autocast_dtype(torch.ones(1))
    torch.bfloat16
    >>> autocast_dtype(torch.ones(1, dtype=torch.float16))
    torch.float16
    """
    device = x.device.type
    if has_autocast(device) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype
