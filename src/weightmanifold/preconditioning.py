"""Metric-preconditioned optimisation: gradients times :math:`\\bar G^{-1}` along the basis axis.

For a manifold :math:`M(s, P) = \\sum_k a_k(s) P_k` the movement of the whole
manifold caused by a step :math:`\\Delta P` is

.. math::

    \\int \\lVert M(s, P + \\Delta P) - M(s, P) \\rVert^2 d\\rho(s)
    = \\mathrm{vec}(\\Delta P)^T (\\bar G \\otimes I_d)\\, \\mathrm{vec}(\\Delta P),

so the step of best linearised decrease at fixed movement is

.. math:: \\Delta P = -\\eta\\, (\\bar G^{-1} \\otimes I_d)\\, \\nabla_P L ,

which never needs the :math:`nd \\times nd` matrix: one :math:`n \\times n` product
per tensor along its leading basis axis. The step is invariant to the choice of
basis for the same manifold (paper §2.2, Theorem 1, Algorithm 1 step 13).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .layers.base import ManifoldModule
from .layers.low_rank import LowRankOp
from .low_rank_metric import LowRankGeometry, steepest_descent
from .topology import Manifold

__all__ = ["Preconditioned", "low_rank_layers", "manifold_parameters", "precondition_gradients"]


def low_rank_layers(model: nn.Module) -> list[LowRankOp]:
    """The low-rank layers of ``model``, a factorisation shared by tied layers listed once."""
    seen: set[int] = set()
    out = []
    for module in model.modules():
        if isinstance(module, LowRankOp) and id(module.weight_up) not in seen:
            seen.add(id(module.weight_up))
            out.append(module)
    return out


class _LowRankMetric:
    """The low-rank step (:mod:`weightmanifold.low_rank_metric`) on each layer's gradients."""

    def __init__(self, mode: str, damping: float, iterations: int) -> None:
        if mode not in ("block", "joint"):
            raise ValueError(f"low_rank must be 'block' or 'joint', got {mode!r}")
        if not damping > 0:
            raise ValueError(f"damping must be > 0, got {damping!r}")
        self.mode, self.damping, self.iterations = mode, damping, iterations
        self._geometry: dict[tuple[Manifold, torch.dtype, torch.device], LowRankGeometry] = {}

    def geometry(self, manifold: Manifold, like: Tensor) -> LowRankGeometry:
        key = (manifold, like.dtype, like.device)
        if key not in self._geometry:
            self._geometry[key] = LowRankGeometry.of(manifold, like)
        return self._geometry[key]

    def apply(self, layer: LowRankOp, train_w0: bool) -> None:
        w0, up, down = layer.low_rank_parameters()
        if up.grad is None or down.grad is None:
            return
        with torch.no_grad():
            w0b, u, v = (t.detach() for t in layer.factors())
            g_w0 = w0.grad.reshape(w0b.shape) if train_w0 and w0.grad is not None else None
            d_w0, du, dv = steepest_descent(
                self.geometry(layer.manifold, up.grad), u, v, g_w0,
                up.grad.reshape(u.shape), down.grad.reshape(v.shape), damping=self.damping,
                mode=self.mode, iterations=self.iterations)
            up.grad.copy_(du.reshape(up.shape))
            down.grad.copy_(dv.reshape(down.shape))
            if d_w0 is not None:
                w0.grad.copy_(d_w0.reshape(w0.shape))


