"""weightmanifold: condition a neural network by moving its weights along a learned manifold.

Every learnable tensor becomes :math:`W(s) = \\sum_k a_k(s) W_k`, with fixed basis
functions ``a(s)`` (the topology) and learned basis tensors ``W_k``, trained with
the metric-preconditioned step :math:`\\Delta P = -\\eta\\, \\bar G^{-1} \\nabla_P L`.
"""

from .conversion import ManifoldModel, manifoldify, register_conversion
from .export import at
from .layers import (
    Conditioning,
    ManifoldBatchNorm1d,
    ManifoldBatchNorm2d,
    ManifoldBatchNorm3d,
    ManifoldConv1d,
    ManifoldConv2d,
    ManifoldConv3d,
    ManifoldEmbedding,
    ManifoldGroupNorm,
    ManifoldLayerNorm,
    ManifoldLinear,
    ManifoldModule,
    ManifoldMultiheadAttention,
    ManifoldParameter,
    condition,
    conditioned,
)
from .preconditioning import Preconditioned, manifold_parameters, precondition_gradients
from .pretrained import from_pretrained, save_pretrained
from .regularization import squared_norm
from .topology import (
    Bins,
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
    "Bins",
    "Conditioning",
    "Cylinder",
    "Ellipse",
    "Fourier",
    "Line",
    "Manifold",
    "ManifoldBatchNorm1d",
    "ManifoldBatchNorm2d",
    "ManifoldBatchNorm3d",
    "ManifoldConv1d",
    "ManifoldConv2d",
    "ManifoldConv3d",
    "ManifoldEmbedding",
    "ManifoldGroupNorm",
    "ManifoldLayerNorm",
    "ManifoldLinear",
    "ManifoldModel",
    "ManifoldModule",
    "ManifoldMultiheadAttention",
    "ManifoldParameter",
    "Point",
    "Polynomial",
    "Preconditioned",
    "Product",
    "Sheet",
    "Sphere",
    "Torus",
    "at",
    "condition",
    "conditioned",
    "from_pretrained",
    "manifold_parameters",
    "manifoldify",
    "precondition_gradients",
    "register_conversion",
    "save_pretrained",
    "squared_norm",
]
