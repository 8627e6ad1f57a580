"""One-call conversion of any ``nn.Module`` into a manifold model: :func:`manifoldify`."""

from __future__ import annotations

import copy
import fnmatch
import inspect
import math
import sys
import types
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .layers.attention import ManifoldMultiheadAttention
from .layers.base import ManifoldModule
from .layers.conditioning import Conditioning, condition, manifolds_of
from .layers.context import conditioned, reenter_in_backward
from .layers.conv import ManifoldConv1d, ManifoldConv2d, ManifoldConv3d
from .layers.embedding import ManifoldEmbedding
from .layers.linear import ManifoldLinear
from .layers.low_rank import LowRankOp, low_rank_class
from .layers.norm import (
    ManifoldBatchNorm1d,
    ManifoldBatchNorm2d,
    ManifoldBatchNorm3d,
    ManifoldGroupNorm,
    ManifoldLayerNorm,
)
from .layers.transposed_linear import ManifoldTransposedLinear
from .low_rank_metric import LowRankGeometry
from .topology import Manifold, Point

__all__ = ["CONVERTIBLE", "INITS", "ManifoldModel", "manifoldify", "modulation_coefficients",
           "register_conversion"]

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


def register_conversion(plain: type[nn.Module], layer: type[ManifoldModule]) -> None:
    """Teach :func:`manifoldify` to convert modules of type ``plain`` into ``layer``.

    ``layer`` provides the classmethod ``from_plain(module, manifold)`` (a layer
    with ``module``'s configuration; :func:`manifoldify` sets the weights), names
    its manifold parameters as ``plain`` names its tensors (or provides a
    classmethod ``plain_tensors(module) -> {name: tensor}`` that maps them), and
    ``to_plain(a)`` (the ordinary module at coefficients ``a``, for
    :func:`~weightmanifold.at`). Registered types are matched before those
    registered earlier and before the built-in ones, so a subclass can have a
    twin of its own. ``transformers``' ``Conv1D`` is registered automatically
    when ``transformers`` is loaded.

    Raises:
        TypeError: if ``plain`` is not a module type or ``layer`` not a manifold
            layer type with ``from_plain`` and ``to_plain``.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> class MyLinear(torch.nn.Linear):
        ...     pass
        >>> wm.register_conversion(MyLinear, wm.ManifoldLinear)
        >>> type(wm.manifoldify(MyLinear(3, 2), wm.Line()).module).__name__
        'ManifoldLinear'
    """
    if not (isinstance(plain, type) and issubclass(plain, nn.Module)):
        raise TypeError(f"plain must be an nn.Module subclass, got {plain!r}")
    if not (isinstance(layer, type) and issubclass(layer, ManifoldModule)
            and hasattr(layer, "from_plain") and hasattr(layer, "to_plain")):
        raise TypeError(
            f"layer must be a ManifoldModule subclass with from_plain and to_plain, got {layer!r}")
    entries = {plain: layer, **{k: v for k, v in CONVERTIBLE.items() if k is not plain}}
    CONVERTIBLE.clear()
    CONVERTIBLE.update(entries)


def _register_known() -> None:
    """Register the third-party op types whose libraries are loaded (never imports them)."""
    hf = sys.modules.get("transformers.pytorch_utils")
    conv1d = getattr(hf, "Conv1D", None)
    if isinstance(conv1d, type) and conv1d not in CONVERTIBLE:
        register_conversion(conv1d, ManifoldTransposedLinear)

Selector = str | type | Callable[[str, nn.Module], bool]


