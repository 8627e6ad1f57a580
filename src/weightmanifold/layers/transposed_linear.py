"""A dense layer that stores its weight as ``[in, out]``: :class:`ManifoldTransposedLinear`.

The twin of Hugging Face ``transformers``' ``Conv1D`` (GPT-2's attention and MLP
projections: "a linear layer with the weights transposed", ``y = x W + b``).
It needs no ``transformers`` to run; exporting it back (:meth:`to_plain`)
builds a ``transformers`` ``Conv1D``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..topology import Manifold
from .linear import linear_banded, linear_basis
from .linear_op import ManifoldOp

__all__ = ["ManifoldTransposedLinear"]


class ManifoldTransposedLinear(ManifoldOp):
    """``y_i = x_i W(s_i) + b(s_i)`` with ``weight`` ``[n, in_features, out_features]``.

    .. math:: W(s) = \\sum_k a_k(s) W_k, \\qquad b(s) = \\sum_k a_k(s) b_k

    Args:
        manifold: the topology.
        in_features, out_features: as ``Conv1D(nf=out_features, nx=in_features)``.
        bias: learn a bias (``Conv1D`` always has one).

    Examples:
        >>> import torch, weightmanifold as wm
        >>> from weightmanifold.layers import ManifoldTransposedLinear
        >>> layer = ManifoldTransposedLinear(wm.Line(), 4, 6)
        >>> layer(torch.randn(3, 5, 4), torch.rand(3)).shape
        torch.Size([3, 5, 6])
    """

    def __init__(self, manifold: Manifold, in_features: int, out_features: int,
                 bias: bool = True, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(manifold)
        self.in_features, self.out_features = in_features, out_features
        kw = {"device": device, "dtype": dtype}
        self.register_manifold_parameter(
            "weight", nn.Parameter(torch.zeros(manifold.n, in_features, out_features, **kw)))
        if bias:
            self.register_manifold_parameter(
                "bias", nn.Parameter(torch.zeros(manifold.n, out_features, **kw)))
        else:
            self.register_parameter("bias", None)

    _banded = True  # B-spline batches: one product per basis tensor on its examples

    def _plain(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight.t(), bias)

    def _basis_op(self, x: Tensor, weight: Tensor, bias: Tensor | None, a: Tensor,
                  bd: int) -> Tensor:
        return linear_basis(x, weight.transpose(1, 2), bias, a, bd, self._mix_inputs)

    def _banded_op(self, x: Tensor, coef: Tensor,
                   spans: tuple[tuple[tuple[int, int], ...], ...], bd: int) -> Tensor:
        return linear_banded(x, coef, self.weight, self.bias, spans, bd, transposed=True)

    def _make_plain(self) -> nn.Module:
        from transformers.pytorch_utils import Conv1D

        out = Conv1D(self.out_features, self.in_features)
        return out.to(device=self.weight.device, dtype=self.weight.dtype)

    @staticmethod
    def reset_plain(module: nn.Module) -> None:
        """``Conv1D``'s own initialisation (it has no ``reset_parameters``): N(0, 0.02²)."""
        with torch.no_grad():
            nn.init.normal_(module.weight, std=0.02)

    @classmethod
    def from_plain(cls, module: nn.Module, manifold: Manifold) -> ManifoldTransposedLinear:
        """A manifold twin of a ``transformers`` ``Conv1D`` (weights set by the caller)."""
        w = module.weight
        return cls(manifold, w.shape[0], w.shape[1], getattr(module, "bias", None) is not None,
                   device=w.device, dtype=w.dtype)

    def extra_repr(self) -> str:
        return (f"{self.manifold!r}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")
