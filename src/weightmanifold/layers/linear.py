"""Dense layer on a manifold: :class:`ManifoldLinear`."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..topology import Manifold
from .linear_op import ManifoldOp

__all__ = ["ManifoldLinear", "linear_basis"]


def linear_basis(x: Tensor, weight: Tensor, bias: Tensor | None, a: Tensor, bd: int,
                 mix_inputs: Callable[[bool], bool]) -> Tensor:
    """:math:`y_i = \\sum_k a_k(s_i) (W_k x_i + b_k)` on the stacked basis ``[n, out, in]``.

    ``mix_inputs(inputs_smaller)`` decides the side: scale the inputs by
    :math:`a_k(s_i)` and run one product against the basis concatenated along
    its input axis, or run the ``n`` stacked weights and mix their outputs.
    """
    n, out, inp = weight.shape
    x0 = x.movedim(bd, 0)
    b = x0.shape[0]
    mid = x0.shape[1:-1]
    x0 = x0.reshape(b, -1, inp)
    if mix_inputs(inp <= out):  # mix the inputs: [a_1 x, …, a_n x] against [W_1 … W_n]
        xa = (x0[:, :, None, :] * a[:, None, :, None]).reshape(b, -1, n * inp)
        y = F.linear(xa, weight.permute(1, 0, 2).reshape(out, n * inp))
    else:  # mix the outputs of the n stacked weights
        y = F.linear(x0, weight.reshape(n * out, inp)).reshape(b, -1, n, out)
        y = torch.einsum("bmno,bn->bmo", y, a)
    if bias is not None:
        y = y + (a @ bias)[:, None, :]
    return y.reshape(b, *mid, out).movedim(0, bd)


class ManifoldLinear(ManifoldOp):
    """``nn.Linear`` whose weight and bias move on a manifold.

    .. math::

        y_i = W(s_i)\\, x_i + b(s_i), \\qquad W(s) = \\sum_k a_k(s) W_k,
        \\quad b(s) = \\sum_k a_k(s) b_k

    Parameters: ``weight`` ``[n, out_features, in_features]``, ``bias``
    ``[n, out_features]`` (or ``None``). Called as ``layer(x, s)``; the batch is
    dim 0 of ``x`` (any further leading dims are kept).

    Args:
        manifold: the topology.
        in_features, out_features, bias: as ``nn.Linear``.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> layer = wm.ManifoldLinear(wm.Ellipse(), 4, 2)
        >>> layer(torch.randn(8, 4), torch.rand(8)).shape
        torch.Size([8, 2])
    """

    def __init__(
        self,
        manifold: Manifold,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(manifold)
        self.in_features = in_features
        self.out_features = out_features
        plain = nn.Linear(in_features, out_features, bias, device=device, dtype=dtype)
        n = manifold.n
        self.register_manifold_parameter(
            "weight", nn.Parameter(torch.stack([plain.weight.detach()] * n))
        )
        if bias:
            self.register_manifold_parameter(
                "bias", nn.Parameter(torch.stack([plain.bias.detach()] * n))
            )
        else:
            self.register_parameter("bias", None)

    def _plain(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def _basis_op(self, x: Tensor, weight: Tensor, bias: Tensor | None, a: Tensor,
                  bd: int) -> Tensor:
        return linear_basis(x, weight, bias, a, bd, self._mix_inputs)

    def _make_plain(self) -> nn.Linear:
        return nn.Linear(self.in_features, self.out_features, self.bias is not None,
                         device=self.weight.device, dtype=self.weight.dtype)

    @classmethod
    def from_plain(cls, module: nn.Linear, manifold: Manifold) -> ManifoldLinear:
        """A manifold layer with the configuration of ``module`` (weights set by the caller)."""
        return cls(manifold, module.in_features, module.out_features, module.bias is not None,
                   device=module.weight.device, dtype=module.weight.dtype)

    def extra_repr(self) -> str:
        return (f"{self.manifold!r}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")
