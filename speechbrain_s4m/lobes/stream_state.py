"""What a causal mask network carries from one chunk of frames to the next.

A causal lobe computes the same function whether it sees a whole sequence or the same
sequence a chunk at a time; to continue a sequence, each of its stateful modules keeps
one tensor between calls: a causal convolution its last input frames, an S4 layer its
SSM state. :class:`StreamState` holds them by module and by unfolded pass (S4M applies
one block several times, with one state per pass), together with the S4 layers'
recurrences, whose discretised systems are computed once per stream.

Authors
 * speechbrain-s4m contributors
"""

from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn


class StreamState:
    """The carried tensors of one stream: pass it to a causal lobe's ``forward`` for
    every chunk of the same sequence, and use a new one for a new sequence.

    Example
    -------
    >>> conv = nn.Conv1d(2, 2, 3)
    >>> stream = StreamState()
    >>> stream.get(conv) is None
    True
    >>> stream.set(conv, torch.zeros(1, 2, 2))
    >>> stream.scope = 1  # the next unfolded pass keeps its own tensors
    >>> stream.get(conv) is None
    True
    """

    def __init__(self):
        self.scope = 0
        self._tensors: Dict[Tuple[int, nn.Module], torch.Tensor] = {}
        self._cached: Dict[nn.Module, object] = {}

    def get(self, module: nn.Module) -> Optional[torch.Tensor]:
        """The tensor ``module`` kept in the current scope, or None at the start."""
        return self._tensors.get((self.scope, module))

    def set(self, module: nn.Module, tensor: torch.Tensor) -> None:
        """Keep ``tensor`` for ``module``'s next call in the current scope."""
        self._tensors[(self.scope, module)] = tensor

    def cached(self, module: nn.Module, build: Callable[[], object]) -> object:
        """What ``build()`` returns, computed on the first call for ``module`` and
        shared by every scope (an S4 layer's recurrence)."""
        if module not in self._cached:
            self._cached[module] = build()
        return self._cached[module]

    def keys(self) -> List[Tuple[int, nn.Module]]:
        """The ``(pass, module)`` of every carried tensor, in the order they were first set."""
        return list(self._tensors)

    def tensor(self, key: Tuple[int, nn.Module]) -> torch.Tensor:
        """The carried tensor of ``key`` (one of :meth:`keys`)."""
        return self._tensors[key]

    def continued(self, tensors: Mapping[Tuple[int, nn.Module], torch.Tensor]) -> "StreamState":
        """A state that carries ``tensors`` (by the keys of :meth:`keys`) and shares this
        state's cached recurrences: the same stream, continued from given tensors (an
        exported step whose state comes in as inputs).

        Example
        -------
        >>> conv = nn.Conv1d(2, 2, 3)
        >>> stream = StreamState()
        >>> stream.set(conv, torch.zeros(1, 2, 2))
        >>> later = stream.continued({key: torch.ones(1, 2, 2) for key in stream.keys()})
        >>> later.get(conv).sum().item(), stream.get(conv).sum().item()
        (4.0, 0.0)
        """
        state = StreamState()
        state._tensors = dict(tensors)
        state._cached = self._cached
        return state

    def nbytes(self) -> int:
        """Bytes held by the carried tensors (they do not grow with the stream)."""
        return sum(t.numel() * t.element_size() for t in self._tensors.values())
