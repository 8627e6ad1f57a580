"""The ambient conditioning: a thin, public adapter for code that owns the forward call.

Manifold layers take their :class:`~weightmanifold.Conditioning` as an argument.
Code that cannot pass it — a model whose ``forward`` we do not own, wrapped by
:func:`~weightmanifold.manifoldify`; a ``generate`` loop that calls the model
itself — makes it *ambient* with :func:`conditioned`: layers called without
``s`` inside the block use the innermost ambient conditioning of this thread.

The ambient conditioning is re-entered while autograd runs backward through the
outputs produced inside the block (:func:`reenter_in_backward`), so
``torch.utils.checkpoint`` (both modes), whose recomputation runs during
backward, sees the conditioning of the forward pass it recomputes. Under
``torch.compile`` the stack is read at trace time only: the compiled graph
carries the conditioning's tensors as ordinary values.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch.utils import _pytree as pytree

from ..topology import _checks

if TYPE_CHECKING:
    from .conditioning import Conditioning

__all__ = ["active", "conditioned", "reenter_in_backward"]

_local = threading.local()


def _stack() -> list[Conditioning]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


@contextmanager
def conditioned(conditioning: Conditioning) -> Iterator[Conditioning]:
    """Make ``conditioning`` the ambient one of this thread while the block runs.

    Args:
        conditioning: built by :func:`weightmanifold.condition`.

    Raises:
        TypeError: if ``conditioning`` is not a :class:`~weightmanifold.Conditioning`.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> net = torch.nn.Sequential(wm.ManifoldLinear(wm.Line(), 3, 2))
        >>> with wm.conditioned(wm.condition(net, torch.rand(4))):
        ...     net(torch.randn(4, 3)).shape
        torch.Size([4, 2])
    """
    from .conditioning import Conditioning

    if not isinstance(conditioning, Conditioning):
        raise TypeError("conditioned() takes a Conditioning (build one with wm.condition), "
                        f"got {type(conditioning).__name__}")
    stack = _stack()
    stack.append(conditioning)
    try:
        yield conditioning
    finally:
        stack.pop()


def active() -> Conditioning | None:
    """The innermost ambient conditioning of this thread, or ``None``."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


class _Reenter(torch.autograd.Function):
    """Identity on the outputs; in backward, makes the conditioning ambient until it ends."""

    @staticmethod
    def forward(ctx: Any, box: list, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.box = box
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        if ctx.box:
            stack = _stack()
            entry = ctx.box[0]
            stack.append(entry)

            def leave() -> None:
                for i in range(len(stack) - 1, -1, -1):
                    if stack[i] is entry:
                        del stack[i]
                        break

            torch.autograd.Variable._execution_engine.queue_callback(leave)
        return (None, *grads)


def reenter_in_backward(outputs: Any, conditioning: Conditioning) -> Any:
    """``outputs`` unchanged, but with ``conditioning`` ambient while backward runs through them.

    A no-op when gradients are off, inside a traced region or a ``torch.func``
    transform (where recomputation never runs Python layers), or when no output
    requires a gradient.
    """
    if not torch.is_grad_enabled() or _checks.tracing() or \
            torch._C._functorch.peek_interpreter_stack() is not None:
        return outputs
    leaves, spec = pytree.tree_flatten(outputs)
    where = [i for i, t in enumerate(leaves) if isinstance(t, torch.Tensor) and t.requires_grad]
    if not where:
        return outputs
    new = _Reenter.apply([conditioning], *(leaves[i] for i in where))
    for i, t in zip(where, new):
        leaves[i] = t
    return pytree.tree_unflatten(leaves, spec)