class ManifoldModel(nn.Module):
    """A converted model, called as ``model(*inputs, s=s)``.

    Builds the batch's :class:`~weightmanifold.Conditioning` once per call
    (:meth:`condition`: validation and one basis evaluation per manifold) and
    makes it ambient (:func:`~weightmanifold.conditioned`) for the manifold
    layers inside ``module``, so the wrapped model's own ``forward`` runs
    unchanged. The conditioning stays ambient while backward runs through the
    outputs, so ``torch.utils.checkpoint`` recomputation inside the model works.

    Attributes:
        module: the converted copy of the original model.
        manifold: the topology.
        batch_dim: the axis of the batch in the activations of linear layers
            (0, or 1 for sequence-first models).
        grouped: group the examples of every batch by condition (an eager,
            data-dependent step; see :class:`~weightmanifold.layers.Groups`),
            so that batches with few distinct conditions run one plain op per
            condition. Off by default: it cannot be compiled.
        converted: qualified names of the converted submodules (every place a
            module shared by several places sits).
        shared: names of the parameters left ordinary (the same at every ``s``).
        skipped: qualified names of convertible-looking modules left ordinary
            because their class overrides the computation.
    """

    def __init__(self, module: nn.Module, manifold: Manifold, batch_dim: int = 0,
                 converted: Iterable[str] = (), shared: Iterable[str] = (),
                 skipped: Iterable[str] = ()) -> None:
        super().__init__()
        self.module = module
        self.manifold = manifold
        self.batch_dim = batch_dim
        self.grouped = False
        self.converted = list(converted)
        self.shared = list(shared)
        self.skipped = list(skipped)
        self._sign_forward()

    def _sign_forward(self) -> None:
        """Give ``self.forward`` the wrapped model's signature plus ``s``.

        Tools that read a model's inputs from its signature (HF ``Trainer``'s
        ``remove_unused_columns``, ``generate``'s argument check) then see
        ``input_ids`` and friends instead of ``*args, **kwargs``.
        """
        try:
            inner = inspect.signature(self.module.forward)
        except (TypeError, ValueError):
            return
        params = [p for p in inner.parameters.values() if p.name != "s"]
        s_param = inspect.Parameter("s", inspect.Parameter.KEYWORD_ONLY, default=None)
        at = next((i for i, p in enumerate(params)
                   if p.kind == inspect.Parameter.VAR_KEYWORD), len(params))
        params.insert(at, s_param)
        try:
            sig = inner.replace(parameters=params)
        except ValueError:
            return

        def forward(model: ManifoldModel, *args: Any, **kwargs: Any) -> Any:
            return ManifoldModel.forward(model, *args, **kwargs)

        forward.__signature__ = sig.replace(parameters=[  # type: ignore[attr-defined]
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *params])
        forward.__doc__ = ManifoldModel.forward.__doc__
        object.__setattr__(self, "forward", types.MethodType(forward, self))

    def _replicate_for_data_parallel(self) -> ManifoldModel:
        replica = super()._replicate_for_data_parallel()
        replica._sign_forward()  # bound to the replica, not to this model
        return replica

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("forward", None)  # rebuilt on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._sign_forward()

    def __deepcopy__(self, memo: dict[int, Any]) -> ManifoldModel:
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        state = {k: copy.deepcopy(v, memo) for k, v in self.__dict__.items() if k != "forward"}
        new.__dict__.update(state)
        new._sign_forward()
        return new

    def generate(self, *args: Any, s: object = None, **kwargs: Any) -> Any:
        """``generate`` of the wrapped model (``transformers``) with every layer at ``s``.

        One condition per sequence (``[B]``), or one for all; the conditioning
        is ambient for every forward call ``generate`` makes. With beams or
        several return sequences per prompt, give ``s`` per expanded row.

        Raises:
            TypeError: if the wrapped model has no ``generate``.
        """
        if not hasattr(self.module, "generate"):
            raise TypeError(f"{type(self.module).__name__} has no generate method")
        with conditioned(self.condition(s)):
            return self.module.generate(*args, **kwargs)

    def save_pretrained(self, path: Any, **kwargs: Any) -> None:
        """Save as the wrapped model saves, plus the manifold.

        See :func:`weightmanifold.save_pretrained`; load with
        :func:`weightmanifold.from_pretrained`.
        """
        from .pretrained import save_pretrained

        save_pretrained(self, path, **kwargs)

    @property
    def manifolds(self) -> tuple[Manifold, ...]:
        """Every manifold the layers of the model live on (usually just :attr:`manifold`)."""
        return manifolds_of(self.module) or (self.manifold,)

    def condition(self, s: object, *, grouped: bool | None = None) -> Conditioning:
        """The :class:`~weightmanifold.Conditioning` of ``s`` for this model.

        Pass it as ``model(x, s=cond)`` to build it once outside a compiled
        region, or make it ambient with :func:`~weightmanifold.conditioned`.

        Args:
            s: one condition per example, a single condition, or a
                conditioning (checked to cover this model's manifolds).
            grouped: group the examples by condition (default: :attr:`grouped`).

        Raises:
            ValueError: if ``s`` is missing or invalid, or a conditioning built
                for other manifolds.
        """
        manifolds = self.manifolds
        if isinstance(s, Conditioning):
            for m in manifolds:
                s.basis_of(m, f"a layer of this model ({type(self.module).__name__})")
            return s.with_batch_dim(self.batch_dim)
        if s is None:
            if not all(isinstance(m, Point) for m in manifolds):
                raise ValueError(
                    f"this model lives on {self.manifold!r}: call it as model(x, s=s) with "
                    "one condition per example (or one for the whole batch)")
            s = torch.zeros(1)
        # coefficients follow the model's parameter dtype (and device), whatever the type of s
        ref = next((p for p in self.parameters() if p.is_floating_point()), None)
        return condition(manifolds, s, batch_dim=self.batch_dim,
                         dtype=None if ref is None else ref.dtype,
                         device=None if ref is None else ref.device,
                         grouped=self.grouped if grouped is None else grouped)

    def forward(self, *args: Any, s: object = None, **kwargs: Any) -> Any:
        """Run the wrapped model at conditions ``s``.

        Args:
            *args, **kwargs: the wrapped model's inputs.
            s: one condition per example (``[B]`` or ``[B, dim]``), a single
                condition for the whole batch, or a
                :class:`~weightmanifold.Conditioning`. May be omitted only for a
                :class:`~weightmanifold.Point` manifold.

        Raises:
            ValueError: if ``s`` is missing or invalid, or does not match the batch.
        """
        cond = self.condition(s)
        with conditioned(cond):
            out = self.module(*args, **kwargs)
        return reenter_in_backward(out, cond)

    def extra_repr(self) -> str:
        return f"manifold={self.manifold!r}, converted={len(self.converted)} modules"


