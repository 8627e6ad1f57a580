"""Tensor products of manifolds: :class:`Product`, :class:`Torus`, :class:`Cylinder`,
:class:`Sheet`."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import _checks
from .base import Manifold
from .fourier import Ellipse
from .polynomial import Line
from .quadrature import tensor_product

__all__ = ["Cylinder", "Product", "Sheet", "Torus"]


class Product(Manifold):
    """The tensor product of manifolds: ``s`` has one group of columns per factor.

    .. math::

        a_{(i, j, \\ldots)}(u, v, \\ldots) = b_i(u)\\, c_j(v) \\cdots, \\qquad
        \\bar G = G_b \\otimes G_c \\otimes \\cdots, \\qquad
        \\bar G^{-1} = G_b^{-1} \\otimes G_c^{-1} \\otimes \\cdots

    Basis index ``(i, j, …)`` is flattened row-major (the first factor varies
    slowest), matching :func:`torch.kron`. Each factor keeps its own domain
    rules (periodic columns wrap, bounded ones are checked or clamped).

    Args:
        *factors: at least two manifolds.

    Raises:
        ValueError: for fewer than two factors.
        TypeError: for a factor that is not a :class:`Manifold`.

    Examples:
        >>> import weightmanifold as wm
        >>> cyl = wm.Product(wm.Line(), wm.Ellipse())
        >>> cyl.n, cyl.dim
        (6, 2)
    """

    def __init__(self, *factors: Manifold) -> None:
        if len(factors) < 2:
            raise ValueError(f"Product needs at least two factors, got {len(factors)}")
        for f in factors:
            if not isinstance(f, Manifold):
                raise TypeError(f"Product factors must be Manifolds, got {type(f).__name__}")
        self.factors = tuple(factors)
        self.n = int(np.prod([f.n for f in factors]))
        self.dim = sum(f.dim for f in factors)
        self.periodic = tuple(p for f in factors for p in f.periodic)

    def _split(self, s: Tensor) -> list[Tensor]:
        out, start = [], 0
        for f in self.factors:
            out.append(s[:, start : start + f.dim])
            start += f.dim
        return out

    def check(self, s: object) -> Tensor:
        s2 = _checks.as_condition_batch(s, self.dim, type(self).__name__)
        _checks.check_finite(s2, type(self).__name__)
        parts, start = [], 0
        for k, (f, part) in enumerate(zip(self.factors, self._split(s2))):
            try:
                parts.append(f.check(part))
            except ValueError as err:
                # say which factor and which columns of the product's s are at fault
                cols = f"column {start}" if f.dim == 1 else f"columns {start}..{start + f.dim - 1}"
                raise ValueError(
                    f"{type(self).__name__}: factor {k} ({f!r}, {cols} of s): {err}"
                ) from err
            start += f.dim
        return torch.cat(parts, dim=1)

    def _basis(self, s: Tensor) -> Tensor:
        parts = [f._basis(part) for f, part in zip(self.factors, self._split(s))]
        a = parts[0]
        for b in parts[1:]:
            a = (a[:, :, None] * b[:, None, :]).reshape(a.shape[0], -1)
        return a

    def quadrature(self) -> tuple[Tensor, Tensor]:
        return tensor_product([f.quadrature() for f in self.factors])

    def _closed_form_gram(self) -> np.ndarray:
        g = self.factors[0].gram().numpy()
        for f in self.factors[1:]:
            g = np.kron(g, f.gram().numpy())
        return g

    def _config(self) -> tuple:
        return ("Product", *(f._config() for f in self.factors))

    def __repr__(self) -> str:
        return f"Product({', '.join(repr(f) for f in self.factors)})"


class Torus(Product):
    """Circle × circle: ``Product(Ellipse(), Ellipse())``, ``n = 9``, ``s`` of shape ``[B, 2]``.

    .. math::

        \\bar G = \\mathrm{diag}(1, \\tfrac12, \\tfrac12)
        \\otimes \\mathrm{diag}(1, \\tfrac12, \\tfrac12)
    """

    def __init__(self) -> None:
        super().__init__(Ellipse(), Ellipse())

    def __repr__(self) -> str:
        return "Torus()"


class Cylinder(Product):
    """Line × circle: ``Product(Line(), Ellipse())``, ``n = 6``; column 0 bounded, column 1 wraps.

    Args:
        clamp: clamp the line coordinate to ``[0, 1]`` instead of raising.
    """

    def __init__(self, *, clamp: bool = False) -> None:
        super().__init__(Line(clamp=clamp), Ellipse())

    def __repr__(self) -> str:
        return "Cylinder()"


class Sheet(Product):
    """Line × line: ``Product(Line(), Line())``, ``n = 4``, a bilinear sheet on ``[0, 1]²``.

    .. math::

        \\bar G = \\tfrac1{36}
        \\begin{pmatrix}4&2&2&1\\\\2&4&1&2\\\\2&1&4&2\\\\1&2&2&4\\end{pmatrix}

    Args:
        clamp: clamp both coordinates to ``[0, 1]`` instead of raising.
    """

    def __init__(self, *, clamp: bool = False) -> None:
        super().__init__(Line(clamp=clamp), Line(clamp=clamp))

    def __repr__(self) -> str:
        return "Sheet()"
