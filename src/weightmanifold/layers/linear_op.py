"""Dispatch of a linear op (dense, conv, embedding) over a batch with per-example conditions.

Because each op is linear in its weight,

.. math:: W(s_i)\\, x_i = \\sum_k a_k(s_i)\\, (W_k x_i),

a batch is computed with only the ``n`` basis tensors in memory. Three paths,
chosen per call, all exactly equal to materialising :math:`W(s_i)` per example:

* **single** — one distinct condition in the batch: materialise :math:`W(s)`
  once and run the plain op (at inference with one ``s`` this costs exactly a
  plain network);
* **shared** — at most as many distinct points ``U`` as basis points ``n``:
  materialise ``U`` weights and run the plain op on each group of examples;
* **basis** — otherwise: one op on the stacked basis, either with ``n×`` the
  output channels whose outputs are mixed per example with :math:`a_k(s_i)`, or
  (when the input is the smaller side) on inputs pre-scaled by :math:`a_k(s_i)`
  and stacked along the input channels, against the basis concatenated along
  its input axis. Both are the same sum; the path with the smaller ``n×``
  intermediate tensor is taken.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Conditioning, ManifoldModule

__all__ = ["ManifoldOp"]


class ManifoldOp(ManifoldModule):
    """Base of manifold layers wrapping a linear op with a weight and an optional bias.

    Subclasses implement :meth:`_plain` (the op with one weight and bias) and
    :meth:`_basis_forward` (the op on the stacked basis, mixed per example).
    The weight parameter is ``weight`` (``[n, *plain_shape]``) and the bias
    ``bias`` (``[n, out]``) or ``None``.

    Attributes:
        mix: for the basis path of dense and conv layers, ``"auto"`` (the
            smaller intermediate), ``"input"`` or ``"output"`` mixing.
        path: ``"auto"`` (see :meth:`use_shared`), or force ``"shared"`` or
            ``"basis"`` for batches with more than one distinct condition.
    """

    mix: str = "auto"
    path: str = "auto"

    def materialise(self, a: Tensor) -> tuple[Tensor, Tensor | None]:
        """Weight and bias at one point with coefficients ``a`` (``[n]``)."""
        n = self.manifold.n
        a = a.to(self.weight.dtype)
        w = (a @ self.weight.reshape(n, -1)).reshape(self.weight.shape[1:])
        b = None if self.bias is None else a @ self.bias
        return w, b

    def forward(self, x: Tensor, s: object = None) -> Tensor:
        """Apply the op at the conditions ``s`` (one per example, or one for the batch).

        Args:
            x: the input, batch along ``batch_dim`` (0 unless converted otherwise).
            s: conditions as accepted by the manifold, or ``None`` inside a
                :class:`~weightmanifold.conversion.ManifoldModel` call.

        Raises:
            ValueError: if ``s`` is missing, invalid, or does not match the batch.
        """
        cond, bd = self._resolve(s)
        self._check_batch(x, cond, bd)
        if cond.num_unique == 1:
            return self._plain(x, *self.materialise(cond.unique[0]))
        if self.use_shared(cond):
            return self._shared_forward(x, cond, bd)
        return self._basis_forward(x, cond.coefficients.to(self.weight.dtype), bd)

    def use_shared(self, cond: Conditioning) -> bool:
        """Whether a batch runs per distinct condition (shared) rather than on the basis.

        ``"auto"``: when the batch holds at most as many distinct points of the
        manifold as basis points. The shared path does the arithmetic of one
        plain network per example (plus one weight materialisation per point);
        the basis path ``n`` times that. At ``U = n`` the shared path was the
        faster of the two on the paper CNN; piecewise-constant "experts"
        (``BSpline(n, degree=0)``) always take it, at the cost of one network.
        """
        if self.path not in ("auto", "shared", "basis"):
            raise ValueError(f"path must be 'auto', 'shared' or 'basis', got {self.path!r}")
        if self.path != "auto":
            return self.path == "shared"
        return cond.num_unique <= self.manifold.n

    def _shared_forward(self, x: Tensor, cond: Conditioning, bd: int) -> Tensor:
        order = torch.argsort(cond.index, stable=True)
        counts = torch.bincount(cond.index, minlength=cond.num_unique).tolist()
        parts = x.index_select(bd, order).split(counts, dim=bd)
        outs = [
            self._plain(part, *self.materialise(cond.unique[u]))
            for u, part in enumerate(parts)
        ]
        return torch.cat(outs, dim=bd).index_select(bd, torch.argsort(order))

    def _mix_inputs(self, inputs_smaller: bool) -> bool:
        if self.mix not in ("auto", "input", "output"):
            raise ValueError(f"mix must be 'auto', 'input' or 'output', got {self.mix!r}")
        return inputs_smaller if self.mix == "auto" else self.mix == "input"

    def to_plain(self, a: Tensor) -> nn.Module:
        """The ``torch.nn`` twin of this layer, its tensors at coefficients ``a`` (``[n]``)."""
        w, b = self.materialise(a)
        out = self._make_plain()
        with torch.no_grad():
            if w is not None:
                out.weight.copy_(w)
            if b is not None:
                out.bias.copy_(b)
        return out

    def _make_plain(self) -> nn.Module:
        """A fresh ``torch.nn`` module with this layer's configuration, device and dtype."""
        raise NotImplementedError

    def _plain(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _basis_forward(self, x: Tensor, a: Tensor, bd: int) -> Tensor:
        raise NotImplementedError
