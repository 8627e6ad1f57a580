"""Dense layer on a manifold: :class:`ManifoldLinear`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..topology import Manifold
from .linear_op import ManifoldOp

__all__ = ["ManifoldLinear", "linear_banded", "linear_basis"]

#: for each basis index, the runs ``(lo, hi)`` of a window-sorted batch whose window holds it
Spans = tuple[tuple[tuple[int, int], ...], ...]


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


def _product(x: Tensor, weight: Tensor, bias: Tensor | None, k: int,
             transposed: bool) -> Tensor:
    """:math:`W_k x + b_k` for rows ``x`` ``[..., in]`` (either weight layout)."""
    z = x @ (weight[k] if transposed else weight[k].t())
    return z if bias is None else z + bias[k]


def banded_reference(x: Tensor, coef: Tensor, weight: Tensor, bias: Tensor | None,
                     spans: Spans, transposed: bool) -> Tensor:
    """The banded product in plain differentiable ops (``x`` ``[B, M, in]``, sorted by window).

    The slow, obviously-correct twin of :class:`_BandedLinear`: its backward
    differentiates this when a graph of the gradient is asked for
    (``create_graph=True``), and the tests compare the two.
    """
    out = weight.shape[2] if transposed else weight.shape[1]
    pieces = []
    for k, runs in enumerate(spans):
        for lo, hi in runs:
            piece = coef[lo:hi, k, None, None] * _product(x[lo:hi], weight, bias, k, transposed)
            pieces.append(nn.functional.pad(piece, (0, 0, 0, 0, lo, x.shape[0] - hi)))
    return torch.stack(pieces).sum(0) if pieces else x.new_zeros(*x.shape[:2], out)


class _BandedLinear(torch.autograd.Function):
    """:func:`linear_banded` with a backward pass that writes every basis tensor's
    gradient into one buffer (autograd through ``unbind`` would stack ``n`` copies).

    With ``create_graph=True`` its backward differentiates :func:`banded_reference`
    instead, so gradients of gradients work.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, coef: Tensor, weight: Tensor, bias: Tensor | None,
                spans: Spans, transposed: bool) -> Tensor:
        b, m, inp = x.shape
        out = weight.shape[2] if transposed else weight.shape[1]
        y = x.new_zeros(b, m, out)
        for k, runs in enumerate(spans):
            for lo, hi in runs:
                z = _product(x[lo:hi].reshape(-1, inp), weight, bias, k, transposed)
                y[lo:hi] += coef[lo:hi, k, None, None] * z.view(hi - lo, m, out)
        ctx.save_for_backward(x, coef, weight, bias)
        ctx.spans, ctx.transposed = spans, transposed
        return y

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():  # create_graph: a differentiable backward
            return _reference_backward(ctx, gy)
        return _banded_backward(ctx, gy)


def _reference_backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
    x, coef, weight, bias = ctx.saved_tensors
    inputs = (x, coef, weight, bias)
    want = [i for i, t in enumerate(inputs) if ctx.needs_input_grad[i] and t is not None]
    y = banded_reference(x, coef, weight, bias, ctx.spans, ctx.transposed)
    grads = torch.autograd.grad(y, [inputs[i] for i in want], gy, create_graph=True,
                                allow_unused=True)
    out: list[Tensor | None] = [None] * 6
    for i, g in zip(want, grads, strict=True):
        out[i] = torch.zeros_like(inputs[i]) if g is None else g  # type: ignore[arg-type]
    return tuple(out)


@torch.no_grad()
def _banded_backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
    x, coef, weight, bias = ctx.saved_tensors
    spans, transposed = ctx.spans, ctx.transposed
    need_x, need_coef, need_w, need_b = ctx.needs_input_grad[:4]
    inp = x.shape[-1]
    out = gy.shape[-1]
    gx = torch.zeros_like(x) if need_x else None
    gcoef = torch.zeros_like(coef) if need_coef else None
    gw = torch.empty_like(weight) if need_w else None
    gb = torch.zeros_like(bias) if need_b and bias is not None else None
    for k, runs in enumerate(spans):
        wk = weight[k] if transposed else weight[k].t()  # [in, out]
        first = True
        for lo, hi in runs:
            g = (gy[lo:hi] * coef[lo:hi, k, None, None]).reshape(-1, out)
            xk = x[lo:hi].reshape(-1, inp)
            if gx is not None:  # in place: no temporary the size of the input
                gx[lo:hi].view(-1, inp).addmm_(g, wk.t())
            if gw is not None:  # [out, in], or [in, out] when transposed
                left, right = (xk.t(), g) if transposed else (g.t(), xk)
                if first:
                    torch.mm(left, right, out=gw[k])
                else:
                    gw[k].addmm_(left, right)
            if gb is not None:
                gb[k] += g.sum(0)
            if gcoef is not None:  # recomputed: training never differentiates in s
                z = _product(xk, weight, bias, k, transposed)
                gcoef[lo:hi, k] = (gy[lo:hi].reshape(-1, out) * z).view(
                    hi - lo, -1).sum(1)
            first = False
        if gw is not None and first:  # no example holds k
            gw[k].zero_()
    return gx, gcoef, gw, gb, None, None


def linear_banded(x: Tensor, coef: Tensor, weight: Tensor, bias: Tensor | None, spans: Spans,
                  bd: int, transposed: bool = False) -> Tensor:
    """:math:`y_i = \\sum_k a_k(s_i) (W_k x_i + b_k)` on a batch sorted by window.

    One product per basis tensor ``k``, on the runs of examples whose window holds
    it (``spans[k]``; :attr:`~weightmanifold.layers.conditioning.Windows.spans`):
    ``p + 1`` products per example, every basis tensor read once and its gradient
    written once.

    Args:
        x: the input, batch along ``bd``, sorted by window.
        coef: the coefficients ``[B, n]`` in the same order.
        weight: the basis ``[n, out, in]`` (``[n, in, out]`` when ``transposed``).
        bias: ``[n, out]`` or ``None``.
        spans: per basis index, the runs ``(lo, hi)`` of examples.
        bd: the batch axis.
        transposed: the layout of ``transformers``' ``Conv1D``.
    """
    x0 = x.movedim(bd, 0)
    b, mid, inp = x0.shape[0], x0.shape[1:-1], x0.shape[-1]
    y = _BandedLinear.apply(x0.reshape(b, -1, inp), coef, weight, bias, spans, transposed)
    return y.reshape(b, *mid, y.shape[-1]).movedim(0, bd)


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

    _banded = True  # B-spline batches: one product per basis tensor on its examples

    def _plain(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def _basis_op(self, x: Tensor, weight: Tensor, bias: Tensor | None, a: Tensor,
                  bd: int) -> Tensor:
        return linear_basis(x, weight, bias, a, bd, self._mix_inputs)

    def _banded_op(self, x: Tensor, coef: Tensor, spans: Spans, bd: int) -> Tensor:
        return linear_banded(x, coef, self.weight, self.bias, spans, bd)

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