def manifold_parameters(model: nn.Module) -> list[tuple[nn.Parameter, Manifold]]:
    """Every parameter of ``model`` with a leading basis axis, paired with its manifold.

    Found through the :class:`~weightmanifold.layers.base.ManifoldModule` submodules
    of ``model`` (DDP- and ``torch.compile``-wrapped models included). A parameter
    shared by several modules is listed once.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    seen: set[int] = set()
    out = []
    for module in model.modules():
        if isinstance(module, ManifoldModule):
            for _, p in module.manifold_parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append((p, module.manifold))
    return out


#: values per column block of the CPU metric step (256 kB of float32: cache-resident)
_BLOCK_VALUES = 1 << 16


class _Metric:
    """Caches the ``[n, n]`` preconditioner of each manifold in each dtype/device."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self._f64: dict[Manifold, Tensor] = {}
        self._cast: dict[tuple[Manifold, torch.dtype, torch.device], tuple[Tensor, bool]] = {}

    def matrix(self, manifold: Manifold) -> Tensor:
        if manifold not in self._f64:
            self._f64[manifold] = manifold.preconditioner(**self.options)
        return self._f64[manifold]

    def cast(self, manifold: Manifold, like: Tensor) -> tuple[Tensor, bool]:
        key = (manifold, like.dtype, like.device)
        if key not in self._cast:
            m = self.matrix(manifold)
            diagonal = bool((m - torch.diag(m.diagonal())).abs().max() == 0)
            matrix = (m.diagonal() if diagonal else m).to(dtype=like.dtype, device=like.device)
            self._cast[key] = matrix, diagonal
        return self._cast[key]

    def apply(self, params: Iterable[tuple[nn.Parameter, Manifold]]) -> None:
        for p, manifold in params:
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise ValueError(
                    "metric preconditioning needs dense gradients; build embeddings "
                    "with sparse=False"
                )
            if g.shape[0] != manifold.n:
                raise ValueError(
                    f"a parameter of shape {list(p.shape)} is registered on {manifold!r} "
                    f"but has no leading basis axis of size n={manifold.n}"
                )
            m, diagonal = self.cast(manifold, g)
            if diagonal:
                g.mul_(m.reshape(-1, *([1] * (g.ndim - 1))))
            elif g.is_contiguous() and g.device.type == "cpu":
                # in column blocks that stay in cache: one read and one write of the
                # gradient, no full-size temporary (the metric step is memory-bound)
                flat = g.view(manifold.n, -1)
                step = max(1, _BLOCK_VALUES // manifold.n)
                for lo in range(0, flat.shape[1], step):
                    part = flat[:, lo:lo + step]
                    part.copy_(m @ part)
            else:
                flat = g.reshape(manifold.n, -1)
                g.copy_((m @ flat).reshape(g.shape))


def precondition_gradients(
    model: nn.Module,
    *,
    measure: object = None,
    frozen: Sequence[int] = (),
    singular: str = "regularize",
    eps: float = 1e-3,
    low_rank: str = "block",
    damping: float = 1e-2,
    iterations: int = 20,
) -> None:
    """Multiply, in place, the gradient of every manifold parameter by the metric's inverse.

    ``grad[k] ← Σ_j (Ḡ⁻¹)_{kj} grad[j]`` along the leading basis axis; parameters
    without a basis axis are left unchanged. With ``frozen`` basis points their
    gradients become zero and the others are multiplied by :math:`G_{LL}^{-1}`.
    Linear in the gradient, so it commutes with DDP's all-reduce.

    Low-rank layers (``manifoldify(..., rank=r)``) get the steepest descent of
    their exact, factor-dependent metric instead (:mod:`weightmanifold.low_rank_metric`);
    their weight ``W₀`` counts as trained when it requires a gradient.

    Args:
        model: a model containing manifold layers.
        measure, frozen, singular, eps: as :meth:`Manifold.preconditioner` (full-rank
            manifolds only).
        low_rank: ``"block"`` or ``"joint"`` solve of the low-rank metric.
        damping: relative damping of the low-rank metric's factor blocks.
        iterations: conjugate-gradient iterations of ``"joint"``.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> p = wm.ManifoldParameter(wm.Ellipse(), (2,))
        >>> p(torch.rand(8)).sum().backward()
        >>> wm.precondition_gradients(p)
    """
    _Metric(measure=measure, frozen=tuple(frozen), singular=singular, eps=eps).apply(
        manifold_parameters(model)
    )
    layers = low_rank_layers(model)
    if layers:
        _check_low_rank_options(measure, frozen)
        lr = _LowRankMetric(low_rank, damping, iterations)
        for layer in layers:
            lr.apply(layer, train_w0=layer.weight.requires_grad)


def _check_low_rank_options(measure: object, frozen: Sequence[int]) -> None:
    if measure is not None or tuple(frozen):
        raise ValueError(
            "low-rank layers are preconditioned with the uniform measure and no frozen basis "
            "points: measure= and frozen= apply to full-rank manifolds only")


class Preconditioned(torch.optim.Optimizer):
    """Any ``torch.optim`` optimiser stepping on metric-preconditioned gradients.

    Each :meth:`step` first multiplies the gradient of every manifold parameter
    by :math:`\\bar G^{-1}` along its basis axis (one ``n × n`` product per
    tensor, never the ``nd × nd`` matrix), then lets the wrapped optimiser
    step — the paper's Algorithm 1 and Appendix E: momentum, Adam's moments and
    weight decay all act on the preconditioned gradient. Parameters without a
    basis axis pass through unchanged. Frozen basis points are kept exactly
    where they are, even under weight decay.

    Works with learning-rate schedulers (it is an ``Optimizer`` whose
    ``param_groups`` are the wrapped optimiser's).

    Args:
        optimizer: the optimiser to wrap, built over ``model.parameters()``.
        model: the model whose manifold parameters are preconditioned.
        measure: ``None`` (uniform, the paper's) or the measure of the training
            conditions (see :meth:`Manifold.gram`).
        frozen: basis indices that stay fixed (the tethered rod: ``[0]``).
        singular, eps: treatment of a singular metric (see
            :meth:`Manifold.preconditioner`).
        low_rank: how the gradients of low-rank layers are preconditioned:
            ``"block"`` (default) or ``"joint"`` (the exact steepest descent, by
            conjugate gradients), see :mod:`weightmanifold.low_rank_metric`.
        damping: relative damping of the low-rank metric, which is singular at a
            zero-delta start and along the factors' gauge.
        iterations: conjugate-gradient iterations per layer and step of ``"joint"``.

    A low-rank layer's ``W₀`` is preconditioned jointly with its factors when the
    optimiser steps it; a frozen ``W₀`` (fine-tuning a pretrained network) leaves
    the factors' metric with :math:`\bar G` in place of the covariance.

    Raises:
        TypeError: if ``optimizer`` is not a ``torch.optim.Optimizer``.
        ValueError: if ``optimizer`` holds none of ``model``'s parameters (the
            wrong model), or ``measure``/``frozen`` are given for a model with
            low-rank layers. Manifold parameters the optimiser does not step (a
            frozen body, a second optimiser) are simply not preconditioned.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> model = wm.ManifoldParameter(wm.Ellipse(), (4,))
        >>> opt = wm.Preconditioned(torch.optim.SGD(model.parameters(), lr=0.1), model)
        >>> model(torch.rand(16)).pow(2).sum().backward()
        >>> opt.step(); opt.zero_grad()
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        *,
        measure: object = None,
        frozen: Sequence[int] = (),
        singular: str = "regularize",
        eps: float = 1e-3,
        low_rank: str = "block",
        damping: float = 1e-2,
        iterations: int = 20,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"Preconditioned wraps a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if isinstance(optimizer, Preconditioned):
            raise TypeError("the optimizer is already Preconditioned")
        self.optimizer = optimizer
        self.frozen = tuple(int(i) for i in frozen)
        self._all = manifold_parameters(model)
        self._low_rank_all = low_rank_layers(model)
        if self._low_rank_all:
            _check_low_rank_options(measure, frozen)
        self._low_rank_metric = _LowRankMetric(low_rank, damping, iterations)
        optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if (self._all or self._low_rank_all) and \
                not optimised & {id(p) for p in model.parameters()}:
            raise ValueError(
                "the optimizer holds none of the model's parameters: build it over "
                "model.parameters() (or the part of them you train)")
        self._select()
        self._metric = _Metric(measure=measure, frozen=self.frozen, singular=singular, eps=eps)
        # parameters whose current gradient is already preconditioned; a backward pass that
        # accumulates into a gradient un-marks it (the hook holds the set, not the optimizer)
        self._marked: set[int] = set()
        self._hook()

    def _hook(self) -> None:
        marked = self._marked
        params = [p for p, _ in self._all] + [p for layer in self._low_rank_all
                                              for p in layer.low_rank_parameters()]
        self._hooks = [p.register_post_accumulate_grad_hook(
            lambda q, marked=marked: marked.discard(id(q))) for p in params if p.requires_grad]
        for _, manifold in self._params:  # fail early on a bad measure / frozen set
            self._metric.matrix(manifold)

    # -- the wrapped optimiser's state, shared ---------------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.defaults

    def _select(self) -> None:
        """Only the manifold parameters the optimiser steps are preconditioned (a frozen body,
        several optimisers over one model); the others are not touched."""
        optimised = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        self._params = [(p, m) for p, m in self._all if id(p) in optimised]
        # low-rank layers whose factors are stepped, and whether W0 is stepped with them
        self._low_rank = [(layer, id(layer.weight) in optimised) for layer in self._low_rank_all
                          if id(layer.weight_up) in optimised and id(layer.weight_down)
                          in optimised]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)
        self._select()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)
        self._marked.clear()

    # -- hooks: the Optimizer API, registered on the wrapped optimiser (whose step and
    # state_dict run inside ours; step hooks therefore see preconditioned gradients) --------
    def register_step_pre_hook(self, hook: Callable) -> Any:
        return self.optimizer.register_step_pre_hook(hook)

    def register_step_post_hook(self, hook: Callable) -> Any:
        return self.optimizer.register_step_post_hook(hook)

    def register_state_dict_pre_hook(self, hook: Callable, prepend: bool = False) -> Any:
        return self.optimizer.register_state_dict_pre_hook(hook, prepend)

    def register_state_dict_post_hook(self, hook: Callable, prepend: bool = False) -> Any:
        return self.optimizer.register_state_dict_post_hook(hook, prepend)

    def register_load_state_dict_pre_hook(self, hook: Callable, prepend: bool = False) -> Any:
        return self.optimizer.register_load_state_dict_pre_hook(hook, prepend)

    def register_load_state_dict_post_hook(self, hook: Callable, prepend: bool = False) -> Any:
        return self.optimizer.register_load_state_dict_post_hook(hook, prepend)

    # -- stepping ----------------------------------------------------------------------------
    def precondition(self) -> None:
        """Precondition the current gradients in place (what :meth:`step` does first).

        Each gradient is preconditioned once: calling this before :meth:`step`
        (to clip the preconditioned gradient, say) does not make :meth:`step`
        apply the metric again, and calling it twice is the same as once. A
        backward pass that accumulates into a gradient makes it fresh again.
        """
        todo = [(p, m) for p, m in self._params if p.grad is not None and id(p) not in self._marked]
        self._metric.apply(todo)
        self._marked.update(id(p) for p, _ in todo)
        for layer, train_w0 in self._low_rank:
            params = layer.low_rank_parameters()
            if any(id(p) in self._marked for p in params):
                continue
            self._low_rank_metric.apply(layer, train_w0)
            self._marked.update(id(p) for p in params)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Precondition the gradients, then step the wrapped optimiser.

        With a ``closure`` (which re-computes the loss and calls ``backward``),
        the gradients it produces are preconditioned each time it is called.
        """
        saved = self._frozen_values()
        if closure is None:
            self.precondition()
            loss = self.optimizer.step()
        else:

            def preconditioned_closure() -> Any:
                with torch.enable_grad():
                    out = closure()
                self.precondition()
                return out

            loss = self.optimizer.step(preconditioned_closure)
        self._marked.clear()
        self._restore(saved)
        return loss

    def _frozen_values(self) -> list[tuple[nn.Parameter, Tensor]]:
        if not self.frozen:
            return []
        idx = list(self.frozen)
        return [(p, p.detach()[idx].clone()) for p, _ in self._params]

    def _restore(self, saved: list[tuple[nn.Parameter, Tensor]]) -> None:
        idx = list(self.frozen)
        with torch.no_grad():
            for p, values in saved:
                p[idx] = values

    # -- checkpoints -------------------------------------------------------------------------
    def _signature(self) -> dict[str, Any]:
        return {
            "frozen": list(self.frozen),
            "manifolds": sorted({repr(m) for _, m in self._params}),
            "configs": sorted({repr(m._config()) for _, m in self._params}),
        }

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The wrapped optimiser's state dict, plus what identifies the preconditioning."""
        sd = self.optimizer.state_dict()
        sd["weightmanifold"] = self._signature()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Load a state dict saved by :meth:`state_dict` (or by the bare wrapped optimiser).

        Raises:
            ValueError: if it was saved for other manifolds or frozen points.
        """
        sd = dict(state_dict)
        sig = sd.pop("weightmanifold", None)
        mine = self._signature()
        if sig is not None and (sig.get("frozen") != mine["frozen"]
                                or sig.get("configs", mine["configs"]) != mine["configs"]):
            raise ValueError(
                f"optimizer state was saved for manifolds {sig.get('manifolds')} with frozen "
                f"points {sig.get('frozen')}, but this optimizer preconditions "
                f"{mine['manifolds']} with frozen points {mine['frozen']}"
            )
        self.optimizer.load_state_dict(sd)

    def __repr__(self) -> str:
        return f"Preconditioned({self.optimizer!r}, frozen={list(self.frozen)})"

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_hooks"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._marked = set()
        self._hook()

    def __del__(self) -> None:
        for handle in getattr(self, "_hooks", ()):
            handle.remove()
