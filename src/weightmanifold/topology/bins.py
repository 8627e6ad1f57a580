"""Piecewise-constant bases on ``[0, 1]`` with chosen breakpoints: :class:`Bins`."""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .base import Manifold

__all__ = ["Bins"]


class Bins(Manifold):
    r"""Indicator functions of the intervals between chosen breakpoints: ``n`` experts.

    With interior breakpoints :math:`0 < e_1 < \dots < e_{n-1} < 1` and
    :math:`e_0 = 0,\ e_n = 1`,

    .. math::

        a_k(s) = \mathbb 1[e_k \le s < e_{k+1}], \qquad k = 0, \dots, n-1,

    the last interval closed at 1. The network at ``s`` is the basis tensor of
    the bin holding ``s``: ``n`` independent networks, each owning one bin,
    with the per-example cost of one. The uniform metric is diagonal,

    .. math:: \bar G = \mathrm{diag}(e_{k+1} - e_k),

    so the preconditioned step scales each expert's gradient by the inverse of
    its bin width. Uniform breakpoints ``k / n`` give the same basis as
    ``BSpline(n, degree=0)``. Place breakpoints where the training conditions
    split into equal shares (e.g. ``[S / 2]`` for two experts on ``s ~ U(0, S)``)
    to give every expert as many examples.

    Args:
        edges: the interior breakpoints, strictly increasing inside (0, 1);
            empty for a single bin (one network).
        clamp: clamp ``s`` to ``[0, 1]`` instead of raising.

    Raises:
        TypeError: if ``edges`` is not a sequence of real numbers.
        ValueError: if the breakpoints are not finite, strictly increasing
            and inside (0, 1).

    Examples:
        >>> import weightmanifold as wm
        >>> m = wm.Bins([0.3])
        >>> m.coefficients([0.0, 0.29, 0.3, 1.0])
        tensor([[1., 0.],
                [1., 0.],
                [0., 1.],
                [0., 1.]])
        >>> m.gram()
        tensor([[0.3000, 0.0000],
                [0.0000, 0.7000]], dtype=torch.float64)
    """

    dim = 1
    periodic = (False,)

    def __init__(self, edges: Sequence[float] = (), *, clamp: bool = False) -> None:
        if isinstance(edges, (str, bytes)) or not isinstance(edges, Sequence):
            raise TypeError(f"Bins: edges must be a sequence of numbers, got {edges!r}")
        values = []
        for i, e in enumerate(edges):
            if isinstance(e, bool) or not isinstance(e, numbers.Real):
                raise TypeError(f"Bins: edges[{i}] must be a real number, got {e!r}")
            values.append(float(e))
        bad = [v for v in values if not (math.isfinite(v) and 0.0 < v < 1.0)]
        if bad:
            raise ValueError(f"Bins: breakpoints must lie inside (0, 1), got {bad}")
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise ValueError(f"Bins: breakpoints must be strictly increasing, got {values}")
        self.edges = tuple(values)
        self.n = len(values) + 1
        self.clamp = bool(clamp)

    @property
    def window(self) -> int | None:
        """1 (one indicator is non-zero at any ``s``) when there are several bins."""
        return 1 if self.n > 1 else None

    def _bounds(self) -> np.ndarray:
        return np.array([0.0, *self.edges, 1.0])

    def _basis(self, s: Tensor) -> Tensor:
        x = s[:, 0]
        inner = torch.tensor(self.edges, dtype=x.dtype, device=x.device)
        # number of breakpoints <= s: the bin index (s = 1 falls in the last bin)
        index = torch.bucketize(x.detach(), inner, right=True)
        return torch.nn.functional.one_hot(index, self.n).to(x.dtype)

    def quadrature(self) -> tuple[Tensor, Tensor]:
        # a_i a_j is constant on each bin: its midpoint, weighted by its width, is exact
        b = self._bounds()
        nodes = torch.tensor((b[:-1] + b[1:]) / 2, dtype=torch.float64)[:, None]
        return nodes, torch.tensor(np.diff(b), dtype=torch.float64)

    def _closed_form_gram(self) -> np.ndarray:
        return np.diag(np.diff(self._bounds()))

    def _config(self) -> tuple:
        return ("Bins", self.edges, self.clamp)

    def __repr__(self) -> str:
        clamp = ", clamp=True" if self.clamp else ""
        return f"Bins(edges={list(self.edges)}{clamp})"
