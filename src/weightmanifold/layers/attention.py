"""Multi-head attention with projections on a manifold: :class:`ManifoldMultiheadAttention`."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..topology import Manifold
from .base import ManifoldModule
from .linear import ManifoldLinear

__all__ = ["ManifoldMultiheadAttention"]


class ManifoldMultiheadAttention(ManifoldModule):
    """``nn.MultiheadAttention`` with the query/key/value and output projections on a manifold.

    .. math::

        \\mathrm{Attn}_i = \\mathrm{softmax}\\Big(\\frac{Q(s_i) K(s_i)^T}{\\sqrt{d}} + M\\Big)
        V(s_i),
        \\qquad Q(s) = x W_q(s) + b_q(s), \\ \\ldots

    The projections are :class:`ManifoldLinear` layers (``q_proj``, ``k_proj``,
    ``v_proj``, ``out_proj``), or :class:`~weightmanifold.layers.LowRankLinear`
    with ``rank``; the attention itself has no parameters. The
    forward signature is that of ``nn.MultiheadAttention`` (``key_padding_mask``,
    ``need_weights``, ``attn_mask``, ``average_attn_weights``, ``is_causal``,
    ``batch_first``), plus ``s``. ``bias_k``/``bias_v``/``add_zero_attn`` are not
    supported. ``_qkv_same_embed_dim`` is ``False`` so that torch's fused
    transformer fast path, which cannot use manifold weights, is never taken.

    Raises:
        ValueError: if ``embed_dim`` is not divisible by ``num_heads``.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> mha = wm.ManifoldMultiheadAttention(wm.Line(), 8, 2, batch_first=True)
        >>> x = torch.randn(3, 5, 8)
        >>> out, w = mha(x, x, x, s=torch.rand(3))
        >>> out.shape, w.shape
        (torch.Size([3, 5, 8]), torch.Size([3, 5, 5]))
    """

    _qkv_same_embed_dim = False

    def __init__(self, manifold: Manifold, embed_dim: int, num_heads: int,
                 dropout: float = 0.0, bias: bool = True, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, *,
                 rank: int | None = None,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(manifold)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        kw: dict = {"device": device, "dtype": dtype}
        proj: Any = ManifoldLinear
        if rank is not None:  # low-rank projections (see weightmanifold.layers.low_rank)
            from .low_rank import LowRankLinear

            proj, kw = LowRankLinear, {**kw, "rank": rank}
        self.q_proj = proj(manifold, embed_dim, embed_dim, bias, **kw)
        self.k_proj = proj(manifold, self.kdim, embed_dim, bias, **kw)
        self.v_proj = proj(manifold, self.vdim, embed_dim, bias, **kw)
        self.out_proj = proj(manifold, embed_dim, embed_dim, bias, **kw)

    @property
    def in_proj_bias(self) -> Tensor | None:
        """The stacked query/key/value biases ``[n, 3E]`` (``None`` without bias)."""
        if self.q_proj.bias is None:
            return None
        return torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias], dim=1)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False, s: object = None) -> tuple[Tensor, Tensor | None]:
        # the projections see the batch first, whatever the model's batch axis
        cond = self._resolve(s).with_batch_dim(0)
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        # now [T, B, E] (sequence first); the projections take the batch first
        q = self.q_proj(query.transpose(0, 1), cond)
        k = self.k_proj(key.transpose(0, 1), cond)
        v = self.v_proj(value.transpose(0, 1), cond)
        b, t, _ = q.shape
        src = k.shape[1]
        h, d = self.num_heads, self.head_dim
        q = q.reshape(b, t, h, d).transpose(1, 2)
        k = k.reshape(b, src, h, d).transpose(1, 2)
        v = v.reshape(b, src, h, d).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d)
        mask = _float_mask(attn_mask, scores.dtype)
        if mask is None and is_causal:
            mask = torch.full((t, src), float("-inf"), dtype=scores.dtype,
                              device=scores.device).triu(1)
        if mask is not None:
            scores = scores + (mask.reshape(b, h, t, src) if mask.dim() == 3 else mask)
        pad = _float_mask(key_padding_mask, scores.dtype)
        if pad is not None:
            scores = scores + pad.reshape(b, 1, 1, src)
        attn = torch.softmax(scores, dim=-1)
        dropped = F.dropout(attn, self.dropout, self.training) if self.dropout > 0 else attn
        out = (dropped @ v).transpose(1, 2).reshape(b, t, h * d)
        out = self.out_proj(out, cond)
        if unbatched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        weights = None
        if need_weights:
            weights = attn.mean(dim=1) if average_attn_weights else attn
            if unbatched:
                weights = weights.squeeze(0)
        return out, weights

    def to_plain(self, a: Tensor) -> nn.MultiheadAttention:
        """An ``nn.MultiheadAttention`` holding the projections at coefficients ``a``."""
        qw, qb = self.q_proj.materialise(a)
        kw_, kb = self.k_proj.materialise(a)
        vw, vb = self.v_proj.materialise(a)
        ow, ob = self.out_proj.materialise(a)
        out = nn.MultiheadAttention(self.embed_dim, self.num_heads, self.dropout,
                                    qb is not None, kdim=self.kdim, vdim=self.vdim,
                                    batch_first=self.batch_first, device=qw.device,
                                    dtype=qw.dtype)
        with torch.no_grad():
            if out._qkv_same_embed_dim:
                out.in_proj_weight.copy_(torch.cat([qw, kw_, vw]))
            else:
                out.q_proj_weight.copy_(qw)
                out.k_proj_weight.copy_(kw_)
                out.v_proj_weight.copy_(vw)
            if qb is not None:
                out.in_proj_bias.copy_(torch.cat([qb, kb, vb]))
                out.out_proj.bias.copy_(ob)
            out.out_proj.weight.copy_(ow)
        out.train(self.training)
        return out

    @classmethod
    def from_plain(cls, module: nn.MultiheadAttention, manifold: Manifold, *,
                   rank: int | None = None) -> ManifoldMultiheadAttention:
        """A manifold attention with the configuration of ``module`` (weights set by the caller).

        Raises:
            ValueError: for ``add_bias_kv`` or ``add_zero_attn``, which are not supported.
        """
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError(
                "manifold attention does not support add_bias_kv or add_zero_attn; "
                "exclude this module from the conversion")
        ref = module.out_proj.weight
        return cls(manifold, module.embed_dim, module.num_heads, module.dropout,
                   module.in_proj_bias is not None, module.kdim, module.vdim,
                   module.batch_first, device=ref.device, dtype=ref.dtype, rank=rank)

    @staticmethod
    def plain_tensors(module: nn.MultiheadAttention) -> dict[str, Tensor | None]:
        """The weights of a plain attention under this layer's parameter names."""
        e = module.embed_dim
        if module._qkv_same_embed_dim:
            qw, kw_, vw = module.in_proj_weight.split(e)
        else:
            qw, kw_, vw = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
        out: dict[str, Tensor | None] = {"q_proj.weight": qw, "k_proj.weight": kw_,
                                         "v_proj.weight": vw,
                                         "out_proj.weight": module.out_proj.weight}
        if module.in_proj_bias is not None:
            qb, kb, vb = module.in_proj_bias.split(e)
            out.update({"q_proj.bias": qb, "k_proj.bias": kb, "v_proj.bias": vb,
                        "out_proj.bias": module.out_proj.bias})
        return out

    def extra_repr(self) -> str:
        return (f"{self.manifold!r}, embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"batch_first={self.batch_first}")


def _float_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf"))
    return mask.to(dtype)