def _matches(selector: Selector, name: str, module: nn.Module) -> bool:
    if isinstance(selector, str):
        return fnmatch.fnmatchcase(name, selector)
    if isinstance(selector, type):
        return isinstance(module, selector)
    return bool(selector(name, module))


def _target(module: nn.Module) -> tuple[type[nn.Module], type[ManifoldModule]] | None:
    for plain, target in CONVERTIBLE.items():
        if isinstance(module, plain):
            return plain, target
    return None


#: methods whose override in a subclass means the plain op is not what the module computes
_COMPUTING = ("forward", "_conv_forward")


def _overrides(module: nn.Module, plain: type[nn.Module]) -> bool:
    return any(getattr(type(module), name, None) is not getattr(plain, name, None)
               for name in _COMPUTING if hasattr(plain, name))


_SEQUENCE_FIRST = (nn.MultiheadAttention, ManifoldMultiheadAttention, nn.Transformer,
                   nn.RNNBase)


def _sequence_first(root: nn.Module) -> list[str]:
    return [name or type(m).__name__ for name, m in root.named_modules()
            if isinstance(m, _SEQUENCE_FIRST) and getattr(m, "batch_first", True) is False]


def _plain_tensors(target: type[ManifoldModule], module: nn.Module,
                   detach: bool = True) -> dict[str, Tensor]:
    """The original tensors of ``module`` under the manifold layer's parameter names."""
    if hasattr(target, "plain_tensors"):
        tensors = target.plain_tensors(module)  # type: ignore[attr-defined]
    else:
        tensors = {name: getattr(module, name, None) for name in ("weight", "bias")}
    return {k: (v.detach() if detach else v) for k, v in tensors.items() if v is not None}


def _tie(new: ManifoldModule, target: type[ManifoldModule], module: nn.Module,
         tied: dict[int, Any]) -> None:
    """One manifold tensor for every converted layer that shared an original parameter."""
    for name, value in _plain_tensors(target, module, detach=False).items():
        if not isinstance(value, nn.Parameter):
            continue  # a slice (attention's packed projections): nothing shared to keep
        mine = new.get_parameter(name)
        owner_name, _, leaf = name.rpartition(".")
        owner = new.get_submodule(owner_name) if owner_name else new
        other = tied.get(id(value))
        if other is None:
            tied[id(value)] = mine
            if isinstance(owner, LowRankOp) and leaf == "weight":
                tied[id(mine)] = owner  # type: ignore[assignment]
        elif other.shape == mine.shape:
            first = tied.get(id(other))
            if isinstance(owner, LowRankOp) and leaf == "weight":
                if not (isinstance(first, LowRankOp) and first.rank == owner.rank
                        and first.weight_up.shape == owner.weight_up.shape
                        and first.weight_down.shape == owner.weight_down.shape):
                    continue  # differently factorised: tying W0 alone would not tie W(s)
                owner._parameters["weight_up"] = first.weight_up
                owner._parameters["weight_down"] = first.weight_down
            owner._parameters[leaf] = other


