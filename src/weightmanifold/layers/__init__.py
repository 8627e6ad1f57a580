"""Layers: PyTorch modules whose parameters carry a leading basis axis of size ``n``."""

from .attention import ManifoldMultiheadAttention
from .base import ManifoldModule, single_condition
from .conditioning import Conditioning, Groups, condition, manifolds_of
from .context import active, conditioned, reenter_in_backward
from .conv import FLOP_FORMULAS, ManifoldConv1d, ManifoldConv2d, ManifoldConv3d
from .embedding import ManifoldEmbedding
from .linear import ManifoldLinear
from .linear_op import ManifoldOp
from .low_rank import (
    LowRankConv1d,
    LowRankConv2d,
    LowRankConv3d,
    LowRankEmbedding,
    LowRankLinear,
    LowRankOp,
    LowRankTransposedLinear,
    low_rank_class,
)
from .norm import (
    ManifoldBatchNorm1d,
    ManifoldBatchNorm2d,
    ManifoldBatchNorm3d,
    ManifoldGroupNorm,
    ManifoldLayerNorm,
)
from .parameter import ManifoldParameter
from .transposed_linear import ManifoldTransposedLinear

__all__ = [
    "FLOP_FORMULAS",
    "Conditioning",
    "Groups",
    "LowRankConv1d",
    "LowRankConv2d",
    "LowRankConv3d",
    "LowRankEmbedding",
    "LowRankLinear",
    "LowRankOp",
    "LowRankTransposedLinear",
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
    "ManifoldTransposedLinear",
    "active",
    "condition",
    "conditioned",
    "low_rank_class",
    "manifolds_of",
    "reenter_in_backward",
    "single_condition",
]
