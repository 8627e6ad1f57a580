"""Low-rank manifolds: a shared weight plus rank-``r`` deltas mixed over ``s``.

Every weight of a low-rank layer is

.. math::

    W(s) = W_0 + \\sum_{k=1}^{n} a_k(s)\\, U_k V_k, \\qquad
    U_k \\in \\mathbb R^{p \\times r},\\; V_k \\in \\mathbb R^{r \\times q},

where the weight is seen as a ``p × q`` matrix: its first axis (output
features, output channels, embedding rows; the input features of a transposed
linear layer) against all the others (input features; input channels × kernel
of a convolution, as LoRA does for convolutions; embedding columns). A grouped
convolution has one such factorisation per group. Parameters: ``weight`` (``W₀``,
the plain layer's shape, shared by every ``s``), ``weight_up`` ``[n, p, r]`` and
``weight_down`` ``[n, g·r, *weight.shape[1:]]``; the bias (a vector, for which a
rank means nothing) stays a full-rank manifold tensor ``[n, out]``.

Because the op is linear in its weight, a batch with a condition per example is

.. math::

    y_i = \\mathrm{op}(x_i; W_0) + \\sum_k a_k(s_i)\\, U_k \\big(V_k x_i\\big) + b(s_i),

one plain op on ``W₀`` fused with the ``n·r`` down-projections (their outputs
concatenated to the plain op's), the ``n·r`` intermediate features scaled by
``a_k(s_i)``, and one product with the ``n`` up-projections (a ``1×1``
convolution for convolutions): about the cost of one plain network when
``n·r`` is small against the layer's width, and no per-example weight is ever
materialised. A single condition (``B = 1``) or a grouped batch materialises
``W(s) = W₀ + Σ a_k U_k V_k`` and runs the plain op.

Since :math:`\\sum_k c_k a_k(s) = 1` (:meth:`Manifold.constant`), a low-rank
manifold is the full-rank manifold with basis :math:`W_k = c_k W_0 + U_k V_k`
(:meth:`LowRankOp.dense_basis`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..low_rank_metric import LowRankGeometry
from ..topology import Manifold
from .base import _decode_identity, _encode_identity
from .conv import ManifoldConv1d, ManifoldConv2d, ManifoldConv3d, _ManifoldConvNd
from .embedding import ManifoldEmbedding
from .linear import ManifoldLinear
from .linear_op import ManifoldOp
from .transposed_linear import ManifoldTransposedLinear

__all__ = ["LowRankConv1d", "LowRankConv2d", "LowRankConv3d", "LowRankEmbedding",
           "LowRankLinear", "LowRankOp", "LowRankTransposedLinear", "check_rank",
           "low_rank_class"]


def check_rank(rank: object, weight_shape: tuple[int, ...], groups: int, where: str) -> int:
    """``rank`` validated for a weight of ``weight_shape`` (``groups`` blocks along dim 0).

    Raises:
        TypeError: if ``rank`` is not an integer.
        ValueError: if it is < 1 or larger than the smaller side of the layer's
            ``p × q`` matrix (per group), naming the layer.
    """
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise TypeError(f"{where}: rank must be an integer, got {rank!r} "
                        f"({type(rank).__name__})")
    p, q = weight_shape[0] // groups, math.prod(weight_shape[1:])
    if rank < 1:
        raise ValueError(f"{where}: rank must be >= 1, got {rank}")
    if rank > min(p, q):
        raise ValueError(
            f"{where}: rank {rank} exceeds the layer's dimensions: its weight "
            f"{list(weight_shape)} is a {p} x {q} matrix"
            + (f" per group ({groups} groups)" if groups > 1 else "")
            + f", of rank at most {min(p, q)}; use a smaller rank, or rank=None for this "
            "layer (a callable rank(name, module) chooses per layer)")
    return rank


class LowRankOp(ManifoldOp):
    """Mixin of the low-rank twins of the linear-op layers (see the module docstring).

    A subclass lists it before the full-rank class (``class LowRankLinear(LowRankOp,
    ManifoldLinear)``) and implements :meth:`_low_rank_basis`. Construct through
    :meth:`from_plain` (or the full-rank constructor's arguments plus ``rank=``).

    Attributes:
        rank: ``r``, the rank of each basis point's delta (per group).
        groups: blocks of the weight's first axis (a grouped convolution's groups).
    """

    rank: int
    groups: int
    _local_basis = False  # the factored path already costs about one network
    _kernel_per_example = False  # W₀ plus factors: no stacked basis to mix kernels from

    def _make_low_rank(self, rank: object) -> None:
        """Replace the full-rank ``weight`` by ``W₀`` and zero factors (called by ``__init__``)."""
        full = self.weight
        g = getattr(self, "groups", 1)
        self.rank = check_rank(rank, tuple(full.shape[1:]), g, type(self).__name__)
        n = self.manifold.n
        w0 = full.detach()[0].clone()
        del self._parameters["weight"]
        self._manifold_param_names.remove("weight")
        self.weight = nn.Parameter(w0)
        kw = {"dtype": w0.dtype, "device": w0.device}
        self.weight_up = nn.Parameter(torch.zeros(n, w0.shape[0], self.rank, **kw))
        self.weight_down = nn.Parameter(torch.zeros(n, g * self.rank, *w0.shape[1:], **kw))
        self._split_basis()

    # -- the factors as p × q blocks ------------------------------------------------------
    def factors(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(W₀, U, V)`` as blocks: ``[g, p/g, q]``, ``[n, g, p/g, r]``, ``[n, g, r, q]``."""
        g, n, r = getattr(self, "groups", 1), self.manifold.n, self.rank
        w0 = self.weight
        p = w0.shape[0] // g
        return (w0.reshape(g, p, -1), self.weight_up.reshape(n, g, p, r),
                self.weight_down.reshape(n, g, r, -1))

    def low_rank_parameters(self) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter]:
        """The parameters ``(weight, weight_up, weight_down)`` (for the preconditioner)."""
        return self.weight, self.weight_up, self.weight_down

    def delta(self, a: Tensor) -> Tensor:
        """:math:`\\sum_k a_k U_k V_k` at coefficients ``a`` (``[n]``), in the weight's shape."""
        _, u, v = self.factors()
        d = torch.einsum("k,kgpr,kgrq->gpq", a.to(u.dtype), u, v)
        return d.reshape(self.weight.shape)

    def dense_basis(self) -> Tensor:
        """The full-rank basis :math:`W_k = c_k W_0 + U_k V_k` of the same manifold ``[n, ...]``."""
        c = self.manifold.constant().to(dtype=self.weight.dtype, device=self.weight.device)
        _, u, v = self.factors()
        d = torch.einsum("kgpr,kgrq->kgpq", u, v).reshape(-1, *self.weight.shape)
        return c.reshape(-1, *([1] * self.weight.ndim)) * self.weight + d

    def materialise(self, a: Tensor) -> tuple[Tensor, Tensor | None]:
        a = a.to(self.weight.dtype)
        b = None if self.bias is None else a @ self.bias
        return self.weight + self.delta(a), b

    def _basis_forward(self, x: Tensor, a: Tensor, bd: int) -> Tensor:
        if not self._varying:  # no basis function varies (a point): one network for all
            return self._plain(x, *self.materialise(a[0]))
        return self._low_rank_basis(x, a, bd)

    def _low_rank_basis(self, x: Tensor, a: Tensor, bd: int) -> Tensor:
        raise NotImplementedError

    def _split_basis(self) -> None:
        """Record the basis points whose function varies over ``s`` and the constant ones.

        A constant basis function (the ellipse's :math:`a_1 = 1`) contributes the
        same :math:`m_k U_k V_k` to every example: the per-example path folds it
        into the plain op's weight and mixes only the varying ones per example. A
        property of the manifold, computed once at construction (Python values, so
        compiled programs see constants).
        """
        geo = LowRankGeometry.of(self.manifold)
        var = geo.covariance.diagonal()
        self._varying = tuple(k for k in range(self.manifold.n) if float(var[k]) > 1e-12)
        self._constant = tuple((k, float(geo.mean[k])) for k in range(self.manifold.n)
                               if k not in self._varying)

    def _per_example_parts(self, a: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``W₀`` with the constant deltas folded in, and the varying ``U``, ``V``, ``a``.

        Returns ``(w0 [weight shape], up [m, p, r], down [m, g·r, ...], a [B, m])``.
        """
        w0 = self.weight
        if self._constant:
            g = getattr(self, "groups", 1)
            p = w0.shape[0] // g
            fold = w0.reshape(g, p, -1)
            for k, value in self._constant:
                fold = fold + value * (self.weight_up[k].reshape(g, p, self.rank)
                                       @ self.weight_down[k].reshape(g, self.rank, -1))
            w0 = fold.reshape(w0.shape)
        if len(self._varying) == self.manifold.n:
            return w0, self.weight_up, self.weight_down, a
        sel = list(self._varying)
        return w0, self.weight_up[sel], self.weight_down[sel], a[:, sel]

    def _scale(self, h: Tensor, a: Tensor, channel_dim: int) -> Tensor:
        """The ``m·r`` features ``h`` (groups × m × r along ``channel_dim``) times ``a_k(s_i)``."""
        g, m, r = getattr(self, "groups", 1), a.shape[1], self.rank
        shape = list(h.shape)
        view = [*shape[:channel_dim], g, m, r, *shape[channel_dim + 1:]]
        scale = [1] * len(view)
        scale[0], scale[channel_dim + 1] = a.shape[0], m
        return (h.reshape(view) * a.reshape(scale)).reshape(shape)

    def _up_matrix(self, up: Tensor) -> Tensor:
        """Up-projections ``[m, p, r]`` side by side per group, ``[p, m·r]``."""
        g, m, r = getattr(self, "groups", 1), up.shape[0], self.rank
        p = self.weight.shape[0]
        return up.reshape(m, g, p // g, r).permute(1, 2, 0, 3).reshape(p, m * r)

    def _down_matrix(self, down: Tensor) -> Tensor:
        """Down-projections ``[m, g·r, ...]`` stacked, ``[g·m·r, ...]`` ordered (group, k, ρ)."""
        g, m, r = getattr(self, "groups", 1), down.shape[0], self.rank
        rest = self.weight.shape[1:]
        return down.reshape(m, g, r, *rest).transpose(0, 1).reshape(g * m * r, *rest)

    def _dense(self, x: Tensor, a: Tensor, a_v: Tensor, bd: int, first: Tensor,
               second: Tensor) -> Tensor:
        """A dense layer's per-example path: ``first`` ``[out + m·r, in]`` holds the plain
        weight and the projections applied to ``x``, ``second`` ``[out, m·r]`` the others."""
        out = second.shape[0]
        x0 = x.movedim(bd, 0)
        b, mid = x0.shape[0], x0.shape[1:-1]
        yh = F.linear(x0.reshape(b, -1, x0.shape[-1]), first)
        y, h = yh.split([out, yh.shape[-1] - out], dim=-1)
        y = y + F.linear(self._scale(h, a_v, 2), second)
        if self.bias is not None:
            y = y + (a @ self.bias)[:, None, :]
        return y.reshape(b, *mid, out).movedim(0, bd)

    # -- saving ----------------------------------------------------------------------------
    def get_extra_state(self) -> Tensor:
        """The manifold's identity and the rank (UTF-8 JSON bytes)."""
        return _encode_identity(self.manifold, rank=self.rank)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:  # type: ignore[override]
        where = prefix.rstrip(".") or type(self).__name__
        saved = _decode_identity(state_dict.get(prefix + "_extra_state")) or {}
        got = state_dict.get(prefix + "weight")
        full = got is not None and got.ndim == self.weight.ndim + 1
        if full or (saved and saved.get("rank") is None and prefix + "weight_up" not in
                    state_dict):
            error_msgs.append(
                f"{where}: the state dict was saved from a full-rank manifold model, but this "
                f"model is low-rank (rank {self.rank}); build it with the same rank "
                "(manifoldify(..., rank=None) for full rank)")
            return
        if saved.get("rank") not in (None, self.rank):
            error_msgs.append(f"{where}: the state dict was saved with rank {saved['rank']}, "
                              f"but this layer has rank {self.rank}")
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", rank={self.rank}"


class _LowRankDense(LowRankOp):
    """The constructor of the dense twins: their full-rank class's arguments plus ``rank``."""

    def __init__(self, manifold: Manifold, in_features: int, out_features: int,
                 bias: bool = True, *, rank: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__(manifold, in_features, out_features, bias,  # type: ignore[call-arg]
                         device=device, dtype=dtype)
        self._make_low_rank(rank)


class LowRankLinear(_LowRankDense, ManifoldLinear):
    """``nn.Linear`` with :math:`W(s) = W_0 + \\sum_k a_k(s) U_k V_k` (see :mod:`.low_rank`).

    Args:
        manifold, in_features, out_features, bias: as :class:`ManifoldLinear`.
        rank: ``r``, at most ``min(in_features, out_features)``.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> from weightmanifold.layers import LowRankLinear
        >>> layer = LowRankLinear(wm.Ellipse(), 16, 8, rank=2)
        >>> layer(torch.randn(4, 16), torch.rand(4)).shape
        torch.Size([4, 8])
    """

    def _low_rank_basis(self, x: Tensor, a: Tensor, bd: int) -> Tensor:
        w0, up, down, a_v = self._per_example_parts(a)
        return self._dense(x, a, a_v, bd, torch.cat([w0, self._down_matrix(down)]),
                           self._up_matrix(up))

    @classmethod
    def from_plain(cls, module: nn.Linear, manifold: Manifold, *, rank: int) -> LowRankLinear:
        return cls(manifold, module.in_features, module.out_features, module.bias is not None,
                   rank=rank, device=module.weight.device, dtype=module.weight.dtype)


class LowRankTransposedLinear(_LowRankDense, ManifoldTransposedLinear):
    """``y = x W(s) + b(s)`` with ``weight`` ``[in, out]`` (transformers' ``Conv1D``), low rank.

    The matrix rows are the input features: :math:`W(s) = W_0 + \\sum_k a_k U_k V_k`
    with ``U_k`` ``[in, r]`` and ``V_k`` ``[r, out]``.
    """

    def _low_rank_basis(self, x: Tensor, a: Tensor, bd: int) -> Tensor:
        w0, up, down, a_v = self._per_example_parts(a)
        # the rows of W are the inputs: x W0 and x U first, then the V's
        return self._dense(x, a, a_v, bd, torch.cat([w0, self._up_matrix(up)], dim=1).T,
                           down.reshape(-1, self.out_features).T)

    @classmethod
    def from_plain(cls, module: nn.Module, manifold: Manifold, *,
                   rank: int) -> LowRankTransposedLinear:
        w = module.weight
        return cls(manifold, w.shape[0], w.shape[1], module.bias is not None, rank=rank,
                   device=w.device, dtype=w.dtype)


class LowRankEmbedding(LowRankOp, ManifoldEmbedding):
    """``nn.Embedding`` with the table :math:`E(s) = E_0 + \\sum_k a_k U_k V_k`, low rank.

    ``U_k`` ``[num_embeddings, r]`` is looked up with the table (one lookup in
    ``[E_0 | U_1 … U_n]``), ``V_k`` ``[r, embedding_dim]`` mixes the looked-up
    rows. The padding row of ``U`` starts at zero and, as in ``nn.Embedding``,
    gets no gradient, so the padding row of :math:`E(s)` stays that of ``E₀``.
    """

    def __init__(self, manifold: Manifold, num_embeddings: int, embedding_dim: int,
                 padding_idx: int | None = None, max_norm: float | None = None,
                 norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, *, rank: int, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(manifold, num_embeddings, embedding_dim, padding_idx, max_norm,
                         norm_type, scale_grad_by_freq, sparse, device=device, dtype=dtype)
        self._make_low_rank(rank)

    def _low_rank_basis(self, x: Tensor, a: Tensor, bd: int) -> Tensor:
        dim = self.embedding_dim
        w0, up, down, a_v = self._per_example_parts(a)
        table = torch.cat([w0, self._up_matrix(up)], dim=1)
        yh = F.embedding(x.movedim(bd, 0), table, self.padding_idx, None, 2.0,
                         self.scale_grad_by_freq)
        shape = yh.shape[:-1]
        yh = yh.reshape(shape[0], -1, table.shape[1])
        y, h = yh.split([dim, table.shape[1] - dim], dim=-1)
        y = y + self._scale(h, a_v, 2) @ down.reshape(-1, dim)
        return y.reshape(*shape, dim).movedim(0, bd)

    @classmethod
    def from_plain(cls, module: nn.Embedding, manifold: Manifold, *,
                   rank: int) -> LowRankEmbedding:
        return cls(manifold, module.num_embeddings, module.embedding_dim, module.padding_idx,
                   module.max_norm, module.norm_type, module.scale_grad_by_freq, module.sparse,
                   rank=rank, device=module.weight.device, dtype=module.weight.dtype)


class _LowRankConvNd(LowRankOp, _ManifoldConvNd):
    """A convolution with :math:`W(s) = W_0 + \\sum_k a_k U_k V_k` per group.

    ``V_k`` is a convolution with ``r`` output channels per group and the
    layer's kernel, stride, padding and dilation (LoRA's factorisation of a
    convolution: the kernel as an ``out × (in/groups · kernel)`` matrix);
    ``U_k`` is a ``1×1`` convolution from those ``r`` channels to the group's
    output channels. Without groups, the plain convolution with ``W₀`` and the
    ``n·r`` down-convolutions run as one convolution with ``out + n·r`` output
    channels. Where the input is narrow (a first layer; decided from shapes by
    :meth:`_input_mixing_is_cheaper`, or forced with ``mix="input"``) the same sum
    runs instead as one convolution of the inputs ``[x, a_1 x, …, a_n x]`` against
    ``[W₀, U_1 V_1, …, U_n V_n]``.
    """

    def __init__(self, manifold: Manifold, in_channels: int, out_channels: int,
                 kernel_size: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 rank: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__(manifold, in_channels, out_channels, kernel_size, stride, padding,
                         dilation, groups, bias, padding_mode, device=device, dtype=dtype)
        self._make_low_rank(rank)

    def _low_rank_basis(self, x: Tensor, a: Tensor, bd: int) -> Tensor:
        self._check_batched(x, bd)
        cout, r = self.out_channels, self.rank
        w0, up, down, a_v = self._per_example_parts(a)
        m = a_v.shape[1]
        if self._mix_inputs(self._input_mixing_is_cheaper(x, m)):
            # a narrow input at high resolution (a first layer): the inputs [x, a_1 x, …]
            # against [W0, U_1 V_1, …] in one convolution beats an m·r-channel intermediate
            g, p = self.groups, cout // self.groups
            deltas = torch.einsum("kgpr,kgrq->kgpq", up.reshape(m, g, p, r),
                                  down.reshape(m, g, r, -1)).reshape(m, *w0.shape)
            basis = torch.cat([w0[None], deltas])
            y = self._input_mixed(x, basis, torch.cat([torch.ones_like(a[:, :1]), a_v], dim=1))
        else:
            y = self._factored(x, w0, up, down, a_v)
        if self.bias is not None:
            y = y + (a @ self.bias).reshape(x.shape[0], cout, *([1] * self._dims))
        return self._like_input(y, x)

    #: floating-point operations that moving one value to or from memory costs, in the
    #: cost model below (CPU convolutions with few channels are bound by memory)
    _FLOPS_PER_VALUE = 16

    def _input_mixing_is_cheaper(self, x: Tensor, m: int) -> bool:
        """Whether the input-mixed convolution beats the factored one, from shapes alone.

        Per output position, counting multiply-adds plus ``_FLOPS_PER_VALUE`` per
        value written or read: factored, ``in/g·K·(out + g·m·r) + m·r·out`` and about
        ``5·out + 4·g·m·r`` values (the fused output, the scaled features, the
        ``1×1`` convolution and the sum); input-mixed, ``(m + 1)·in/g·K·out`` and
        ``2·(m + 1)·in`` values at the input's resolution plus ``out``.
        """
        g, r, cout = self.groups, self.rank, self.out_channels
        cin_g, k = self.in_channels // g, math.prod(self.kernel_size)
        ratio = math.prod(x.shape[2:]) / max(1, math.prod(self._out_spatial(x.shape[2:])))
        beta = self._FLOPS_PER_VALUE
        factored = cin_g * k * (cout + g * m * r) + m * r * cout + beta * (5 * cout
                                                                            + 4 * g * m * r)
        mixed = (m + 1) * cin_g * k * cout + beta * (2 * (m + 1) * self.in_channels * ratio
                                                     + cout)
        return mixed < factored

    def _factored(self, x: Tensor, w0: Tensor, up: Tensor, down: Tensor, a: Tensor) -> Tensor:
        """The plain convolution fused with the down-projections, then the up-projections."""
        g, mr, cout = self.groups, a.shape[1] * self.rank, self.out_channels
        stacked = self._down_matrix(down)
        if g == 1:
            yh = self._conv(x, torch.cat([w0, stacked]), None, 1)
            y, h = yh.split([cout, mr], dim=1)
        else:
            y = self._conv(x, w0, None, g)
            h = self._conv(x, stacked, None, g)
        ups = self._up_matrix(up).reshape(cout, mr, *([1] * self._dims))
        return y + _FUNC_1x1[self._dims](self._scale(h, a, 1), ups, None, 1, 0, 1, g)

    @classmethod
    def from_plain(cls, module: nn.Module, manifold: Manifold, *, rank: int) -> _LowRankConvNd:
        return cls(manifold, module.in_channels, module.out_channels, module.kernel_size,
                   module.stride, module.padding, module.dilation, module.groups,
                   module.bias is not None, module.padding_mode, rank=rank,
                   device=module.weight.device, dtype=module.weight.dtype)


_FUNC_1x1 = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class LowRankConv1d(_LowRankConvNd, ManifoldConv1d):
    """``nn.Conv1d``, low rank (see :class:`_LowRankConvNd`)."""


class LowRankConv2d(_LowRankConvNd, ManifoldConv2d):
    """``nn.Conv2d``, low rank (see :class:`_LowRankConvNd`).

    Examples:
        >>> import torch, weightmanifold as wm
        >>> from weightmanifold.layers import LowRankConv2d
        >>> conv = LowRankConv2d(wm.Ellipse(), 3, 8, 3, padding=1, rank=2)
        >>> conv(torch.randn(4, 3, 6, 6), torch.rand(4)).shape
        torch.Size([4, 8, 6, 6])
    """


class LowRankConv3d(_LowRankConvNd, ManifoldConv3d):
    """``nn.Conv3d``, low rank (see :class:`_LowRankConvNd`)."""


_LOW_RANK: dict[type[ManifoldOp], type[LowRankOp]] = {
    ManifoldLinear: LowRankLinear,
    ManifoldTransposedLinear: LowRankTransposedLinear,
    ManifoldEmbedding: LowRankEmbedding,
    ManifoldConv1d: LowRankConv1d,
    ManifoldConv2d: LowRankConv2d,
    ManifoldConv3d: LowRankConv3d,
}


def low_rank_class(full: type[nn.Module]) -> type[LowRankOp] | None:
    """The low-rank twin of a full-rank layer class (``None``: the layer stays full rank)."""
    return _LOW_RANK.get(full)  # type: ignore[arg-type]
