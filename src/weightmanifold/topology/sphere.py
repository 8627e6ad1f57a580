"""The 2-sphere with a real spherical-harmonic basis: :class:`Sphere`."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from . import _checks
from .base import Manifold
from .quadrature import gauss_legendre, periodic_trapezoid, tensor_product

__all__ = ["Sphere"]


class Sphere(Manifold):
    """The unit sphere with real spherical harmonics up to degree ``L`` (``n = (L + 1)²``).

    ``s`` is a batch of unit 3-vectors ``[B, 3]``. The basis, ordered by
    :math:`l = 0..L` and :math:`m = -l..l`, is written in Cartesian form (smooth
    at the poles, no angles needed), with :math:`z = \\cos\\theta` and
    :math:`(x + iy)^m = \\sin^m\\theta\\, e^{im\\varphi}`:

    .. math::

        a_{l0} = \\sqrt{2l+1}\\; P_l(z), \\qquad
        a_{l,\\pm m} = \\sqrt{2(2l+1)\\tfrac{(l-m)!}{(l+m)!}}\\;
        P_l^{(m)}(z)\\; \\{\\mathrm{Re}, \\mathrm{Im}\\}\\,(x + iy)^m ,

    where :math:`P_l^{(m)}` is the ``m``-th derivative of the Legendre polynomial
    (no Condon–Shortley phase). They are orthonormal under the normalised area
    measure :math:`d\\Omega / 4\\pi`, so

    .. math:: \\bar G = I_n, \\qquad a_{00} = 1 .

    The exact quadrature is Gauss–Legendre in ``z`` (``L + 1`` nodes) times the
    periodic trapezoid rule in the azimuth (``2L + 1`` nodes).

    Args:
        degree: the highest degree ``L >= 1``.
        normalize: project non-unit ``s`` onto the sphere instead of raising.

    Raises:
        ValueError: for a degree below 1.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> wm.Sphere(degree=1).coefficients(torch.tensor([[0.0, 0.0, 1.0]]))
        tensor([[1.0000, 0.0000, 1.7321, 0.0000]])
    """

    dim = 3
    periodic = (False, False, False)

    def __init__(self, degree: int = 1, *, normalize: bool = False) -> None:
        if not isinstance(degree, int) or isinstance(degree, bool) or degree < 1:
            raise ValueError(f"Sphere degree must be an integer >= 1, got {degree!r}")
        self.degree = degree
        self.n = (degree + 1) ** 2
        self.normalize = bool(normalize)

    def check(self, s: object) -> Tensor:
        s2 = _checks.as_condition_batch(s, 3, "Sphere")
        _checks.check_finite(s2, "Sphere")
        norm = s2.norm(dim=1)
        if self.normalize:
            zero = norm == 0
            _checks.raise_where(
                zero, lambda: "Sphere: cannot normalise zero vectors at rows "
                f"{zero.nonzero().flatten().tolist()[:5]}", "Sphere: cannot normalise zero vectors")
            return s2 / norm[:, None]
        tol = math.sqrt(torch.finfo(s2.dtype).eps)
        bad = (norm - 1).abs() > tol
        hint = "normalise s or build Sphere(normalize=True)"

        def message() -> str:
            rows = bad.nonzero().flatten()
            shown = ", ".join(
                f"|s[{int(i)}]|={float(norm[i]):.6g} (|s|-1={float(norm[i] - 1):.2g})"
                for i in rows[:5]
            )
            return f"Sphere expects unit 3-vectors (tolerance {tol:.1e}); got {shown}; {hint}"

        _checks.raise_where(bad, message, f"Sphere expects unit 3-vectors; {hint}")
        return s2

    def _basis(self, s: Tensor) -> Tensor:
        x, y, z = s[:, 0], s[:, 1], s[:, 2]
        L = self.degree
        # Re/Im of (x + iy)^m
        re, im = [torch.ones_like(x)], [torch.zeros_like(x)]
        for _ in range(L):
            r, i = re[-1], im[-1]
            re.append(x * r - y * i)
            im.append(x * i + y * r)
        # q[(l, m)] = m-th derivative of the Legendre polynomial P_l at z
        q: dict[tuple[int, int], Tensor] = {}
        for m in range(L + 1):
            q[(m, m)] = torch.full_like(z, float(math.prod(range(1, 2 * m, 2))))
            if m + 1 <= L:
                q[(m + 1, m)] = (2 * m + 1) * z * q[(m, m)]
            for l in range(m + 2, L + 1):
                q[(l, m)] = (
                    (2 * l - 1) * z * q[(l - 1, m)] - (l + m - 1) * q[(l - 2, m)]
                ) / (l - m)
        cols = []
        for l in range(L + 1):
            for m in range(-l, l + 1):
                am = abs(m)
                if m == 0:
                    cols.append(math.sqrt(2 * l + 1) * q[(l, 0)])
                    continue
                ratio = math.exp(math.lgamma(l - am + 1) - math.lgamma(l + am + 1))
                c = math.sqrt(2 * (2 * l + 1) * ratio)
                cols.append(c * q[(l, am)] * (re[am] if m > 0 else im[am]))
        return torch.stack(cols, dim=1)

    def quadrature(self) -> tuple[Tensor, Tensor]:
        z, wz = gauss_legendre(self.degree + 1, -1.0, 1.0)
        phi, wp = periodic_trapezoid(2 * self.degree + 1)
        grid, w = tensor_product([(z[:, None], wz / 2), (phi[:, None], wp)])
        z, phi = grid[:, 0], 2 * math.pi * grid[:, 1]
        r = torch.sqrt(1 - z**2)
        return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=1), w

    def _closed_form_gram(self) -> np.ndarray:
        return np.eye(self.n)

    def _config(self) -> tuple:
        return ("Sphere", self.degree, self.normalize)

    def __repr__(self) -> str:
        return f"Sphere(degree={self.degree})"
