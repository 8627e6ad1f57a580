"""One-call conversion of any ``nn.Module`` into a manifold model: :func:`manifoldify`."""

from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .layers.attention import ManifoldMultiheadAttention
from .layers.base import Conditioning, ManifoldModule
from .layers.context import conditioned
from .layers.conv import ManifoldConv1d, ManifoldConv2d, ManifoldConv3d
from .layers.embedding import ManifoldEmbedding
from .layers.linear import ManifoldLinear
from .layers.norm import (
    ManifoldBatchNorm1d,
    ManifoldBatchNorm2d,
    ManifoldBatchNorm3d,
    ManifoldGroupNorm,
    ManifoldLayerNorm,
)
from .topology import Manifold, Point

__all__ = ["CONVERTIBLE", "INITS", "ManifoldModel", "manifoldify"]

#: plain module type → manifold layer type, in the order they are matched (isinstance)
CONVERTIBLE: dict[type[nn.Module], type[ManifoldModule]] = {
    nn.MultiheadAttention: ManifoldMultiheadAttention,
    nn.Linear: ManifoldLinear,
    nn.Conv1d: ManifoldConv1d,
    nn.Conv2d: ManifoldConv2d,
    nn.Conv3d: ManifoldConv3d,
    nn.Embedding: ManifoldEmbedding,
    nn.LayerNorm: ManifoldLayerNorm,
    nn.GroupNorm: ManifoldGroupNorm,
    nn.BatchNorm1d: ManifoldBatchNorm1d,
    nn.BatchNorm2d: ManifoldBatchNorm2d,
    nn.BatchNorm3d: ManifoldBatchNorm3d,
}

INITS = ("constant", "independent")

Selector = str | type | Callable[[str, nn.Module], bool]


