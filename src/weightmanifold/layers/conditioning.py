"""The conditioning of one batch as a value: :class:`Conditioning` and :func:`condition`.

A batch's conditioning is everything a manifold layer needs besides its input:
the basis coefficients :math:`a(s_i)` of every example for every manifold the
model lives on, the axis of the batch in the activations, and — only when the
caller asks for it — the examples grouped by the point of the manifold they sit
at. It is built once per batch by :func:`condition` and handed to the layers,
which are pure functions of ``(x, conditioning)``: they never look at the
values of ``s``, never synchronise with the host, and choose their path from
shapes and from what the conditioning carries.

Validation of ``s`` (shape, NaN/inf, domain) happens here, once. In eager mode a
bad value raises ``ValueError`` naming the offending entries; inside
``torch.compile`` or ``torch.export`` the same check is an asynchronous assert
(no graph break, no host sync).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..topology import Manifold, _checks

__all__ = ["Conditioning", "Groups", "Windows", "condition", "manifolds_of"]


def _sorted(inverse: Tensor) -> bool:
    """Whether group labels ``[B]`` never decrease (the stable sort is the identity)."""
    return bool((inverse[1:] >= inverse[:-1]).all()) if len(inverse) > 1 else True


class _Permute(torch.autograd.Function):
    """``x.index_select(bd, order)`` for a permutation ``order`` whose inverse is known:
    the backward pass gathers with the inverse (autograd's ``index_select`` backward
    scatters with ``index_add_`` into a zeroed buffer, several times slower on CPU)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, order: Tensor, inverse: Tensor, bd: int) -> Tensor:
        ctx.save_for_backward(order, inverse)
        ctx.bd = bd
        return x.index_select(bd, order)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None]:
        order, inverse = ctx.saved_tensors
        return permute(g, inverse, order, ctx.bd), None, None, None


def permute(x: Tensor, order: Tensor, inverse: Tensor, bd: int) -> Tensor:
    """``x.index_select(bd, order)`` for a permutation with inverse ``inverse`` (a gather
    in both directions; plain ``index_select`` under ``torch.func`` transforms)."""
    if _checks.transformed() or not (x.requires_grad and torch.is_grad_enabled()):
        return x.index_select(bd, order)
    return _Permute.apply(x, order, inverse, bd)


def gather(x: Tensor, bd: int, grouping: Groups | Windows) -> Tensor:
    """``x`` with its batch axis ``bd`` in the grouping's order (no copy when in order)."""
    return x if grouping.in_order else permute(x, grouping.order, grouping.restore, bd)


def scatter(y: Tensor, bd: int, grouping: Groups | Windows) -> Tensor:
    """``y``, computed in the grouping's order, back in the batch's order."""
    return y if grouping.in_order else permute(y, grouping.restore, grouping.order, bd)


@dataclass(frozen=True)
class Groups:
    """The examples of a batch grouped by the point of a manifold they sit at.

    Built eagerly by :func:`condition` with ``grouped=True`` (a data-dependent
    step: it reads the distinct points back to the host), it lets a layer run
    one plain op per distinct point — the cheap path when a batch holds few
    distinct conditions (evaluation sweeps, piecewise-constant experts).

    Attributes:
        unique: coefficients of the distinct points, ``[U, n]``, taken from the
            first example of each group: a gradient with respect to ``s``
            reaches that example only (use the basis path, ``grouped=False``,
            to differentiate with respect to every ``s_i``).
        order: the examples sorted by group (stable), ``[B]`` int64.
        restore: the inverse permutation of ``order``, ``[B]`` int64.
        counts: examples per group, Python ints (part of the value's shape: a
            compiled model specialises on them).
        in_order: whether the batch already comes sorted by group (``order`` is
            the identity): the layers then skip the gather and scatter.
    """

    unique: Tensor
    order: Tensor
    restore: Tensor
    counts: tuple[int, ...]
    in_order: bool = False

    @classmethod
    def of(cls, coefficients: Tensor) -> Groups:
        """Group the rows of ``coefficients`` ``[B, n]`` (eager only).

        Raises:
            RuntimeError: inside a traced region, where grouping would break the graph.
        """
        if _checks.tracing():
            raise RuntimeError(
                "grouping examples by condition reads data back to the host and cannot be "
                "traced: build the conditioning with wm.condition(model, s, grouped=True) "
                "outside the compiled region, or use grouped=False")
        rows, inverse = torch.unique(coefficients.detach(), dim=0, return_inverse=True)
        first = torch.zeros(len(rows), dtype=torch.long, device=inverse.device)
        first.scatter_reduce_(0, inverse, torch.arange(len(inverse), device=inverse.device),
                              reduce="amin", include_self=False)
        order = torch.argsort(inverse, stable=True)
        counts = torch.bincount(inverse, minlength=len(rows)).tolist()
        return cls(coefficients[first], order, torch.argsort(order), tuple(counts),
                   _sorted(inverse))

    @property
    def num_unique(self) -> int:
        return len(self.counts)