_AFFINE = (ManifoldLayerNorm, ManifoldGroupNorm, ManifoldBatchNorm1d, ManifoldBatchNorm2d,
           ManifoldBatchNorm3d)  # their gains start at one by design


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        for fn in ("reset_parameters", "_reset_parameters"):
            if hasattr(m, fn):
                getattr(m, fn)()
                break


Rank = int | Callable[[str, nn.Module], "int | None"] | None


def _rank_of(rank: Rank, name: str, module: nn.Module) -> int | None:
    return rank(name, module) if callable(rank) else rank


def _convert(module: nn.Module, target: type[ManifoldModule], manifold: Manifold,
             rank: int | None, name: str) -> ManifoldModule:
    """The manifold twin of ``module``: full rank, or low rank where its type has a twin."""
    if rank is None:
        return target.from_plain(module, manifold)  # type: ignore[attr-defined]
    low: Any = low_rank_class(target)
    if low is None and target is ManifoldMultiheadAttention:
        low = target
    if low is None:  # vectors only (norm gains and biases): a rank means nothing
        return target.from_plain(module, manifold)  # type: ignore[attr-defined]
    try:
        return low.from_plain(module, manifold, rank=rank)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{name or type(module).__name__}: {err}") from err


def _check_init(init: object) -> str | float:
    """``init`` validated: ``"constant"``, ``"independent"`` or a modulation scale ε >= 0."""
    if isinstance(init, bool) or not isinstance(init, (str, int, float)):
        raise ValueError(f"init must be 'constant', 'independent' or a number eps >= 0, "
                         f"got {init!r}")
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)} or a number "
                             "eps >= 0 (the scale of the initial modulation)")
        return init
    eps = float(init)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"init eps must be a finite number >= 0, got {init!r}")
    return eps


def _fresh_draws(target: type[ManifoldModule], module: nn.Module, count: int
                 ) -> tuple[list[dict[str, Tensor]], set[str]]:
    """``count`` fresh default initialisations of ``module``'s tensors, and which are random."""
    original = _plain_tensors(target, module)
    fresh = copy.deepcopy(module)
    draws: list[dict[str, Tensor]] = []
    for _ in range(count + 1):
        _reset(fresh)
        if hasattr(target, "reset_plain"):  # a twin that knows its op's default init
            target.reset_plain(fresh)  # type: ignore[attr-defined]
        draws.append({k: v.clone() for k, v in _plain_tensors(target, fresh).items()})
    # tensors whose reset is deterministic (norm gains, zero biases) start constant
    random_names = {k for k in original if not torch.equal(draws[0][k], draws[1][k])}
    return draws[1:], random_names


def modulation_coefficients(manifold: Manifold) -> Tensor:
    r"""The ``[n, n]`` map ``M`` from iid draws ``Z_l`` to the zero-mean modulation's basis.

    .. math::

        \Delta_k = \sum_l M_{kl} Z_l, \qquad
        \sum_k a_k(s)\, \Delta_k = \frac{\sum_l (a_l(s) - m_l) Z_l}{\sqrt{\operatorname{tr} C}},
        \qquad m = \int a\, ds,\; C = \bar G - m m^T,

    i.e. :math:`M = (I - c\, m^T)/\sqrt{\operatorname{tr} C}` with the constant
    coefficients ``c``. The modulation has mean zero over ``s`` and, for draws of
    variance :math:`v`, mean variance :math:`v` (float64).

    Raises:
        ValueError: for a manifold without variation (``tr C = 0``, a point).
    """
    geo = LowRankGeometry.of(manifold)
    c, m = manifold.constant(), geo.mean
    tr = float(torch.trace(geo.covariance))
    if tr <= 1e-12:
        raise ValueError(f"{manifold!r} has no variation over s to modulate (tr C = {tr:.3g})")
    return (torch.eye(manifold.n, dtype=torch.float64) - torch.outer(c, m)) / math.sqrt(tr)