class ManifoldModel(nn.Module):
    """A converted model, called as ``model(*inputs, s=s)``.

    Evaluates the basis functions once per call and makes them visible (per
    thread) to every manifold layer inside ``module``, so the wrapped model's
    own ``forward`` runs unchanged.

    Attributes:
        module: the converted copy of the original model.
        manifold: the topology.
        batch_dim: the axis of the batch in the activations of linear layers
            (0, or 1 for sequence-first models).
        converted: qualified names of the converted submodules.
        shared: names of the parameters left ordinary (the same at every ``s``).
    """

    def __init__(self, module: nn.Module, manifold: Manifold, batch_dim: int = 0,
                 converted: Iterable[str] = (), shared: Iterable[str] = ()) -> None:
        super().__init__()
        self.module = module
        self.manifold = manifold
        self.batch_dim = batch_dim
        self.converted = list(converted)
        self.shared = list(shared)

    def forward(self, *args: Any, s: object = None, **kwargs: Any) -> Any:
        """Run the wrapped model at conditions ``s``.

        Args:
            *args, **kwargs: the wrapped model's inputs.
            s: one condition per example (``[B]`` or ``[B, dim]``), or a single
                condition for the whole batch. May be omitted only for a
                :class:`~weightmanifold.Point` manifold.

        Raises:
            ValueError: if ``s`` is missing or invalid, or does not match the batch.
        """
        if s is None:
            if not isinstance(self.manifold, Point):
                raise ValueError(
                    f"this model lives on {self.manifold!r}: call it as model(x, s=s) with "
                    "one condition per example (or one for the whole batch)")
            s = torch.zeros(1)
        cond = s if isinstance(s, Conditioning) else Conditioning.from_s(self.manifold, s)
        with conditioned(cond, self.batch_dim):
            return self.module(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"manifold={self.manifold!r}, converted={len(self.converted)} modules"


def _matches(selector: Selector, name: str, module: nn.Module) -> bool:
    if isinstance(selector, str):
        return fnmatch.fnmatchcase(name, selector)
    if isinstance(selector, type):
        return isinstance(module, selector)
    return bool(selector(name, module))


def _target(module: nn.Module) -> type[ManifoldModule] | None:
    for plain, target in CONVERTIBLE.items():
        if isinstance(module, plain):
            return target
    return None


def _plain_tensors(target: type[ManifoldModule], module: nn.Module) -> dict[str, Tensor]:
    if target is ManifoldMultiheadAttention:
        tensors = ManifoldMultiheadAttention.plain_tensors(module)  # type: ignore[arg-type]
    else:
        tensors = {name: getattr(module, name, None) for name in ("weight", "bias")}
    return {k: v.detach() for k, v in tensors.items() if v is not None}


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        for fn in ("reset_parameters", "_reset_parameters"):
            if hasattr(m, fn):
                getattr(m, fn)()
                break


def _initialise(new: ManifoldModule, target: type[ManifoldModule], module: nn.Module,
                manifold: Manifold, init: str) -> None:
    original = _plain_tensors(target, module)
    c = manifold.constant()
    draws: list[dict[str, Tensor]] = []
    random_names: set[str] = set()
    if init == "independent":
        fresh = copy.deepcopy(module)
        for _ in range(manifold.n + 1):
            _reset(fresh)
            draws.append({k: v.clone() for k, v in _plain_tensors(target, fresh).items()})
        # tensors whose reset is deterministic (norm gains, zero biases) start constant
        random_names = {k for k in original if not torch.equal(draws[0][k], draws[1][k])}
        draws = draws[1:]
    scale = 1.0 / math.sqrt(float(manifold.gram().trace()))
    with torch.no_grad():
        for name, value in original.items():
            param = new.get_parameter(name)
            if name in random_names:
                param.copy_(torch.stack([d[name] for d in draws]) * scale)
            else:
                cc = c.to(dtype=value.dtype, device=value.device)
                param.copy_(cc.reshape(-1, *([1] * value.ndim)) * value)


def manifoldify(model: nn.Module, manifold: Manifold, *,
                include: Iterable[Selector] | None = None,
                exclude: Iterable[Selector] = (), init: str = "constant",
                batch_dim: int = 0, inplace: bool = False) -> ManifoldModel:
    """Turn any ``nn.Module`` into a manifold model, without editing its code.

    Every convertible submodule — ``Linear``, ``Conv1d/2d/3d`` (all options),
    ``Embedding``, ``LayerNorm``, ``GroupNorm``, ``BatchNorm1d/2d/3d`` (affine
    parameters; running statistics shared) and ``MultiheadAttention`` — is
    replaced by its manifold counterpart; each learnable tensor ``W`` becomes
    :math:`W(s) = \\sum_k a_k(s) W_k`. Other parameters stay ordinary (the same
    at every ``s``) and are listed in ``ManifoldModel.shared``. A parameter tied
    between two converted layers (e.g. an embedding and an output projection)
    becomes two independent manifold tensors: convert with ``exclude=`` and tie
    them again by hand if the tie matters.

    Initialisation (``init``):

    * ``"constant"`` (default): :math:`W_k = c_k W` with :math:`\\sum_k c_k a_k(s) = 1`
      (:meth:`Manifold.constant`), so the network is exactly the original one at
      every ``s`` — a pretrained network stays what it was. The start is
      degenerate for curves with a constant basis function (an ellipse has
      zero radius: :math:`W_2 = W_3 = 0`). It is broken by training itself: the
      gradient of :math:`W_k` is :math:`\\mathbb E_s[a_k(s)\\, \\nabla_W \\ell(s)]`, which
      is non-zero as soon as the loss depends on the condition, so the curve
      opens in the directions the conditioning asks for (and stays a point,
      correctly, where it does not).
    * ``"independent"``: each basis point is drawn afresh with the layer's own
      default initialisation, scaled by :math:`1/\\sqrt{\\operatorname{tr}\\bar G}`
      so that the variance of :math:`W(s)`, averaged over ``s``, equals that of
      the default initialisation (for the ellipse, at every ``s``). Tensors
      whose default initialisation is deterministic (norm gains, zero biases)
      start constant.

    Args:
        model: any module (it is deep-copied unless ``inplace=True``).
        manifold: the topology.
        include: convert only submodules matching one of these (fnmatch
            patterns on qualified names such as ``"features.*"``, module types,
            or ``callable(name, module) -> bool``); default: all convertible.
        exclude: never convert submodules matching one of these.
        init: ``"constant"`` or ``"independent"``.
        batch_dim: the batch axis of activations inside the model (1 for
            sequence-first transformers).
        inplace: convert ``model`` itself instead of a copy.

    Returns:
        A :class:`ManifoldModel` called as ``model(*inputs, s=s)``.

    Raises:
        ValueError: for an unknown ``init`` or a model with no convertible layer.
        TypeError: if ``model`` is not a module or ``manifold`` not a Manifold.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> model = wm.manifoldify(net, wm.Ellipse())
        >>> x = torch.randn(5, 4)
        >>> torch.allclose(model(x, s=torch.rand(5)), net(x))  # constant start
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(manifold, Manifold):
        raise TypeError(
            f"manifold must be a weightmanifold Manifold, got {type(manifold).__name__}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
    if isinstance(model, ManifoldModel):
        raise ValueError("the model is already a manifold model")
    root = model if inplace else copy.deepcopy(model)
    include_list = None if include is None else list(include)
    exclude_list = list(exclude)
    converted: list[str] = []
    done_prefixes: list[str] = []
    for name, module in list(root.named_modules()):
        if any(name.startswith(p + ".") or p == "" for p in done_prefixes):
            continue
        target = _target(module)
        if target is None:
            continue
        if include_list is not None and not any(_matches(sel, name, module)
                                                for sel in include_list):
            continue
        if any(_matches(sel, name, module) for sel in exclude_list):
            continue
        new = target.from_plain(module, manifold)  # type: ignore[attr-defined]
        _initialise(new, target, module, manifold, init)
        new.train(module.training)
        if not name:  # the model itself is a single convertible layer
            root = new
        else:
            parent_name, _, child = name.rpartition(".")
            setattr(root.get_submodule(parent_name) if parent_name else root, child, new)
        converted.append(name)
        done_prefixes.append(name)
    if not converted:
        kinds = ", ".join(t.__name__ for t in CONVERTIBLE)
        raise ValueError(
            f"no convertible layer found in {type(model).__name__}"
            + ("" if include_list is None and not exclude_list else " (after include/exclude)")
            + f": weightmanifold converts {kinds}")
    manifold_ids = {id(p) for m in root.modules() if isinstance(m, ManifoldModule)
                    for p in m.parameters()}
    shared = [n for n, p in root.named_parameters() if id(p) not in manifold_ids]
    return ManifoldModel(root, manifold, batch_dim, converted, shared)
