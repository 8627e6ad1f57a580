"""Spline curves: uniform :class:`BSpline` bases, periodic (closed) or clamped (open)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
from torch import Tensor

from .base import Manifold
from .quadrature import panel_gauss_legendre

__all__ = ["BSpline"]

# ∫ B_i B_j over the real line for uniform cubic B-splines with unit knot spacing, |i - j| = 0..3
_CUBIC_BETA = [Fraction(151, 315), Fraction(397, 1680), Fraction(1, 42), Fraction(1, 5040)]
# left boundary block of the clamped cubic Gram (times 1/h), rows 0..2, valid for n >= 8
_CLAMPED_CUBIC_LEFT = {
    (0, 0): Fraction(1, 7), (0, 1): Fraction(7, 80), (0, 2): Fraction(31, 1680),
    (0, 3): Fraction(1, 840),
    (1, 1): Fraction(31, 140), (1, 2): Fraction(5, 32), (1, 3): Fraction(29, 840),
    (1, 4): Fraction(1, 3360),
    (2, 2): Fraction(183, 560), (2, 3): Fraction(283, 1260), (2, 4): Fraction(239, 10080),
    (2, 5): Fraction(1, 5040),
}


class BSpline(Manifold):
    """A uniform B-spline curve with ``n`` control points (basis points) of degree ``p``.

    .. math:: a_i(s) = B_{i,p}(s), \\qquad \\bar G_{ij} = \\int_0^1 B_{i,p}(s) B_{j,p}(s)\\, ds .

    * ``periodic=True`` (a closed curve, ``s`` wraps): ``n`` equal knot spans of
      width :math:`h = 1/n`, each basis function the cardinal B-spline shifted by
      ``i`` spans (support :math:`[(i-p)h, (i+1)h]` mod 1). :math:`\\bar G` is
      circulant; for cubic splines its first row is
      :math:`\\tfrac1n \\sum_{m \\equiv j \\ (\\mathrm{mod}\\ n), |m| \\le 3} \\beta_{|m|}` with
      :math:`\\beta = (151/315,\\ 397/1680,\\ 1/42,\\ 1/5040)`. Needs ``n >= p + 1``.
    * ``periodic=False`` (an open curve, ``s ∈ [0, 1]``): clamped knot vector with
      ``n - p`` equal spans, so the curve starts at the first and ends at the last
      control point. Needs ``n >= p + 1``; ``n = p + 1`` is the Bernstein basis.

    The paper's B-spline metrics are wrong (two are not even positive definite);
    these are exact: closed forms for cubic splines where they are known, else
    Gauss–Legendre quadrature with ``p + 1`` nodes per knot span aligned to the
    knots, which integrates the degree-``2p`` products exactly. Degree 0 gives
    piecewise-constant "experts", one per bin of ``s``.

    Args:
        n: number of control points.
        degree: spline degree ``p >= 0`` (default 3, cubic).
        periodic: closed (``True``) or clamped open (``False``) curve.
        clamp: for open curves, clamp ``s`` to ``[0, 1]`` instead of raising.

    Raises:
        ValueError: for ``n < degree + 1`` or a negative degree.

    Examples:
        >>> import weightmanifold as wm
        >>> g = wm.BSpline(n=8, periodic=True).gram()
        >>> round(float(g[0, 0] * 8 * 315), 9)
        151.0
    """

    dim = 1

    def __init__(
        self, n: int, degree: int = 3, periodic: bool = False, *, clamp: bool = False
    ) -> None:
        for name, v in (("n", n), ("degree", degree)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"BSpline {name} must be an integer, got {v!r}")
        if degree < 0:
            raise ValueError(f"BSpline degree must be >= 0, got {degree}")
        if n < degree + 1:
            raise ValueError(
                f"BSpline of degree {degree} needs n >= {degree + 1} control points, got n={n}"
            )
        self.n = n
        self.degree = degree
        self.is_periodic = bool(periodic)
        self.periodic = (self.is_periodic,)
        self.clamp = bool(clamp) and not self.is_periodic
        p = degree
        if self.is_periodic:
            knots = (torch.arange(n + 2 * p + 1, dtype=torch.float64) - p) / n
            self._breaks = torch.arange(n + 1, dtype=torch.float64) / n
        else:
            spans = n - p
            inner = torch.arange(spans + 1, dtype=torch.float64) / spans
            knots = torch.cat([torch.zeros(p, dtype=torch.float64), inner,
                               torch.ones(p, dtype=torch.float64)])
            self._breaks = inner
        self._knots = knots

    @property
    def window(self) -> int | None:
        """``p + 1`` (at most ``p + 1`` consecutive B-splines are non-zero at any ``s``)
        when that is fewer than ``n``."""
        w = self.degree + 1
        return w if w < self.n else None

    @property
    def knots(self) -> Tensor:
        """The (extended, for periodic curves) knot vector, float64."""
        return self._knots.clone()

    def _basis(self, s: Tensor) -> Tensor:
        x = s[:, 0]
        t = self._knots.to(device=x.device, dtype=x.dtype)
        p = self.degree
        xc = x[:, None]
        basis = ((xc >= t[:-1]) & (xc < t[1:])).to(x.dtype)
        if not self.is_periodic:
            # the right end belongs to the last non-empty span
            last = self.n - 1
            at_end = (x == 1.0).to(x.dtype)
            basis[:, last] = basis[:, last] + at_end
        for q in range(1, p + 1):
            cols = basis.shape[1] - 1
            dl = t[q : q + cols] - t[:cols]
            dr = t[q + 1 : q + 1 + cols] - t[1 : 1 + cols]
            inv_l = torch.where(dl > 0, 1.0 / torch.where(dl > 0, dl, 1.0), 0.0)
            inv_r = torch.where(dr > 0, 1.0 / torch.where(dr > 0, dr, 1.0), 0.0)
            left = (xc - t[:cols]) * inv_l * basis[:, :-1]
            right = (t[q + 1 : q + 1 + cols] - xc) * inv_r * basis[:, 1:]
            basis = left + right
        if self.is_periodic and p > 0:
            basis = torch.cat([basis[:, :p] + basis[:, self.n :], basis[:, p : self.n]], dim=1)
        return basis

    def quadrature(self) -> tuple[Tensor, Tensor]:
        x, w = panel_gauss_legendre(self._breaks, self.degree + 1)
        return x[:, None], w

    def exact_gram(self) -> list[list[Fraction]] | None:
        """The uniform Gram matrix as exact fractions where a closed form is known.

        Known: cubic periodic splines (any ``n >= 4``), cubic clamped splines with
        ``n = 4`` (Bernstein) or ``n >= 8``. Returns ``None`` otherwise.
        """
        n = self.n
        if self.degree != 3:
            return None
        g = [[Fraction(0)] * n for _ in range(n)]
        if self.is_periodic:
            for i in range(n):
                for m in range(-3, 4):
                    g[i][(i + m) % n] += _CUBIC_BETA[abs(m)] / n
            return g
        if n == 4:
            from math import comb

            return [
                [Fraction(comb(3, i) * comb(3, j), 7 * comb(6, i + j)) for j in range(4)]
                for i in range(4)
            ]
        if n < 8:
            return None
        h = Fraction(1, n - 3)
        for i in range(n):
            for j in range(n):
                if abs(i - j) <= 3:
                    g[i][j] = _CUBIC_BETA[abs(i - j)]
        for (i, j), v in _CLAMPED_CUBIC_LEFT.items():
            for a, b in ((i, j), (j, i)):
                g[a][b] = v
                g[n - 1 - a][n - 1 - b] = v
        return [[v * h for v in row] for row in g]

    def _closed_form_gram(self) -> np.ndarray | None:
        exact = self.exact_gram()
        if exact is None:
            return None
        return np.array([[float(v) for v in row] for row in exact])

    def _config(self) -> tuple:
        return ("BSpline", self.n, self.degree, self.is_periodic, self.clamp)

    def __repr__(self) -> str:
        clamp = ", clamp=True" if self.clamp else ""
        return f"BSpline(n={self.n}, degree={self.degree}, periodic={self.is_periodic}{clamp})"