def _initialise(new: ManifoldModule, target: type[ManifoldModule], module: nn.Module,
                manifold: Manifold, init: str | float) -> None:
    original = _plain_tensors(target, module)
    c = manifold.constant()
    draws: list[dict[str, Tensor]] = []
    random_names: set[str] = set()
    eps = init if isinstance(init, float) else None
    if init == "independent" or (eps is not None and eps > 0 and manifold.n > 1):
        draws, random_names = _fresh_draws(target, module, manifold.n)
        constant = [k for k in original if k.endswith("weight") and k not in random_names
                    and not isinstance(new, _AFFINE)]
        if constant:
            warnings.warn(
                f"init={init!r}: {type(module).__name__} has no random default "
                f"initialisation to draw from, so {', '.join(constant)} start(s) constant; "
                "give its manifold twin a reset_plain(module) classmethod", stacklevel=4)
    scale = 1.0 / math.sqrt(float(manifold.gram().trace()))
    mix = modulation_coefficients(manifold) * eps if eps and random_names else None
    with torch.no_grad():
        for name, value in original.items():
            owner_name, _, leaf = name.rpartition(".")
            owner = new.get_submodule(owner_name) if owner_name else new
            if isinstance(owner, LowRankOp) and leaf == "weight":
                scale_lr = 1.0 if init == "independent" else (eps or 0.0)
                _initialise_low_rank(owner, value, manifold, scale_lr)
                continue
            param = new.get_parameter(name)
            cc = c.to(dtype=value.dtype, device=value.device)
            start = cc.reshape(-1, *([1] * value.ndim)) * value
            if name in random_names and mix is None:  # independent
                param.copy_(torch.stack([d[name] for d in draws]) * scale)
            elif name in random_names:  # the original network plus eps times a modulation
                z = torch.stack([d[name] for d in draws]).to(torch.float64)
                delta = torch.einsum("kl,l...->k...", mix, z).to(value.dtype)
                param.copy_(start + delta)
            else:
                param.copy_(start)


def _initialise_low_rank(layer: LowRankOp, weight: Tensor, manifold: Manifold,
                         eps: float) -> None:
    r"""``W₀``, ``U``, ``V`` of a low-rank layer: the original ``weight`` plus ε times a modulation.

    .. math::

        V_k \sim \mathcal N(0, \sigma^2),\quad U_k \sim \mathcal N(0, \varepsilon^2\sigma^2),
        \quad \sigma^4 = \frac{v}{r \operatorname{tr} C},\quad
        W_0 = W - \sum_k m_k U_k V_k,

    with :math:`v` the mean square of ``weight``: the mean of :math:`W(s)` over
    ``s`` is ``weight`` and the modulation :math:`\sum_k (a_k - m_k) U_k V_k` has,
    in expectation, ε² times its mean square. At ε = 0 the deltas are zero (``U = 0``,
    as LoRA's up-projection) and the network is the original one at every ``s``;
    the first gradient of :math:`U_k` is :math:`\mathbb E_s[a_k \nabla_W \ell]\, V_k^T`,
    non-zero wherever the loss depends on ``s``, which breaks the degenerate start.
    """
    geo = LowRankGeometry.of(manifold)
    m = geo.mean
    tr = float(torch.trace(geo.covariance))
    tr = tr if tr > 1e-12 else 1.0
    v = float(weight.double().pow(2).mean()) or 1.0 / max(1, weight[0].numel())
    sigma = (v / (layer.rank * tr)) ** 0.25
    kw = {"dtype": layer.weight_down.dtype, "device": layer.weight_down.device}
    down = torch.randn(layer.weight_down.shape, **kw) * sigma
    up = torch.randn(layer.weight_up.shape, **kw) * (sigma * eps)
    pad = getattr(layer, "padding_idx", None)
    if pad is not None:
        up[:, pad] = 0.0  # the padding row of E(s) stays that of E0
    layer.weight_down.copy_(down)
    layer.weight_up.copy_(up)
    layer.weight.copy_(weight)
    mean_delta = layer.delta(m.to(**kw))
    layer.weight.sub_(mean_delta)


