"""The conditioning of the current forward pass, per thread, for layers called without ``s``.

:class:`~weightmanifold.conversion.ManifoldModel` evaluates the basis once per
batch and makes it visible to every manifold layer inside the wrapped model for
the duration of that call. The storage is thread-local, so two models (or one
model) running in two threads with different ``s`` never see each other's
conditions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Conditioning

__all__ = ["ActiveConditioning", "active", "conditioned"]

_local = threading.local()


@dataclass(frozen=True)
class ActiveConditioning:
    """The conditioning of the running forward pass and where the batch axis is."""

    conditioning: Conditioning
    batch_dim: int


@contextmanager
def conditioned(conditioning: Conditioning, batch_dim: int = 0) -> Iterator[None]:
    """Make ``conditioning`` the current one in this thread while the block runs."""
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(ActiveConditioning(conditioning, batch_dim))
    try:
        yield
    finally:
        stack.pop()


def active() -> ActiveConditioning | None:
    """The innermost active conditioning of this thread, or ``None``."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None
