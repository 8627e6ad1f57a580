"""Per-example squared weight norms on the manifold, for the s-weighted L2 penalty (paper Eq. 14).

.. math::

    \\ell_{\\mathcal M}(x_i, y_i, s_i) = \\ell(x_i, y_i; M(s_i, P))
        + s_i\\, \\lambda\\, \\lVert M(s_i, P) \\rVert_2^2

For a manifold tensor :math:`P \\in \\mathbb R^{n \\times d}`,
:math:`\\lVert \\sum_k a_k(s) P_k \\rVert^2 = a(s)^T (P P^T)\\, a(s)`, so the norm at every
example costs one ``n × n`` Gram matrix of the basis tensors — no per-example
weights are materialised.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers.base import ManifoldModule

__all__ = ["squared_norm"]


def squared_norm(model: nn.Module, s: object, *, include_shared: bool = True) -> Tensor:
    """:math:`\\lVert W(s_i) \\rVert^2` of all of ``model``'s weights at every condition ``s_i``.

    Args:
        model: any module; its manifold layers contribute :math:`a^T P P^T a`, its
            ordinary parameters (the same at every ``s``) their plain squared norm.
        s: conditions, one per example (as the model's manifold accepts them).
            For a model without manifold layers, anything with a length.
        include_shared: also count the ordinary parameters.

    Returns:
        Tensor ``[B]``, differentiable with respect to the parameters.

    Raises:
        ValueError: if the model's manifold layers live on different manifolds.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> model = wm.manifoldify(torch.nn.Linear(3, 2), wm.Line())
        >>> wm.squared_norm(model, torch.tensor([0.0, 1.0])).shape
        torch.Size([2])
    """
    layers = [m for m in model.modules() if isinstance(m, ManifoldModule)]
    manifolds = {m.manifold for m in layers}
    if len(manifolds) > 1:
        raise ValueError(
            f"squared_norm needs one manifold, the model has {sorted(map(repr, manifolds))}")
    seen: set[int] = set()
    total: Tensor | None = None
    if manifolds:
        manifold = manifolds.pop()
        a = manifold.coefficients(s)
        for layer in layers:
            for _, p in layer.manifold_parameters():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                flat = p.reshape(p.shape[0], -1)
                gram = flat @ flat.T
                ai = a.to(p.dtype)
                term = ((ai @ gram) * ai).sum(dim=1)
                total = term if total is None else total + term
        batch = a.shape[0]
    else:
        batch = len(s)  # type: ignore[arg-type]
    if include_shared:
        for p in model.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                term = p.pow(2).sum()
                total = term if total is None else total + term
    if total is None:
        return torch.zeros(batch)
    return total.expand(batch) if total.ndim == 0 else total
