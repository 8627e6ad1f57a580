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

import dataclasses
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from ..topology import _checks

if TYPE_CHECKING:
    from .conditioning import Conditioning

__all__ = ["active", "conditioned", "reenter_in_backward"]


class _Local(threading.local):
    """Per-thread state whose attributes exist from a thread's first access: a stack
    created lazily (``getattr(..., None)``) made ``torch.compile`` guard on its absence
    and compile a model twice, once for the first call and once for the rest."""

    def __init__(self) -> None:
        self.stack: list[Conditioning] = []


_local = _Local()


def _stack() -> list[Conditioning]:
    return _local.stack


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


#: conditionings re-entered for a running backward pass, by autograd graph task (a backward
#: may run on another thread than its forward: on CUDA, the device's worker thread)
_reentered: dict[int, list[Conditioning]] = {}
_MAX_TASKS = 64  # entries of backward passes that died without their end-of-pass callback


def active() -> Conditioning | None:
    """The innermost ambient conditioning: this thread's, else the running backward pass's."""
    stack = _local.stack
    if stack:
        return stack[-1]
    if not _reentered:
        return None
    entries = _reentered.get(torch._C._current_graph_task_id())
    return entries[-1] if entries else None


def _tensors(obj: Any, depth: int = 0) -> list[torch.Tensor]:
    """The tensors in a model's output: nested tuples, lists, mappings and dataclasses."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if depth > 4:
        return []
    if isinstance(obj, Mapping):
        items: Any = obj.values()
    elif isinstance(obj, (tuple, list)):
        items = obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    else:
        return []
    return [t for item in items for t in _tensors(item, depth + 1)]


def reenter_in_backward(outputs: Any, conditioning: Conditioning) -> Any:
    """``outputs`` themselves, with ``conditioning`` made ambient while backward runs through them.

    A gradient hook on each output that requires a gradient makes the
    conditioning ambient for that backward pass (keyed by autograd's graph
    task, whichever thread runs it) when backward reaches the output — before
    it reaches any layer of the model — and leaves it when the pass ends. A
    pass that dies in an error never reaches its end: its entry is never read
    again (no other pass has its task id) and is dropped after 64 more. The outputs are
    the same tensor objects (they may be modified in place). A no-op when
    gradients are off, inside a traced region or a ``torch.func`` transform
    (where recomputation never runs Python layers), or when no output requires
    a gradient.
    """
    if not torch.is_grad_enabled() or _checks.tracing() or \
            torch._C._functorch.peek_interpreter_stack() is not None:
        return outputs
    # leaves (a returned parameter) need no re-entry: backward reaches no layer through them
    tensors = [t for t in _tensors(outputs) if t.requires_grad and t.grad_fn is not None]
    if not tensors:
        return outputs
    entered: set[int] = set()  # the graph tasks it is ambient for

    def enter(grad: torch.Tensor) -> None:
        task = torch._C._current_graph_task_id()
        if task in entered:
            return  # already ambient for this backward pass
        entered.add(task)
        if task not in _reentered and len(_reentered) >= _MAX_TASKS:
            del _reentered[next(iter(_reentered))]  # a pass that died (an error in backward)
        _reentered.setdefault(task, []).append(conditioning)

        def leave() -> None:
            entries = _reentered.get(task, [])
            for i in range(len(entries) - 1, -1, -1):
                if entries[i] is conditioning:
                    del entries[i]
                    break
            if not entries:
                _reentered.pop(task, None)
            entered.discard(task)

        torch.autograd.Variable._execution_engine.queue_callback(leave)

    for t in tensors:
        t.register_hook(enter)
    return outputs
