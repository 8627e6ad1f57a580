"""Closed curves: :class:`Fourier` series of order ``K`` and the :class:`Ellipse` (``K = 1``)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .base import Manifold
from .quadrature import periodic_trapezoid

__all__ = ["Ellipse", "Fourier"]


class Fourier(Manifold):
    """A closed curve with a truncated Fourier basis of order ``K`` on the circle ``s ∈ [0, 1)``.

    .. math::

        a(s) = (1,\\ \\cos 2\\pi s,\\ \\sin 2\\pi s,\\ \\ldots,
                \\cos 2\\pi K s,\\ \\sin 2\\pi K s),
        \\qquad n = 2K + 1,

        \\bar G = \\mathrm{diag}(1, \\tfrac12, \\ldots, \\tfrac12), \\qquad
        \\bar G^{-1} = \\mathrm{diag}(1, 2, \\ldots, 2).

    ``s`` wraps (``s mod 1``). The exact quadrature is the periodic trapezoid rule
    with ``2K + 1`` nodes.

    Args:
        order: the highest harmonic ``K >= 1``.

    Raises:
        ValueError: if ``order`` is not an integer ``>= 1``.

    Examples:
        >>> import weightmanifold as wm
        >>> wm.Fourier(order=2).n
        5
    """

    dim = 1
    periodic = (True,)

    def __init__(self, order: int = 1) -> None:
        if not isinstance(order, int) or isinstance(order, bool) or order < 1:
            raise ValueError(f"Fourier order must be an integer >= 1, got {order!r}")
        self.order = order
        self.n = 2 * order + 1

    def _basis(self, s: Tensor) -> Tensor:
        theta = 2 * math.pi * s[:, 0]
        cols = [torch.ones_like(theta)]
        for k in range(1, self.order + 1):
            cols += [torch.cos(k * theta), torch.sin(k * theta)]
        return torch.stack(cols, dim=1)

    def quadrature(self) -> tuple[Tensor, Tensor]:
        x, w = periodic_trapezoid(2 * self.order + 1)
        return x[:, None], w

    def _closed_form_gram(self) -> np.ndarray:
        return np.diag([1.0] + [0.5] * (2 * self.order))

    def _config(self) -> tuple:
        return ("Fourier", self.order)

    def __repr__(self) -> str:
        return f"Fourier(order={self.order})"


class Ellipse(Fourier):
    """The paper's ellipse, :math:`a(s) = (1, \\cos 2\\pi s, \\sin 2\\pi s)` (``Fourier(order=1)``).

    :math:`W(s) = P_1 + P_2 \\cos 2\\pi s + P_3 \\sin 2\\pi s` is an ellipse centred
    at :math:`P_1` in the plane of :math:`P_2, P_3`; a circle when those are
    orthogonal and of equal norm.

    .. math::

        \\bar G = \\mathrm{diag}(1, \\tfrac12, \\tfrac12), \\qquad
        \\bar G^{-1} = \\mathrm{diag}(1, 2, 2).

    Examples:
        >>> import weightmanifold as wm
        >>> wm.Ellipse().coefficients([0.25])
        tensor([[ 1.0000e+00, -4.3711e-08,  1.0000e+00]])
    """

    def __init__(self) -> None:
        super().__init__(order=1)

    def __repr__(self) -> str:
        return "Ellipse()"
