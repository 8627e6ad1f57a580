"""Normalisation layers whose affine parameters move on a manifold.

:class:`ManifoldLayerNorm`, :class:`ManifoldGroupNorm` and
:class:`ManifoldBatchNorm1d` / ``2d`` / ``3d`` normalise exactly as their
``torch.nn`` counterparts and then apply a per-example affine map

.. math:: y_i = \\gamma(s_i) \\odot \\hat x_i + \\beta(s_i), \\qquad
          \\gamma(s) = \\sum_k a_k(s) \\gamma_k,\\ \\beta(s) = \\sum_k a_k(s) \\beta_k .

The affine parameters are small, so they are materialised per example.

**Batch-norm running statistics are shared by the whole manifold**: they are
the statistics of the activations of the batches seen in training, pooled over
all their conditions, exactly as a plain ``BatchNorm`` in a network fed the
same conditioned batches would keep them; only :math:`\\gamma, \\beta` depend on
``s``. An exported network (:func:`weightmanifold.at`) carries those same
statistics, so in eval mode it equals the manifold network at that ``s``.
(Per-condition statistics would need a binning of ``s`` and would not be a
smooth function of it.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..topology import Manifold
from .linear_op import ManifoldOp

__all__ = [
    "ManifoldBatchNorm1d", "ManifoldBatchNorm2d", "ManifoldBatchNorm3d",
    "ManifoldGroupNorm", "ManifoldLayerNorm",
]


class _AffineNorm(ManifoldOp):
    """Shared machinery: manifold ``weight``/``bias`` of shape ``[n, *affine_shape]``."""

    def _init_affine(self, manifold: Manifold, plain: nn.Module) -> None:
        n = manifold.n
        if getattr(plain, "weight", None) is not None:
            self.register_manifold_parameter(
                "weight", nn.Parameter(torch.stack([plain.weight.detach()] * n)))
        else:
            self.register_parameter("weight", None)
        if getattr(plain, "bias", None) is not None:
            self.register_manifold_parameter(
                "bias", nn.Parameter(torch.stack([plain.bias.detach()] * n)))
        else:
            self.register_parameter("bias", None)

    def materialise(self, a: Tensor) -> tuple[Tensor | None, Tensor | None]:
        w = None if self.weight is None else a.to(self.weight.dtype) @ self.weight.flatten(1)
        b = None if self.bias is None else a.to(self.bias.dtype) @ self.bias.flatten(1)
        shape = (self.weight if self.weight is not None else self.bias).shape[1:]
        return (None if w is None else w.reshape(shape), None if b is None else b.reshape(shape))

    def forward(self, x: Tensor, s: object = None) -> Tensor:
        """Normalise ``x`` and apply the affine map at the conditions ``s`` (see module doc)."""
        if self.weight is None and self.bias is None:
            return self._plain(x, None, None)
        cond = self._resolve(s)
        a, _ = self._coefficients(cond)
        x = self._check_batch(x, cond)
        if cond.batch_size == 1:
            return self._plain(x, *self.materialise(a[0]))
        y = self._plain(x, None, None)
        return self._affine(y, a, cond.batch_dim)

    def _per_example(self, p: Tensor | None, a: Tensor) -> Tensor | None:
        if p is None:
            return None
        return (a.to(p.dtype) @ p.flatten(1)).reshape(a.shape[0], *p.shape[1:])

    def _affine(self, y: Tensor, a: Tensor, bd: int) -> Tensor:
        if bd != 0:
            raise ValueError(f"{type(self).__name__} takes its batch along dim 0, not {bd}")
        trailing = [1] * (y.ndim - 2)
        w = self._per_example(self.weight, a)
        b = self._per_example(self.bias, a)
        if w is not None:
            y = y * w.reshape(*w.shape, *trailing)
        if b is not None:
            y = y + b.reshape(*b.shape, *trailing)
        return y

class ManifoldLayerNorm(_AffineNorm):
    """``nn.LayerNorm`` with manifold ``weight``/``bias`` ``[n, *normalized_shape]``.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> ln = wm.ManifoldLayerNorm(wm.Line(), 6)
        >>> ln(torch.randn(3, 5, 6), torch.rand(3)).shape
        torch.Size([3, 5, 6])
    """

    def __init__(self, manifold: Manifold, normalized_shape: int | tuple[int, ...],
                 eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True, *,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(manifold)
        plain = nn.LayerNorm(normalized_shape, eps, elementwise_affine, bias, device=device,
                             dtype=dtype)
        self.normalized_shape = plain.normalized_shape
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self._init_affine(manifold, plain)

    def _plain(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)

    def _affine(self, y: Tensor, a: Tensor, bd: int) -> Tensor:
        lead = y.ndim - len(self.normalized_shape) - 1
        if lead < 0:
            raise ValueError(f"ManifoldLayerNorm needs a batch axis, got shape {list(y.shape)}")
        for p, op in ((self._per_example(self.weight, a), torch.mul),
                      (self._per_example(self.bias, a), torch.add)):
            if p is not None:
                y = op(y, p.reshape(p.shape[0], *([1] * lead), *p.shape[1:]).movedim(0, bd))
        return y

    def _make_plain(self) -> nn.LayerNorm:
        ref = self.weight if self.weight is not None else self.bias
        return nn.LayerNorm(self.normalized_shape, self.eps, self.elementwise_affine,
                            self.bias is not None, device=ref.device, dtype=ref.dtype)

    @classmethod
    def from_plain(cls, module: nn.LayerNorm, manifold: Manifold) -> ManifoldLayerNorm:
        ref = module.weight if module.weight is not None else module.bias
        return cls(manifold, module.normalized_shape, module.eps, module.elementwise_affine,
                   module.bias is not None, device=None if ref is None else ref.device,
                   dtype=None if ref is None else ref.dtype)

    def extra_repr(self) -> str:
        return f"{self.manifold!r}, {self.normalized_shape}, eps={self.eps}"


class ManifoldGroupNorm(_AffineNorm):
    """``nn.GroupNorm`` with manifold ``weight``/``bias`` ``[n, num_channels]``.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> gn = wm.ManifoldGroupNorm(wm.Ellipse(), 2, 4)
        >>> gn(torch.randn(3, 4, 5, 5), torch.rand(3)).shape
        torch.Size([3, 4, 5, 5])
    """

    def __init__(self, manifold: Manifold, num_groups: int, num_channels: int,
                 eps: float = 1e-5, affine: bool = True, *,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(manifold)
        plain = nn.GroupNorm(num_groups, num_channels, eps, affine, device=device, dtype=dtype)
        self.num_groups, self.num_channels, self.eps, self.affine = (
            num_groups, num_channels, eps, affine)
        self._init_affine(manifold, plain)

    def _plain(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        return F.group_norm(x, self.num_groups, weight, bias, self.eps)

    def _make_plain(self) -> nn.GroupNorm:
        return nn.GroupNorm(self.num_groups, self.num_channels, self.eps, self.affine,
                            device=self.weight.device, dtype=self.weight.dtype)

    @classmethod
    def from_plain(cls, module: nn.GroupNorm, manifold: Manifold) -> ManifoldGroupNorm:
        return cls(manifold, module.num_groups, module.num_channels, module.eps, module.affine,
                   device=None if module.weight is None else module.weight.device,
                   dtype=None if module.weight is None else module.weight.dtype)

    def extra_repr(self) -> str:
        return f"{self.manifold!r}, {self.num_groups}, {self.num_channels}, eps={self.eps}"


class _ManifoldBatchNorm(_AffineNorm):
    """``nn.BatchNormNd`` with manifold affine parameters and shared running statistics."""

    _plain_cls: type[nn.Module]

    def __init__(self, manifold: Manifold, num_features: int, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(manifold)
        plain = self._plain_cls(num_features, eps, momentum, affine, track_running_stats,
                                device=device, dtype=dtype)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self._init_affine(manifold, plain)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, getattr(plain, name))

    def _plain(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        # the logic of torch.nn.modules.batchnorm._BatchNorm.forward
        self._plain_cls._check_input_dim(self, x)  # type: ignore[attr-defined]
        eaf = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            eaf = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if track else None,
                            self.running_var if track else None, weight, bias, bn_training,
                            eaf, self.eps)

    def _make_plain(self) -> nn.Module:
        out = self._plain_cls(self.num_features, self.eps, self.momentum, self.affine,
                              self.track_running_stats)
        ref = self.weight if self.weight is not None else self.running_mean
        if ref is not None:
            out = out.to(device=ref.device, dtype=ref.dtype)
        if self.track_running_stats:
            out.running_mean.copy_(self.running_mean)
            out.running_var.copy_(self.running_var)
            out.num_batches_tracked.copy_(self.num_batches_tracked)
        out.train(self.training)
        return out

    @classmethod
    def from_plain(cls, module: nn.Module, manifold: Manifold) -> _ManifoldBatchNorm:
        ref = module.weight if module.weight is not None else module.running_mean
        out = cls(manifold, module.num_features, module.eps, module.momentum, module.affine,
                  module.track_running_stats, device=None if ref is None else ref.device,
                  dtype=None if ref is None else ref.dtype)
        if module.track_running_stats:
            out.running_mean.copy_(module.running_mean)
            out.running_var.copy_(module.running_var)
            out.num_batches_tracked.copy_(module.num_batches_tracked)
        return out

    def extra_repr(self) -> str:
        return (f"{self.manifold!r}, {self.num_features}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class ManifoldBatchNorm1d(_ManifoldBatchNorm):
    """``nn.BatchNorm1d`` on a manifold (affine only; statistics shared, see module doc)."""

    _plain_cls = nn.BatchNorm1d


class ManifoldBatchNorm2d(_ManifoldBatchNorm):
    """``nn.BatchNorm2d`` on a manifold (affine only; statistics shared, see module doc).

    Examples:
        >>> import torch, weightmanifold as wm
        >>> bn = wm.ManifoldBatchNorm2d(wm.Line(), 4)
        >>> bn(torch.randn(3, 4, 5, 5), torch.rand(3)).shape
        torch.Size([3, 4, 5, 5])
    """

    _plain_cls = nn.BatchNorm2d


class ManifoldBatchNorm3d(_ManifoldBatchNorm):
    """``nn.BatchNorm3d`` on a manifold (affine only; statistics shared, see module doc)."""

    _plain_cls = nn.BatchNorm3d
