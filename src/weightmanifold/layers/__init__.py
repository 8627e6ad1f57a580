"""Layers: PyTorch modules whose parameters carry a leading basis axis of size ``n``."""

from .attention import ManifoldMultiheadAttention
from .base import Conditioning, ManifoldModule, single_condition
from .conv import ManifoldConv1d, ManifoldConv2d, ManifoldConv3d
from .embedding import ManifoldEmbedding
from .linear import ManifoldLinear
from .linear_op import ManifoldOp
from .norm import (
    ManifoldBatchNorm1d,
    ManifoldBatchNorm2d,
    ManifoldBatchNorm3d,
    ManifoldGroupNorm,
    ManifoldLayerNorm,
)
from .parameter import ManifoldParameter

__all__ = [
    "Conditioning",
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
    "ManifoldModule",
    "ManifoldMultiheadAttention",
    "ManifoldOp",
    "ManifoldParameter",
    "single_condition",
]
