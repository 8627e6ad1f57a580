"""Slow, obviously-correct references for the manifold layers: per-example materialised weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

import weightmanifold as wm


def plain_weights(model: wm.ManifoldModel, a: Tensor) -> dict[str, Tensor]:
    """Parameters (named as in the ORIGINAL plain model) at basis coefficients ``a`` ([n]).

    Every manifold tensor ``P`` ([n, ...]) becomes ``sum_k a_k P_k`` computed
    with an explicit Python loop; attention projections are re-packed into
    ``nn.MultiheadAttention``'s ``in_proj_weight``/``in_proj_bias`` layout.
    """
    out: dict[str, Tensor] = {}
    layers = {name: m for name, m in model.module.named_modules()
              if isinstance(m, wm.ManifoldModule)}
    for name, p in model.module.named_parameters():
        owner = max((ln for ln in layers if name.startswith(ln + ".") or ln == ""),
                    key=len, default=None)
        if owner is None:
            out[name] = p
            continue
        value = sum(a[k] * p[k] for k in range(p.shape[0]))
        out[name] = value
    # re-pack attention projections
    for ln, m in layers.items():
        if isinstance(m, wm.ManifoldMultiheadAttention):
            pre = ln + "." if ln else ""
            q, k, v = (out.pop(f"{pre}{x}_proj.weight") for x in "qkv")
            if m.kdim == m.embed_dim and m.vdim == m.embed_dim:
                out[pre + "in_proj_weight"] = torch.cat([q, k, v])
            else:
                for name, value in zip(("q", "k", "v"), (q, k, v)):
                    out[f"{pre}{name}_proj_weight"] = value
            if f"{pre}q_proj.bias" in out:
                biases = [out.pop(f"{pre}{x}_proj.bias") for x in "qkv"]
                out[pre + "in_proj_bias"] = torch.cat(biases)
    return out


def per_example(model: wm.ManifoldModel, original: nn.Module, x: Tensor, s: Tensor,
                **kwargs) -> Tensor:
    """``model(x, s=s)`` computed one example at a time with ``functional_call`` on ``original``."""
    a = model.manifold.coefficients(s).to(x.dtype if x.is_floating_point() else torch.float64)
    buffers = dict(model.module.named_buffers())
    outs = []
    for i in range(len(x)):
        params = plain_weights(model, a[i])
        outs.append(functional_call(original, {**params, **buffers}, (x[i : i + 1],), kwargs))
    return torch.cat(outs)
