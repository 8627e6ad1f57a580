"""Quadrature rules on ``[0, 1]`` used to integrate products of basis functions exactly."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["gauss_legendre", "panel_gauss_legendre", "periodic_trapezoid", "tensor_product"]


def gauss_legendre(m: int, a: float = 0.0, b: float = 1.0) -> tuple[Tensor, Tensor]:
    """``m``-point Gauss–Legendre rule on ``[a, b]``, exact for polynomials of degree ``2m - 1``.

    Weights sum to ``b - a``. Returns float64 ``(nodes [m], weights [m])``.
    """
    x, w = np.polynomial.legendre.leggauss(m)
    half = 0.5 * (b - a)
    return (
        torch.as_tensor(a + half * (x + 1.0), dtype=torch.float64),
        torch.as_tensor(half * w, dtype=torch.float64),
    )


def panel_gauss_legendre(breaks: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Composite Gauss–Legendre: ``m`` nodes on each panel ``[breaks[i], breaks[i+1]]``.

    Exact for piecewise polynomials of degree ``2m - 1`` whose pieces are the panels,
    so the panels must be aligned with the knots of a spline.
    """
    nodes, weights = [], []
    for lo, hi in zip(breaks[:-1].tolist(), breaks[1:].tolist()):
        if hi > lo:
            x, w = gauss_legendre(m, lo, hi)
            nodes.append(x)
            weights.append(w)
    return torch.cat(nodes), torch.cat(weights)


def periodic_trapezoid(num: int) -> tuple[Tensor, Tensor]:
    """``num`` equally spaced nodes on the circle ``[0, 1)`` with equal weights.

    Exact for trigonometric polynomials :math:`e^{2\\pi i k s}` unless ``num`` divides
    ``k``: ``num >= 2K + 1`` integrates products of Fourier modes up to order ``K``.
    """
    return (
        torch.arange(num, dtype=torch.float64) / num,
        torch.full((num,), 1.0 / num, dtype=torch.float64),
    )


def tensor_product(rules: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Product rule of several rules (each with nodes ``[Q_i, d_i]``), first factor slowest.

    Returns nodes ``[prod Q_i, sum d_i]`` and weights ``[prod Q_i]``.
    """
    nodes, weights = rules[0]
    for n2, w2 in rules[1:]:
        q1, q2 = len(nodes), len(n2)
        nodes = torch.cat(
            [nodes.repeat_interleave(q2, dim=0), n2.repeat(q1, 1)], dim=1
        )
        weights = (weights[:, None] * w2[None, :]).reshape(-1)
    return nodes, weights
