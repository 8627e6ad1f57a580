"""Manifolds by name, for configuration files and the command line: :func:`make_manifold`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Manifold
from .bins import Bins
from .bspline import BSpline
from .fourier import Ellipse, Fourier
from .polynomial import Line, Point, Polynomial
from .product import Cylinder, Sheet, Torus
from .sphere import Sphere

__all__ = ["MANIFOLDS", "make_manifold"]

#: name → constructor; options are the constructor's keyword arguments
MANIFOLDS: dict[str, Callable[..., Manifold]] = {
    "point": Point,
    "line": Line,
    "ellipse": Ellipse,
    "circle": Ellipse,
    "fourier": Fourier,
    "polynomial": Polynomial,
    "bspline": BSpline,
    "bins": Bins,
    "torus": Torus,
    "cylinder": Cylinder,
    "sheet": Sheet,
    "sphere": Sphere,
}


def make_manifold(name: str, **options: Any) -> Manifold:
    """The manifold called ``name`` built with ``options``.

    Args:
        name: one of :data:`MANIFOLDS` (case-insensitive).
        **options: keyword arguments of its constructor, e.g. ``order=2`` for
            ``"fourier"``, ``n=8, periodic=True`` for ``"bspline"``.

    Raises:
        ValueError: for an unknown name (listing the valid ones) or bad options.

    Examples:
        >>> make_manifold("bspline", n=6, periodic=True)
        BSpline(n=6, degree=3, periodic=True)
    """
    key = name.lower()
    if key not in MANIFOLDS:
        raise ValueError(f"unknown manifold {name!r}; valid: {', '.join(MANIFOLDS)}")
    try:
        return MANIFOLDS[key](**options)
    except TypeError as err:
        raise ValueError(f"bad options {options} for manifold {name!r}: {err}") from err