def _warn_unconverted(root: nn.Module, manifold_ids: set[int], exclude: list[Selector],
                      skipped: list[str]) -> None:
    """Warn, naming them, about parameters of module types the conversion does not know."""
    left: list[str] = []
    for name, m in root.named_modules():
        if isinstance(m, ManifoldModule) or name in skipped:
            continue
        if any(_matches(sel, name, m) for sel in exclude) or \
                any(name.startswith(x + ".") for x in skipped):
            continue
        for pname, p in m.named_parameters(recurse=False):
            if id(p) not in manifold_ids:
                left.append(f"{name + '.' if name else ''}{pname} ({type(m).__name__})")
    if left:
        shown = ", ".join(left[:8]) + (f" and {len(left) - 8} more" if len(left) > 8 else "")
        warnings.warn(
            f"manifoldify left {len(left)} parameter(s) of module types it does not convert "
            f"ordinary (the same at every s): {shown}. Register a manifold twin with "
            "wm.register_conversion, hold them in wm.ManifoldParameter, or exclude= their "
            "modules to silence this.", stacklevel=3)


def manifoldify(model: nn.Module, manifold: Manifold, *,
                include: Iterable[Selector] | None = None,
                exclude: Iterable[Selector] = (), init: str | float = "constant",
                rank: Rank = None, batch_dim: int | None = None,
                inplace: bool = False) -> ManifoldModel:
    """Turn any ``nn.Module`` into a manifold model, without editing its code.

    Every convertible submodule — ``Linear``, ``Conv1d/2d/3d`` (all options),
    ``Embedding``, ``LayerNorm``, ``GroupNorm``, ``BatchNorm1d/2d/3d`` (affine
    parameters; running statistics shared) and ``MultiheadAttention`` — is
    replaced by its manifold counterpart; each learnable tensor ``W`` becomes
    :math:`W(s) = \\sum_k a_k(s) W_k`. Other parameters stay ordinary (the same
    at every ``s``) and are listed in ``ManifoldModel.shared``. A module object
    that sits at several places of the model is converted once and stays one
    module, and a parameter tied between two different converted layers (an
    embedding and an output projection) stays tied: one manifold tensor serves
    both. Parameters of module types the conversion does not know are named
    in a warning. A subclass of a convertible type that overrides ``forward`` (or
    ``_conv_forward``) computes something the manifold layer does not know: it
    is left ordinary, listed in ``ManifoldModel.skipped``, with a warning.

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
    * a number ``ε >= 0`` (the *modulated* family, one knob between the two):
      the original network plus ε times a zero-mean modulation drawn from the
      layer's default initialisation (:func:`modulation_coefficients`),

      .. math::

          W(s) = W + \\varepsilon\\,
          \\frac{\\sum_l (a_l(s) - m_l)\\, Z_l}{\\sqrt{\\operatorname{tr} C}},
          \\qquad m = \\int a\\, ds,\\quad C = \\bar G - m m^T,

      with iid default draws :math:`Z_l`. The mean over ``s`` of :math:`W(s)` is
      the original :math:`W` at every ε, and ε is the ratio of the modulation's
      RMS (averaged over ``s``) to the default initialisation's: ``0`` is
      ``"constant"``, ``1`` varies the weights over ``s`` by as much as they
      are large. At the start the gradient of :math:`W_k` is
      :math:`\\mathbb E_s[a_k(s)\\, \\nabla_W \\ell(W(s), s)]`: at ε = 0 it
      separates the basis points only through the loss's dependence on ``s``;
      at ε > 0 also through the different networks at different ``s``.

    Args:
        model: any module (it is deep-copied unless ``inplace=True``).
        manifold: the topology.
        include: convert only submodules matching one of these (fnmatch
            patterns on qualified names such as ``"features.*"``, module types,
            or ``callable(name, module) -> bool``); default: all convertible.
        exclude: never convert submodules matching one of these.
        init: ``"constant"``, ``"independent"`` or a modulation scale ``ε >= 0``.
        batch_dim: the batch axis of activations inside the model (1 for
            sequence-first transformers). Default: 0, except that a model
            holding sequence-first modules (``batch_first=False`` attention,
            transformer layers, RNNs) next to other converted layers must say
            which (the layout of those other layers cannot be known).
        inplace: convert ``model`` itself instead of a copy.

    Returns:
        A :class:`ManifoldModel` called as ``model(*inputs, s=s)``.

    Raises:
        ValueError: for an unknown ``init`` or a negative ε, a ``rank`` < 1 or larger than a
            layer's dimensions (naming the layer), a model with no convertible layer, or a
            sequence-first model converted without ``batch_dim``.
        TypeError: if ``model`` is not a module, ``manifold`` not a Manifold, or ``rank``
            not an integer.

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
    init = _check_init(init)
    if rank is not None and not callable(rank):
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise TypeError(f"rank must be an integer, None or a callable (name, module) -> "
                            f"int | None, got {rank!r} ({type(rank).__name__})")
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
    if isinstance(model, ManifoldModel):
        raise ValueError("the model is already a manifold model")
    _register_known()
    root = model if inplace else copy.deepcopy(model)
    include_list = None if include is None else list(include)
    exclude_list = list(exclude)
    converted: list[str] = []
    skipped: list[str] = []
    done_prefixes: list[str] = []
    memo: dict[int, nn.Module] = {}
    tied: dict[int, nn.Parameter] = {}
    for name, module in list(root.named_modules(remove_duplicate=False)):
        if any(name.startswith(p + ".") or p == "" for p in done_prefixes):
            continue
        found = _target(module)
        if found is None:
            continue
        plain, target = found
        if include_list is not None and not any(_matches(sel, name, module)
                                                for sel in include_list):
            continue
        if any(_matches(sel, name, module) for sel in exclude_list):
            done_prefixes.append(name)  # nor anything inside it (attention's out_proj)
            continue
        if id(module) in memo:
            new = memo[id(module)]
        elif _overrides(module, plain):
            where = name or type(module).__name__
            if where not in skipped:
                skipped.append(where)
            done_prefixes.append(name)
            continue
        else:
            new = _convert(module, target, manifold, _rank_of(rank, name, module), name)
            _initialise(new, target, module, manifold, init)
            _tie(new, target, module, tied)
            new.train(module.training)
            memo[id(module)] = new
        if not name:  # the model itself is a single convertible layer
            root = new
        else:
            parent_name, _, child = name.rpartition(".")
            setattr(root.get_submodule(parent_name) if parent_name else root, child, new)
        converted.append(name)
        done_prefixes.append(name)
    if skipped:
        warnings.warn(
            f"manifoldify left {len(skipped)} module(s) ordinary because their class overrides "
            f"the computation of the layer it subclasses: {', '.join(skipped)}; they are the "
            "same at every s. Exclude them to silence this, or replace them by manifold "
            "layers yourself.", stacklevel=2)
    if not converted:
        kinds = ", ".join(t.__name__ for t in CONVERTIBLE)
        raise ValueError(
            f"no convertible layer found in {type(model).__name__}"
            + ("" if include_list is None and not exclude_list else " (after include/exclude)")
            + f": weightmanifold converts {kinds}"
            + (f" (left ordinary, overriding forward: {', '.join(skipped)})" if skipped else ""))
    for m in root.modules():
        if isinstance(m, nn.TransformerEncoder):
            # torch's nested-tensor fast path runs fused kernels on plain weights
            m.use_nested_tensor = False
    if batch_dim is None:
        seq_first = _sequence_first(root)
        inside = {id(p) for a in root.modules() if isinstance(a, ManifoldMultiheadAttention)
                  for p in a.modules()}  # attention arranges its own projections' batch
        batch_layers = [m for m in root.modules()
                        if isinstance(m, ManifoldModule) and id(m) not in inside]
        if seq_first and batch_layers:
            raise ValueError(
                f"{', '.join(seq_first[:3])} of {type(model).__name__} take sequence-first "
                "input (batch_first=False), so the other converted layers may see the batch "
                "along dim 1: say where it is, manifoldify(..., batch_dim=1) when activations "
                "are [T, B, ...] throughout, or batch_dim=0 when the model transposes to "
                "batch-first around those modules")
        batch_dim = 0
    if batch_dim not in (0, 1):
        raise ValueError(f"batch_dim must be 0 or 1, got {batch_dim!r}")
    manifold_ids = {id(p) for m in root.modules() if isinstance(m, ManifoldModule)
                    for p in m.parameters()}
    shared = [n for n, p in root.named_parameters() if id(p) not in manifold_ids]
    if include_list is None:
        _warn_unconverted(root, manifold_ids, exclude_list, skipped)
    return ManifoldModel(root, manifold, batch_dim, converted, shared, skipped)
