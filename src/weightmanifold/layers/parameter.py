"""A generic tensor on the manifold: :class:`ManifoldParameter` (biases, gains, anything)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..topology import Manifold
from .base import ManifoldModule, single_condition

__all__ = ["ManifoldParameter"]


class ManifoldParameter(ManifoldModule):
    """A tensor that is a function of the condition, :math:`T(s) = \\sum_k a_k(s)\\, T_k`.

    Holds the ``n`` basis tensors as one parameter ``basis`` of shape
    ``[n, *shape]``. Calling it materialises :math:`T(s_i)` for every example,
    ``[B, *shape]``: meant for small tensors (biases, gains); large weights use
    the layers that never materialise per-example weights.

    Args:
        manifold: the topology.
        init: a tensor to start from (every point of the manifold equals it:
            ``T_k = c_k · init`` with ``c = manifold.constant()``), or a shape for
            zeros.
        dtype, device: of the basis when ``init`` is a shape.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> p = wm.ManifoldParameter(wm.Line(), torch.ones(3))
        >>> p(torch.tensor([0.0, 0.5])).shape
        torch.Size([2, 3])
        >>> p.at(0.5)
        tensor([1., 1., 1.], grad_fn=<ViewBackward0>)
    """

    def __init__(
        self,
        manifold: Manifold,
        init: Tensor | Sequence[int],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(manifold)
        if isinstance(init, Tensor):
            c = manifold.constant().to(dtype=init.dtype, device=init.device)
            basis = c.reshape(-1, *([1] * init.ndim)) * init.detach()[None]
        else:
            basis = torch.zeros(manifold.n, *init, dtype=dtype, device=device)
        self.register_manifold_parameter("basis", nn.Parameter(basis))

    @property
    def shape(self) -> torch.Size:
        """Shape of the tensor at one point of the manifold."""
        return self.basis.shape[1:]

    def forward(self, s: object = None) -> Tensor:
        """``T(s_i)`` for every example, ``[B, *shape]``.

        Args:
            s: conditions, a :class:`~weightmanifold.Conditioning`, or ``None``
                for the ambient conditioning.
        """
        a, _ = self._coefficients(self._resolve(s))
        flat = self.basis.reshape(self.manifold.n, -1)
        return (a.to(self.basis.dtype) @ flat).reshape(a.shape[0], *self.shape)

    def at(self, s: float | Sequence[float] | Tensor) -> Tensor:
        """The tensor at one condition ``s`` (shape ``shape``)."""
        a = single_condition(self.manifold, s, self.basis.dtype, self.basis.device)
        return (a @ self.basis.reshape(self.manifold.n, -1)).reshape(self.shape)

    def extra_repr(self) -> str:
        return f"{self.manifold!r}, shape={tuple(self.shape)}"
