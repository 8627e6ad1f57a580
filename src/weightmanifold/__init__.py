"""weightmanifold: condition a neural network by moving its weights along a learned manifold.

Every learnable tensor becomes :math:`W(s) = \\sum_k a_k(s) W_k`, with fixed basis
functions ``a(s)`` (the topology) and learned basis tensors ``W_k``, trained with
the metric-preconditioned step :math:`\\Delta P = -\\eta\\, \\bar G^{-1} \\nabla_P L`.
"""

from .layers import Conditioning, ManifoldModule, ManifoldParameter
from .preconditioning import Preconditioned, manifold_parameters, precondition_gradients
from .topology import (
    BSpline,
    Cylinder,
    Ellipse,
    Fourier,
    Line,
    Manifold,
    Point,
    Polynomial,
    Product,
    Sheet,
    Sphere,
    Torus,
)

__version__ = "0.1.0"

__all__ = [
    "BSpline",
    "Conditioning",
    "Cylinder",
    "Ellipse",
    "Fourier",
    "Line",
    "Manifold",
    "ManifoldModule",
    "ManifoldParameter",
    "Point",
    "Polynomial",
    "Preconditioned",
    "Product",
    "Sheet",
    "Sphere",
    "Torus",
    "manifold_parameters",
    "precondition_gradients",
]
