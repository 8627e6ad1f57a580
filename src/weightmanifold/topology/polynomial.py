"""Polynomial curves on ``[0, 1]``: :class:`Point`, :class:`Line` and :class:`Polynomial`."""

from __future__ import annotations

from math import comb

import numpy as np
import torch
from torch import Tensor

from .base import Manifold
from .quadrature import gauss_legendre

__all__ = ["Line", "Point", "Polynomial"]

_BASES = ("bernstein", "legendre", "monomial")


class Point(Manifold):
    """A single point, :math:`a(s) = (1)`: an ordinary network (``n = 1``).

    Every code path of weightmanifold also serves plain training through it.
    The metric is :math:`\\bar G = (1)`. ``s`` carries no coordinate
    (``dim = 0``): pass a tensor of shape ``[B]`` (values ignored) or ``[B, 0]``.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> wm.Point().coefficients(torch.zeros(2))
        tensor([[1.],
                [1.]])
    """

    n = 1
    dim = 0
    periodic = ()

    def _basis(self, s: Tensor) -> Tensor:
        return torch.ones(s.shape[0], 1, dtype=s.dtype, device=s.device)

    def quadrature(self) -> tuple[Tensor, Tensor]:
        return torch.zeros(1, 0, dtype=torch.float64), torch.ones(1, dtype=torch.float64)

    def _closed_form_gram(self) -> np.ndarray:
        return np.ones((1, 1))

    def __repr__(self) -> str:
        return "Point()"


class Polynomial(Manifold):
    """A polynomial curve of degree ``k`` on ``s ∈ [0, 1]`` (``n = k + 1``, bounded).

    Bases (all span the same curves; the preconditioned step does not depend on
    the choice):

    * ``"bernstein"``: :math:`a_i(s) = \\binom{k}{i} s^i (1-s)^{k-i}` — the basis
      points are the control points of a Bézier curve;

      .. math:: \\bar G_{ij} = \\frac{\\binom{k}{i}\\binom{k}{j}}{(2k+1)\\binom{2k}{i+j}}

    * ``"legendre"``: shifted Legendre :math:`a_i(s) = P_i(2s - 1)`;
      :math:`\\bar G = \\mathrm{diag}(1/(2i+1))`;
    * ``"monomial"``: :math:`a_i(s) = s^i`; :math:`\\bar G_{ij} = 1/(i+j+1)` (Hilbert,
      badly conditioned for large ``k``).

    Args:
        degree: polynomial degree ``k >= 1``.
        basis: ``"bernstein"`` (default), ``"legendre"`` or ``"monomial"``.
        clamp: clamp ``s`` to ``[0, 1]`` instead of raising.

    Raises:
        ValueError: for a degree below 1 or an unknown basis.

    Examples:
        >>> import weightmanifold as wm
        >>> wm.Polynomial(2, "legendre").gram().diagonal()
        tensor([1.0000, 0.3333, 0.2000], dtype=torch.float64)
    """

    dim = 1
    periodic = (False,)

    def __init__(self, degree: int, basis: str = "bernstein", *, clamp: bool = False) -> None:
        if not isinstance(degree, int) or isinstance(degree, bool) or degree < 1:
            raise ValueError(f"Polynomial degree must be an integer >= 1, got {degree!r}")
        if basis not in _BASES:
            raise ValueError(f"unknown polynomial basis {basis!r}; valid: {', '.join(_BASES)}")
        self.degree = degree
        self.basis = basis
        self.n = degree + 1
        self.clamp = bool(clamp)

    def _basis(self, s: Tensor) -> Tensor:
        x = s[:, 0]
        k = self.degree
        if self.basis == "bernstein":
            cols = [comb(k, i) * x**i * (1 - x) ** (k - i) for i in range(k + 1)]
        elif self.basis == "monomial":
            cols = [x**i for i in range(k + 1)]
        else:
            t = 2 * x - 1
            cols = [torch.ones_like(x), t]
            for i in range(1, k):
                cols.append(((2 * i + 1) * t * cols[i] - i * cols[i - 1]) / (i + 1))
            cols = cols[: k + 1]
        return torch.stack(cols, dim=1)

    def quadrature(self) -> tuple[Tensor, Tensor]:
        x, w = gauss_legendre(self.degree + 1)
        return x[:, None], w

    def _closed_form_gram(self) -> np.ndarray:
        k = self.degree
        i = np.arange(k + 1)
        if self.basis == "legendre":
            return np.diag(1.0 / (2 * i + 1))
        if self.basis == "monomial":
            return 1.0 / (i[:, None] + i[None, :] + 1)
        c = np.array([comb(k, j) for j in i], dtype=np.float64)
        c2 = np.array([[comb(2 * k, a + b) for b in i] for a in i], dtype=np.float64)
        return np.outer(c, c) / ((2 * k + 1) * c2)

    def _config(self) -> tuple:
        return ("Polynomial", self.degree, self.basis, self.clamp)

    def __repr__(self) -> str:
        clamp = ", clamp=True" if self.clamp else ""
        return f"Polynomial(degree={self.degree}, basis={self.basis!r}{clamp})"


class Line(Polynomial):
    """The line segment between two basis points, :math:`a(s) = (1 - s,\\ s)`, ``s ∈ [0, 1]``.

    .. math::

        \\bar G = \\begin{pmatrix} 1/3 & 1/6 \\\\ 1/6 & 1/3 \\end{pmatrix}, \\qquad
        \\bar G^{-1} = \\begin{pmatrix} 4 & -2 \\\\ -2 & 4 \\end{pmatrix}.

    The paper's tethered rod is ``Line`` with basis point 0 frozen
    (``preconditioner(frozen=[0])`` gives :math:`G_{22}^{-1} = 3`).

    Args:
        clamp: clamp ``s`` to ``[0, 1]`` instead of raising.

    Examples:
        >>> import weightmanifold as wm
        >>> wm.Line().coefficients([0.25])
        tensor([[0.7500, 0.2500]])
    """

    def __init__(self, *, clamp: bool = False) -> None:
        super().__init__(1, "bernstein", clamp=clamp)

    def __repr__(self) -> str:
        return "Line(clamp=True)" if self.clamp else "Line()"
