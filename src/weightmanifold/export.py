"""Export of one point of a manifold model as an ordinary network: :func:`at`."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .conversion import ManifoldModel
from .layers.base import ManifoldModule, single_condition

__all__ = ["at"]


def at(model: nn.Module, s: object) -> nn.Module:
    """The ordinary network at condition ``s``: every manifold layer becomes its ``torch.nn`` twin.

    The result holds :math:`W(s) = \\sum_k a_k(s) W_k` for every tensor, contains
    no weightmanifold class (it runs, pickles and ``torch.save``-s without
    weightmanifold installed), and ``at(model, s)(x)`` equals ``model(x, s=s)``.
    It is a copy: training it does not change ``model``.

    Args:
        model: a :class:`~weightmanifold.conversion.ManifoldModel` (its wrapped
            module is exported) or any module built from manifold layers or
            holding manifold models (exported recursively).
        s: a single condition: a number for one-dimensional manifolds, a
            ``dim``-vector otherwise.

    Returns:
        An ``nn.Module`` in the same train/eval mode as ``model``.

    Raises:
        ValueError: if ``s`` is not a single valid condition.
        TypeError: if a manifold module has no ordinary counterpart.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> model = wm.manifoldify(torch.nn.Linear(3, 2), wm.Line())
        >>> plain = wm.at(model, 0.3)
        >>> type(plain).__name__
        'Linear'
    """
    if isinstance(model, ManifoldModel):
        return at(model.module, s)
    cache: dict[tuple, torch.Tensor] = {}
    tensors: dict[int, nn.Parameter] = {}  # manifold parameter → its exported tensor

    def plain_of(module: ManifoldModule) -> nn.Module:
        if not hasattr(module, "to_plain"):
            raise TypeError(
                f"{type(module).__name__} has no ordinary counterpart; at() exports models "
                "converted with manifoldify or built from manifold layers")
        ref = next(module.parameters())
        key = (module.manifold, ref.dtype, ref.device)
        if key not in cache:
            cache[key] = single_condition(module.manifold, s, ref.dtype, ref.device)[0]
        with torch.no_grad():
            out = module.to_plain(cache[key])
        for p in out.parameters():
            p.requires_grad_(ref.requires_grad)
        for name, p in module.manifold_parameters():  # a tied manifold tensor: one plain tensor
            mine = out._parameters.get(name)
            if mine is None:
                continue
            if id(p) in tensors:
                out._parameters[name] = tensors[id(p)]
            else:
                tensors[id(p)] = mine
        return out

    root = model
    if isinstance(root, ManifoldModule):
        return plain_of(root)
    memo: dict[int, object] = {}
    # do not deep-copy the manifold layers and nested manifold models: they are replaced
    for m in root.modules():
        if isinstance(m, (ManifoldModule, ManifoldModel)):
            memo[id(m)] = m
    out = copy.deepcopy(root, memo)
    replaced: list[str] = []
    exported: dict[int, nn.Module] = {}  # a module at several places stays one module
    for name, module in list(out.named_modules(remove_duplicate=False)):
        if not isinstance(module, (ManifoldModule, ManifoldModel)) or not name:
            continue
        if any(name.startswith(r + ".") for r in replaced):
            continue  # inside a layer already exported whole (attention, nested models)
        if id(module) not in exported:
            exported[id(module)] = (at(module, s) if isinstance(module, ManifoldModel)
                                    else plain_of(module))
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        setattr(parent, child, exported[id(module)])
        replaced.append(name)
    return out
