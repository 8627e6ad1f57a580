"""Embedding table on a manifold: :class:`ManifoldEmbedding`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..topology import Manifold
from .linear_op import ManifoldOp

__all__ = ["ManifoldEmbedding"]


class ManifoldEmbedding(ManifoldOp):
    """``nn.Embedding`` whose table moves on a manifold.

    .. math:: y_i = E(s_i)[\\mathrm{idx}_i], \\qquad E(s) = \\sum_k a_k(s) E_k

    Parameter ``weight`` ``[n, num_embeddings, embedding_dim]``. ``padding_idx``
    and ``scale_grad_by_freq`` behave as in ``nn.Embedding``; ``max_norm``
    (which renormalises the table in place during the forward pass) and
    ``sparse`` gradients (which the metric preconditioning cannot multiply) are
    not supported.

    Raises:
        ValueError: for ``max_norm`` or ``sparse=True``.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> emb = wm.ManifoldEmbedding(wm.Line(), 10, 4)
        >>> emb(torch.tensor([[1, 2], [3, 4]]), torch.tensor([0.0, 1.0])).shape
        torch.Size([2, 2, 4])
    """

    bias = None

    def __init__(self, manifold: Manifold, num_embeddings: int, embedding_dim: int,
                 padding_idx: int | None = None, max_norm: float | None = None,
                 norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        if max_norm is not None:
            raise ValueError(
                "ManifoldEmbedding does not support max_norm: it renormalises the table in "
                "place, which has no meaning for a manifold of tables")
        if sparse:
            raise ValueError(
                "ManifoldEmbedding does not support sparse=True: the metric "
                "preconditioning needs dense gradients")
        super().__init__(manifold)
        plain = nn.Embedding(num_embeddings, embedding_dim, padding_idx, device=device,
                             dtype=dtype)
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = plain.padding_idx
        self.scale_grad_by_freq = scale_grad_by_freq
        self.register_manifold_parameter(
            "weight", nn.Parameter(torch.stack([plain.weight.detach()] * manifold.n)))

    def _plain(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.embedding(x, weight, self.padding_idx, None, 2.0, self.scale_grad_by_freq)

    def _basis_op(self, x: Tensor, weight: Tensor, bias: Tensor | None, a: Tensor,
                  bd: int) -> Tensor:
        n, num, dim = weight.shape
        table = weight.permute(1, 0, 2).reshape(num, n * dim)
        y = F.embedding(x.movedim(bd, 0), table, self.padding_idx, None, 2.0,
                        self.scale_grad_by_freq)
        shape = y.shape[:-1]
        y = y.reshape(shape[0], -1, n, dim)
        y = torch.einsum("bmnd,bn->bmd", y, a).reshape(*shape, dim)
        return y.movedim(0, bd)

    def _work_per_example(self, x: Tensor, bd: int) -> float:
        return x.numel() / max(1, x.shape[bd]) * self.embedding_dim

    def _make_plain(self) -> nn.Embedding:
        return nn.Embedding(self.num_embeddings, self.embedding_dim, self.padding_idx,
                            scale_grad_by_freq=self.scale_grad_by_freq,
                            device=self.weight.device, dtype=self.weight.dtype)

    @classmethod
    def from_plain(cls, module: nn.Embedding, manifold: Manifold) -> ManifoldEmbedding:
        """A manifold embedding with the configuration of ``module``."""
        return cls(manifold, module.num_embeddings, module.embedding_dim, module.padding_idx,
                   module.max_norm, module.norm_type, module.scale_grad_by_freq, module.sparse,
                   device=module.weight.device, dtype=module.weight.dtype)

    def extra_repr(self) -> str:
        return f"{self.manifold!r}, {self.num_embeddings}, {self.embedding_dim}"
