"""Topology: basis functions ``a(s)`` and their exact metric. Knows nothing about networks."""

from .base import Manifold
from .bins import Bins
from .bspline import BSpline
from .fourier import Ellipse, Fourier
from .polynomial import Line, Point, Polynomial
from .product import Cylinder, Product, Sheet, Torus
from .sphere import Sphere

__all__ = [
    "BSpline",
    "Bins",
    "Cylinder",
    "Ellipse",
    "Fourier",
    "Line",
    "Manifold",
    "Point",
    "Polynomial",
    "Product",
    "Sheet",
    "Sphere",
    "Torus",
]

from .registry import MANIFOLDS, make_manifold

__all__ += ["MANIFOLDS", "make_manifold"]