@dataclass(frozen=True)
class Windows:
    """The examples of a batch grouped by the window of basis points that can be non-zero.

    For a manifold with local support (:attr:`Manifold.window` ``= w < n``: a
    B-spline of degree ``p`` has ``w = p + 1``) every example's coefficients vanish
    outside ``w`` consecutive basis indices. Grouping the examples by that window
    lets a layer run, per group, the basis path on those ``w`` basis tensors only
    (convolutions), or one product per basis tensor on the runs of examples whose
    window holds it (:attr:`spans`; dense layers): the arithmetic per example
    depends on ``w``, not on ``n``. Built eagerly by
    :func:`condition` (it reads the distinct windows back to the host); inside a
    traced region it is not built and the basis path on all ``n`` runs instead.

    The window of each example is, among those holding the most non-zero
    coefficients (counted exactly, so one too small to change a floating-point sum
    still counts), the one holding the largest coefficient mass,
    :math:`\arg\\max_j \\sum_{o < w} |a_{j+o}|`. It contains every non-zero
    coefficient (no rounding of ``s`` against the knots involved).

    Attributes:
        starts: the first basis index of each distinct window (Python ints).
        width: ``w``.
        n: the manifold's ``n`` (window indices wrap modulo ``n`` when periodic).
        local: each example's coefficients on its window, ``[B, w]`` in batch order
            (differentiable with respect to ``s``).
        order, restore, counts, in_order: the examples sorted by window, its
            inverse, the examples per window, and whether the batch already comes
            in that order (as :class:`Groups`). A batch sorted by ``s`` on a
            B-spline is: sorting a training batch by its conditions saves every
            layer a gather and a scatter of its activations.
        index: each example's basis indices, ``[B, w]`` in batch order (the
            columns of :attr:`local`), for the per-example path of convolutions.
    """

    starts: tuple[int, ...]
    width: int
    n: int
    local: Tensor
    order: Tensor
    restore: Tensor
    counts: tuple[int, ...]
    in_order: bool = False
    index: Tensor | None = None

    @classmethod
    def of(cls, coefficients: Tensor, width: int, periodic: bool) -> Windows:
        """Group the rows of ``coefficients`` ``[B, n]`` by window (eager only).

        Raises:
            RuntimeError: inside a traced region.
        """
        if _checks.tracing():
            raise RuntimeError("grouping examples by window reads data back to the host and "
                               "cannot be traced")
        n = coefficients.shape[1]
        mass = coefficients.detach().abs()
        if periodic:
            mass = torch.cat([mass, mass[:, :width - 1]], dim=1)

        def per_window(x: Tensor) -> Tensor:  # [B, number of windows]: sums over each
            c = torch.nn.functional.pad(x.cumsum(1), (1, 0))
            return c[:, width:] - c[:, :-width]

        sums = per_window(mass)
        # the windows holding the most non-zeros (an exact count: a coefficient too small
        # to change a window's floating-point mass still counts), the heaviest of them
        count = per_window((mass > 0).int())
        most = count == count.amax(1, keepdim=True)
        start = sums.masked_fill(~most, -1.0).argmax(1)
        starts, inverse = torch.unique(start, return_inverse=True)
        order = torch.argsort(inverse, stable=True)
        counts = torch.bincount(inverse, minlength=len(starts)).tolist()
        idx = (start[:, None] + torch.arange(width, device=start.device)) % n
        local = coefficients.gather(1, idx)
        return cls(tuple(int(j) for j in starts.tolist()), width, n, local, order,
                   torch.argsort(order), tuple(counts), _sorted(inverse), idx)

    def indices(self, u: int) -> list[int]:
        """The basis indices of window ``u`` (of :attr:`starts`)."""
        return [(self.starts[u] + o) % self.n for o in range(self.width)]

    def run_counts(self, runs: tuple[tuple[int, int], ...]) -> list[int]:
        """The examples of each run ``(u, v)`` of consecutive windows (inclusive)."""
        return [sum(self.counts[u:v + 1]) for u, v in runs]

    @cached_property
    def spans(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """For each basis index ``k``, the runs ``(lo, hi)`` of positions in :attr:`order`
        whose window holds ``k`` (Python ints; one run, two where a periodic window wraps).

        Every example lies in the runs of exactly :attr:`width` basis indices.
        """
        bounds, lo = [], 0
        for c in self.counts:
            bounds.append((lo, lo + c))
            lo += c
        out = []
        for k in range(self.n):
            runs: list[tuple[int, int]] = []
            for u, start in enumerate(self.starts):
                if (k - start) % self.n < self.width:
                    a, b = bounds[u]
                    if runs and runs[-1][1] == a:
                        runs[-1] = (runs[-1][0], b)
                    else:
                        runs.append((a, b))
            out.append(tuple(runs))
        return tuple(out)


@dataclass(frozen=True)
class Conditioning:
    """The conditioning of one batch, built once (:func:`condition`) and shared by every layer.

    Attributes:
        manifolds: the manifolds it holds coefficients for.
        bases: for each of ``manifolds``, :math:`a(s_i)` of every example,
            ``[B, n]`` (differentiable with respect to ``s``). ``B = 1`` is one
            condition for the whole batch.
        batch_dim: the batch axis of the activations (0, or 1 for
            sequence-first models).
        groups: for each manifold, the examples grouped by point
            (:class:`Groups`), or ``None`` when not asked for.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> layer = wm.ManifoldLinear(wm.Ellipse(), 4, 2)
        >>> cond = wm.condition(layer, torch.rand(8))
        >>> cond.batch_size, cond.coefficients.shape
        (8, torch.Size([8, 3]))
        >>> layer(torch.randn(8, 4), cond).shape
        torch.Size([8, 2])
    """

    manifolds: tuple[Manifold, ...]
    bases: tuple[Tensor, ...]
    batch_dim: int = 0
    groups: tuple[Groups | None, ...] | None = None
    windows: tuple[Windows | None, ...] | None = None

    def windows_of(self, manifold: Manifold) -> Windows | None:
        """The :class:`Windows` of ``manifold``, if they were built."""
        if self.windows is None:
            return None
        for i, m in enumerate(self.manifolds):
            if m is manifold or m == manifold:
                return self.windows[i]
        return None

    @property
    def batch_size(self) -> int:
        """Number of conditions (1: one condition for the whole batch)."""
        return self.bases[0].shape[0]

    @property
    def coefficients(self) -> Tensor:
        """The coefficients ``[B, n]`` of a conditioning built for a single manifold.

        Raises:
            ValueError: if it holds several manifolds (use :meth:`basis_of`).
        """
        if len(self.bases) != 1:
            raise ValueError(
                f"this conditioning holds {len(self.bases)} manifolds "
                f"{list(self.manifolds)}: use basis_of(manifold)")
        return self.bases[0]

    def basis_of(self, manifold: Manifold, who: str = "a layer") -> tuple[Tensor, Groups | None]:
        """The coefficients ``[B, n]`` (and groups) of ``manifold``.

        Raises:
            ValueError: if the conditioning was built for other manifolds.
        """
        for i, m in enumerate(self.manifolds):
            if m is manifold or m == manifold:
                return self.bases[i], None if self.groups is None else self.groups[i]
        raise ValueError(
            f"{who} lives on {manifold!r}, but the conditioning was built for "
            f"{', '.join(map(repr, self.manifolds))}: build it for the model that is called "
            "(wm.condition(model, s)), or pass s itself")

    def with_batch_dim(self, batch_dim: int) -> Conditioning:
        """The same conditioning for activations whose batch is along ``batch_dim``."""
        return self if batch_dim == self.batch_dim else replace(self, batch_dim=batch_dim)

    def to(self, dtype: torch.dtype) -> Conditioning:
        """The same conditioning with coefficients cast to ``dtype``."""
        if all(b.dtype == dtype for b in self.bases):
            return self
        groups = None if self.groups is None else tuple(
            None if g is None else replace(g, unique=g.unique.to(dtype)) for g in self.groups)
        windows = None if self.windows is None else tuple(
            None if w is None else replace(w, local=w.local.to(dtype)) for w in self.windows)
        return replace(self, bases=tuple(b.to(dtype) for b in self.bases), groups=groups,
                       windows=windows)

    @classmethod
    def from_s(cls, manifold: Manifold, s: object, *, batch_dim: int = 0,
               grouped: bool = False) -> Conditioning:
        """The conditioning of ``s`` on one manifold (see :func:`condition`)."""
        return condition(manifold, s, batch_dim=batch_dim, grouped=grouped)


def manifolds_of(module: nn.Module) -> tuple[Manifold, ...]:
    """The distinct manifolds of the manifold layers in ``module``, in module order."""
    from .base import ManifoldModule

    out: list[Manifold] = []
    for m in module.modules():
        if isinstance(m, ManifoldModule) and not any(m.manifold == o for o in out):
            out.append(m.manifold)
    return tuple(out)


def _as_manifolds(target: object) -> tuple[tuple[Manifold, ...], int | None]:
    if isinstance(target, Manifold):
        return (target,), None
    if isinstance(target, nn.Module):
        found = manifolds_of(target)
        if not found:
            raise ValueError(f"{type(target).__name__} has no manifold layer to condition")
        return found, getattr(target, "batch_dim", None)
    if isinstance(target, Iterable):
        items = tuple(target)
        if items and all(isinstance(m, Manifold) for m in items):
            return items, None
    raise TypeError(
        "condition() takes a Manifold, a sequence of Manifolds or a module with manifold "
        f"layers, got {type(target).__name__}")


def _at_least(s: object, dtype: torch.dtype, device: torch.device | None) -> object:
    """``s`` as a tensor evaluated at no less precision than ``dtype`` (invalid ``s`` unchanged)."""
    try:
        if isinstance(s, (np.ndarray, np.generic)):
            s = torch.as_tensor(s, device=device)
        elif not isinstance(s, Tensor):  # Python numbers: never read in less than the default
            s = torch.as_tensor(s, dtype=torch.promote_types(torch.get_default_dtype(), dtype),
                                device=device)
    except (TypeError, ValueError, RuntimeError):
        return s  # the manifold's check names the problem
    if s.is_floating_point() and s.dtype != dtype:
        s = s.to(torch.promote_types(s.dtype, dtype))
    return s


def condition(target: Manifold | Sequence[Manifold] | nn.Module, s: object, *,
              batch_dim: int | None = None, grouped: bool = False,
              local: bool | None = None, dtype: torch.dtype | None = None,
              device: torch.device | str | None = None) -> Conditioning:
    """Validate ``s`` and evaluate the basis of every manifold of ``target`` once.

    Args:
        target: a manifold, several, or a module (a converted model or any module
            built from manifold layers: every manifold among its layers).
        s: one condition per example (``[B]`` or ``[B, dim]``), or a single
            condition for the whole batch (a number, a 0-d tensor, ``[1]``).
        batch_dim: the batch axis of activations; default: the model's
            (``ManifoldModel.batch_dim``), else 0.
        grouped: also group the examples by point of the manifold
            (:class:`Groups`). A data-dependent, eager-only step that makes
            layers run one plain op per distinct point when there are few.
        local: group the examples of manifolds with local support (B-splines)
            by their window of non-zero coefficients (:class:`Windows`), so a
            layer costs ``p + 1`` basis tensors per example instead of ``n``.
            Data-dependent and eager like ``grouped``; ``None`` (default): on
            for such manifolds with several conditions, outside traced regions
            (inside ``torch.compile``/``torch.export`` the basis path on all
            ``n`` runs); ``False``: never.
        dtype: the dtype of the coefficients (a model's parameter dtype),
            whatever the type of ``s``: Python numbers are read in it, NumPy
            arrays and tensors are evaluated in the wider of their dtype and
            this one, then cast. Default: the dtype of ``s`` (Python numbers:
            the default dtype).
        device: where an ``s`` given as Python numbers or NumPy is put (a
            model's device); tensors stay where they are.

    Returns:
        A :class:`Conditioning`, differentiable with respect to ``s``.

    Raises:
        TypeError, ValueError: for an invalid ``s`` (shape, dtype, NaN/inf,
            outside the domain), as :meth:`Manifold.coefficients`, naming the
            manifold and the offending entries.

    Examples:
        >>> import torch, weightmanifold as wm
        >>> cond = wm.condition(wm.Line(), torch.tensor([0.0, 0.5]))
        >>> cond.coefficients
        tensor([[1.0000, 0.0000],
                [0.5000, 0.5000]])
    """
    manifolds, model_bd = _as_manifolds(target)
    bd = (model_bd or 0) if batch_dim is None else int(batch_dim)
    if dtype is not None and not isinstance(s, bool) and s is not None:
        s = _at_least(s, dtype, None if device is None else torch.device(device))
    bases = []
    for m in manifolds:
        a = m.coefficients(s)
        if dtype is not None and a.dtype != dtype:
            a = a.to(dtype)
        if bases and a.shape[0] != bases[0].shape[0]:
            raise ValueError(f"s gives {a.shape[0]} conditions on {m!r} but "
                             f"{bases[0].shape[0]} on {manifolds[0]!r}")
        bases.append(a)
    groups = tuple(Groups.of(a) for a in bases) if grouped else None
    windows = None
    if local is not False and bases[0].shape[0] > 1 and not _checks.tracing() \
            and not _checks.vmapped():
        found = tuple(None if m.window is None else
                      Windows.of(a, m.window, bool(any(getattr(m, "periodic", ()))))
                      for m, a in zip(manifolds, bases, strict=True))
        windows = found if any(w is not None for w in found) else None
    return Conditioning(tuple(manifolds), tuple(bases), bd, groups, windows)
