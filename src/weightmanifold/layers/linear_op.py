"""Dispatch of a linear op (dense, conv, embedding) over a batch with per-example conditions.

Because each op is linear in its weight,

.. math:: W(s_i)\\, x_i = \\sum_k a_k(s_i)\\, (W_k x_i),

a batch is computed with only the ``n`` basis tensors in memory. Four paths,
all exactly equal to materialising :math:`W(s_i)` per example, chosen from
shapes and from what the caller asked for — never from the values of ``s``:

* **single** — the conditioning holds one condition for the whole batch
  (``B = 1``): materialise :math:`W(s)` once and run the plain op (inference at
  one ``s`` costs exactly a plain network);
* **shared** — the caller grouped the examples by point of the manifold
  (``wm.condition(model, s, grouped=True)``, an eager step) and there are at
  most as many points ``U`` as basis points ``n``: materialise ``U`` weights and
  run the plain op on each group;
* **local** — a manifold with local support (B-splines: ``p + 1`` non-zero
  coefficients at any ``s``) whose examples the conditioning grouped by window
  (:class:`~weightmanifold.layers.conditioning.Windows`, eager, automatic):
  either the basis path below per window, on its ``p + 1`` basis tensors only
  (convolutions; on small layers, where a call costs more than its arithmetic,
  runs of consecutive windows share one call on the few more basis tensors
  they span, :func:`merge_windows`), or — for dense layers, whose weights cost
  more to move than their outputs — one op per basis tensor ``k`` on the
  examples whose window holds ``k`` (every basis tensor read once, ``p + 1``
  products per example), or — for convolutions whose weights are small against
  their outputs — each example's own kernel mixed from its ``p + 1`` basis
  tensors and one grouped convolution over the batch (``B · groups`` groups): the
  arithmetic of one plain network plus ``p + 1`` multiply-adds per weight and
  example, and one call whatever ``n`` is;
* **basis** — otherwise: one op on the stacked basis, either with ``n×`` the
  output channels whose outputs are mixed per example with :math:`a_k(s_i)`, or
  (when the input is the smaller side) on inputs pre-scaled by :math:`a_k(s_i)`
  and stacked along the input channels, against the basis concatenated along
  its input axis. Both are the same sum; the path with the smaller ``n×``
  intermediate tensor is taken (a choice made from shapes).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from ..topology import _checks
from .base import ManifoldModule
from .conditioning import Groups, Windows, gather, scatter

__all__ = ["ManifoldOp", "merge_windows"]


@functools.lru_cache(maxsize=4096)
def merge_windows(starts: tuple[int, ...], counts: tuple[int, ...], width: int, n: int,
                  work: float, moved: float, call: float
                  ) -> tuple[float, tuple[tuple[int, int], ...]]:
    r"""The cheapest way to run a batch grouped by window in calls of consecutive windows.

    Window ``u`` (its first basis index ``starts[u]``, ascending) holds ``counts[u]``
    examples. A run of windows ``u..v`` runs as one call of the basis path on the
    ``m = starts[v] - starts[u] + width`` basis tensors it spans (at most ``n``);
    its cost is

    .. math:: B_{uv}\,\mathrm{work}\; m + \mathrm{moved}\; m + \mathrm{call},

    with :math:`B_{uv}` its examples. The partition of minimal total cost, by dynamic
    programming over the windows (:math:`O(G^2)` for ``G`` windows).

    Args:
        starts, counts, width, n: as in :class:`~weightmanifold.layers.conditioning.Windows`.
        work: multiply-adds of one example against one basis tensor.
        moved: cost of moving one basis tensor (and its gradient) for one call.
        call: the fixed cost of one call.

    Returns:
        The total cost and the runs ``(u, v)`` (inclusive window indices, in order).

    Examples:
        >>> merge_windows((0, 1, 2), (5, 5, 5), 4, 6, work=1.0, moved=0.0, call=0.0)
        (60.0, ((0, 0), (1, 1), (2, 2)))
        >>> merge_windows((0, 1, 2), (5, 5, 5), 4, 6, work=1.0, moved=0.0, call=100.0)
        (190.0, ((0, 2),))
    """
    g = len(starts)
    prefix = [0]
    for c in counts:
        prefix.append(prefix[-1] + c)
    best: list[float] = [0.0] + [math.inf] * g
    back = [0] * (g + 1)
    for v in range(1, g + 1):  # the runs of windows 0..v-1, the last one u..v-1
        for u in range(v - 1, -1, -1):
            m = starts[v - 1] - starts[u] + width
            if m > n:
                break
            cost = best[u] + (prefix[v] - prefix[u]) * work * m + moved * m + call
            if cost < best[v]:
                best[v], back[v] = cost, u
    runs, v = [], g
    while v > 0:
        runs.append((back[v], v - 1))
        v = back[v]
    return best[g], tuple(reversed(runs))


class ManifoldOp(ManifoldModule):
    """Base of manifold layers wrapping a linear op with a weight and an optional bias.

    Subclasses implement :meth:`_plain` (the op with one weight and bias) and
    :meth:`_basis_forward` (the op on the stacked basis, mixed per example).
    The weight parameter is ``weight`` (``[n, *plain_shape]``) and the bias
    ``bias`` (``[n, out]``) or ``None``.

    Attributes:
        mix: for the basis path of dense and conv layers, ``"auto"`` (the
            smaller intermediate), ``"input"`` or ``"output"`` mixing.
        path: ``"auto"`` (see :meth:`choose_path`), or force ``"shared"`` (needs a
            grouped conditioning), ``"basis"`` or ``"example"`` (convolutions: each
            example's own kernel and one grouped convolution, :meth:`_example_forward`;
            on any manifold, and traceable: without windows the kernels are mixed
            from all ``n`` basis tensors by one matrix product) for batches of
            several conditions.
    """

    mix: str = "auto"
    path: str = "auto"

    def materialise(self, a: Tensor) -> tuple[Tensor, Tensor | None]:
        """Weight and bias at one point with coefficients ``a`` (``[n]``)."""
        n = self.manifold.n
        a = a.to(self.weight.dtype)
        w = (a @ self.weight.reshape(n, -1)).reshape(self.weight.shape[1:])
        b = None if self.bias is None else a @ self.bias
        return w, b

    def forward(self, x: Tensor, s: object = None) -> Tensor:
        """Apply the op at the conditions ``s`` (one per example, or one for the batch).

        Args:
            x: the input, batch along the conditioning's ``batch_dim`` (0 unless
                converted otherwise).
            s: a :class:`~weightmanifold.Conditioning`, conditions as accepted by
                the manifold, or ``None`` to use the ambient conditioning (inside
                a :class:`~weightmanifold.ManifoldModel` call or
                :func:`~weightmanifold.conditioned`).

        Raises:
            ValueError: if ``s`` is missing, invalid, built for another manifold,
                or does not match the batch.
        """
        cond = self._resolve(s)
        a, groups = self._coefficients(cond)
        x = self._check_batch(x, cond)
        if cond.batch_size == 1:
            return self._plain(x, *self.materialise(a[0]))
        path = self.choose_path(groups)
        if path == "example":
            return self._example_forward(x, cond.windows_of(self.manifold), a, cond.batch_dim)
        if path == "single":
            return self._plain(x, *self.materialise(groups.unique[0]))  # type: ignore[union-attr]
        if path == "shared":
            return self._shared_forward(x, groups, cond.batch_dim)  # type: ignore[arg-type]
        windows = cond.windows_of(self.manifold)
        if windows is not None and self.path == "auto" and self._local_basis:
            route = self._local_path(x, windows, cond.batch_dim)
            if route == "window":
                return self._local_forward(x, windows, cond.batch_dim)
            if route == "banded":
                return self._banded_forward(x, a, windows, cond.batch_dim)
            if route == "example":
                return self._example_forward(x, windows, a, cond.batch_dim)
        return self._basis_forward(x, a.to(self.weight.dtype), cond.batch_dim)

    #: whether the basis path can run on a window of the basis (see :meth:`_local_forward`)
    _local_basis = True
    #: whether the per-basis local path (:meth:`_banded_forward`) is offered: dense layers
    _banded = False
    #: whether the per-example local path (:meth:`_example_forward`) is offered: convolutions
    _kernel_per_example = False
    #: passes over each example's own weights on the per-example path (mixed, read by the
    #: op, their gradients written and read back, the mixing's backward), in units of
    #: _FLOPS_PER_VALUE, for kernels of up to _EXAMPLE_CACHED values; larger kernels cost
    #: more per value, as (size / _EXAMPLE_CACHED) ** 1.5: fitted to the grouped
    #: convolutions measured in bench/README.md (a 64 x 64 x 3 x 3 kernel per example at
    #: 8 x 8 is slower than the windows, at 16 x 16 three times faster)
    _EXAMPLE_PASSES = 6
    _EXAMPLE_CACHED = 16384
    #: floating-point operations that moving one value costs, in the path cost models
    _FLOPS_PER_VALUE = 16
    #: multiply-adds that one more call of the op costs, forward and backward, in the
    #: cost model of the local paths: about 50 µs for a small matrix product on two
    #: CPU cores (convolutions override it: bench/README.md)
    _CALL_COST = 2.5e6

    def _local_path(self, x: Tensor, windows: Windows, bd: int) -> str:
        """``"basis"``, ``"window"``, ``"banded"`` or ``"example"``: the cheapest, from
        shapes alone.

        Counting multiply-adds, plus ``_FLOPS_PER_VALUE`` per value moved and
        ``_CALL_COST`` per call of the op:

        * basis: ``B · work · n``, and the ``n`` basis tensors moved about three
          times (forward, gradient, optimiser); one call;
        * window: runs of consecutive windows merged into one call each
          (:func:`merge_windows`: ``B_r · work · m_r`` for a run of ``B_r``
          examples spanning ``m_r >= w`` basis tensors, each run's tensors
          gathered, read, and their gradients written and scattered: about six
          passes), the runs chosen to minimise that cost — one run per window
          when calls are cheap against the arithmetic, fewer, wider runs when
          they are not (small layers, where a convolution's backward pass costs
          about the same whatever its batch);
        * banded (dense layers): ``B · work · w`` with the ``n`` basis tensors moved
          as on the basis path, plus the input gathered once and ``w`` partial
          outputs per example accumulated (forward and backward), ``n`` calls;
        * example (convolutions): ``B · work`` (one plain network), each example's
          kernel mixed from ``w`` basis tensors and moved about
          ``_EXAMPLE_PASSES`` times, the ``n`` basis tensors moved as on the basis
          path, two calls (the mixing and one grouped convolution).

        A wide dense layer at small batch (2048 → 512 on 128 examples) takes the
        banded path; convolutions over images with few channels the per-example
        path, and those where a kernel outweighs its outputs the windows or the
        basis.
        """
        costs = self._local_costs(x, windows, bd)
        return min(costs, key=lambda k: costs[k][0])

    def _local_costs(self, x: Tensor, windows: Windows,
                     bd: int) -> dict[str, tuple[float, tuple[tuple[int, int], ...]]]:
        """The cost of each local route, with the runs of windows of the window route."""
        per_tensor = self.weight[0].numel()
        work = self._work_per_example(x, bd)
        beta, call, n = self._FLOPS_PER_VALUE, self._CALL_COST, self.manifold.n
        costs = {"basis": (x.shape[bd] * work * n + beta * 3 * n * per_tensor + call, ()),
                 "window": merge_windows(windows.starts, windows.counts, windows.width,
                                         n, work, beta * 6 * per_tensor, call)}
        if self._banded and not _checks.transformed():  # its Function has no functorch rule
            w = windows.width
            features = max(1, x.shape[-1])  # dense: the weight is [out, in] or [in, out]
            outputs = x.numel() // features * (per_tensor // features)
            costs["banded"] = (x.shape[bd] * work * w + beta * 3 * n * per_tensor
                               + beta * (2 * x.numel() + 3 * w * outputs) + call * n, ())
        if self._kernel_per_example and windows.index is not None and not _checks.transformed():
            b, w = x.shape[bd], windows.width
            passes = self._EXAMPLE_PASSES * max(1.0, per_tensor / self._EXAMPLE_CACHED) ** 1.5
            costs["example"] = (b * work + b * per_tensor * (2 * w + beta * passes)
                                + beta * 3 * n * per_tensor + 2 * call, ())
        return costs

    def _work_per_example(self, x: Tensor, bd: int) -> float:
        """Multiply-adds of one example against one basis tensor (dense: positions × size)."""
        return x.numel() / max(1, x.shape[bd] * x.shape[-1]) * self.weight[0].numel()

    def _banded_forward(self, x: Tensor, a: Tensor, windows: Windows, bd: int) -> Tensor:
        """One product per basis tensor ``k`` on the examples whose window holds it.

        .. math:: y_i = \\sum_{k} a_k(s_i)\\, (W_k x_i + b_k)
            = \\sum_{k:\\ i \\in S_k} a_k(s_i)\\, (W_k x_i + b_k),

        with :math:`S_k` the examples whose window holds ``k`` (contiguous runs
        once the batch is sorted by window, :attr:`Windows.spans`). Exactly the
        basis path: ``a_k(s_i) = 0`` outside :math:`S_k`. Each example meets
        ``w`` basis tensors; each basis tensor is read once (:meth:`_banded_op`).
        """
        xs = gather(x, bd, windows)
        coef = gather(a.to(self.weight.dtype), 0, windows)
        return scatter(self._banded_op(xs, coef, windows.spans, bd), bd, windows)

    def _example_forward(self, x: Tensor, windows: Windows | None, a: Tensor,
                         bd: int) -> Tensor:
        r"""Each example at its own weights (layers with :attr:`_kernel_per_example`),
        mixed from its window when there are ``windows``:

        .. math:: y_i = \Big(\sum_{o < w} a_{j_i + o}(s_i)\, W_{j_i + o}\Big) x_i
            + \sum_{o < w} a_{j_i + o}(s_i)\, b_{j_i + o},

        with :math:`j_i` the first basis index of example ``i``'s window
        (:attr:`Windows.index`): exactly the basis path, the other coefficients
        being zero; else from all ``n`` basis tensors with the coefficients ``a``
        ``[B, n]``. No gather or scatter of the activations: the batch stays in
        its order.
        """
        raise NotImplementedError

    def _banded_op(self, x: Tensor, coef: Tensor,
                   spans: tuple[tuple[tuple[int, int], ...], ...], bd: int) -> Tensor:
        """The banded path on a batch sorted by window (layers with :attr:`_banded`)."""
        raise NotImplementedError

    def _local_forward(self, x: Tensor, windows: Windows, bd: int) -> Tensor:
        """The basis path per run of windows of non-zero coefficients: ``w`` basis tensors
        per example (or the few more of a merged run), not ``n``.

        Exactly the basis path (the coefficients outside an example's window are
        zero), at a cost per example that depends on the window's width. The runs
        of consecutive windows that share one call are chosen by the cost model
        (:meth:`_local_costs`, :func:`merge_windows`).
        """
        runs = self._local_costs(x, windows, bd)["window"][1]
        dtype, w, n = self.weight.dtype, windows.width, windows.n
        parts = gather(x, bd, windows).split(windows.run_counts(runs), dim=bd)
        local = gather(windows.local.to(dtype), 0, windows)
        # each run's coefficients on its span of basis tensors: an example of window u
        # sits at offset starts[u] - starts[first window of the run]
        coefs, lo = [], 0
        for first, last in runs:
            count = sum(windows.counts[first:last + 1])
            part = local[lo:lo + count]
            lo += count
            if first == last:
                coefs.append(part)
                continue
            span = windows.starts[last] - windows.starts[first] + w
            offsets = torch.repeat_interleave(
                torch.tensor([windows.starts[u] - windows.starts[first]
                              for u in range(first, last + 1)], device=part.device),
                torch.tensor(windows.counts[first:last + 1], device=part.device),
                output_size=count)  # known on the host: no device sync
            cols = offsets[:, None] + torch.arange(w, device=part.device)
            coefs.append(part.new_zeros(count, span).scatter(1, cols, part))
        # one gather of every run's basis tensors, split per run: the backward pass
        # accumulates into one buffer (a slice per run would allocate a full-size
        # gradient per run)
        spans = [c.shape[1] for c in coefs]
        idx = torch.tensor([(windows.starts[first] + o) % n
                            for (first, _), m in zip(runs, spans, strict=True)
                            for o in range(m)], device=self.weight.device)
        weights = self.weight.index_select(0, idx).split(spans)
        biases = [None] * len(weights) if self.bias is None else \
            self.bias.index_select(0, idx).split(spans)
        outs = [self._basis_op(part, wt, b, a, bd)
                for part, a, wt, b in zip(parts, coefs, weights, biases, strict=True)]
        return scatter(torch.cat(outs, dim=bd), bd, windows)

    def choose_path(self, groups: Groups | None) -> str:
        """``"single"``, ``"shared"``, ``"basis"`` or ``"example"`` for a batch of several
        conditions.

        Decided by :attr:`path` and by whether the caller grouped the examples
        (:class:`~weightmanifold.layers.conditioning.Groups`): without groups,
        ``"auto"`` is the basis path. With groups, ``"auto"`` takes the shared
        path when there are at most ``n`` distinct points (the shared path does
        the arithmetic of one plain network per example, the basis path ``n``
        times that; piecewise-constant experts always qualify) and the single
        path when there is one. ``"example"`` is taken whenever it is asked for.

        Raises:
            ValueError: for an unknown :attr:`path`, ``"shared"`` without groups, or
                ``"example"`` on a layer without that path.
        """
        if self.path not in ("auto", "shared", "basis", "example"):
            raise ValueError(f"path must be 'auto', 'shared', 'basis' or 'example', "
                             f"got {self.path!r}")
        if self.path == "example":
            if not self._kernel_per_example:
                raise ValueError(f"{self._who()} has path='example', which only "
                                 "full-rank convolutions offer; use 'auto' or 'basis'")
            return "example"
        if groups is None:
            if self.path == "shared":
                raise ValueError(
                    f"{self._who()} has path='shared', which needs the examples grouped by "
                    "condition (a data-dependent, eager step): call the model with "
                    "s=wm.condition(model, s, grouped=True), or set model.grouped = True")
            return "basis"
        if groups.num_unique == 1 and self.path != "basis":
            return "single"
        if self.path == "shared" or (self.path == "auto" and groups.num_unique <= self.manifold.n):
            return "shared"
        return "basis"

    def _shared_forward(self, x: Tensor, groups: Groups, bd: int) -> Tensor:
        parts = gather(x, bd, groups).split(list(groups.counts), dim=bd)
        outs = [
            self._plain(part, *self.materialise(groups.unique[u]))
            for u, part in enumerate(parts)
        ]
        return scatter(torch.cat(outs, dim=bd), bd, groups)

    def _mix_inputs(self, inputs_smaller: bool) -> bool:
        if self.mix not in ("auto", "input", "output"):
            raise ValueError(f"mix must be 'auto', 'input' or 'output', got {self.mix!r}")
        return inputs_smaller if self.mix == "auto" else self.mix == "input"

    def to_plain(self, a: Tensor) -> nn.Module:
        """The ``torch.nn`` twin of this layer, its tensors at coefficients ``a`` (``[n]``)."""
        w, b = self.materialise(a)
        out = self._make_plain()
        with torch.no_grad():
            if w is not None:
                out.weight.copy_(w)
            if b is not None:
                out.bias.copy_(b)
        return out

    def _make_plain(self) -> nn.Module:
        """A fresh ``torch.nn`` module with this layer's configuration, device and dtype."""
        raise NotImplementedError

    def _plain(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _basis_forward(self, x: Tensor, a: Tensor, bd: int) -> Tensor:
        return self._basis_op(x, self.weight, self.bias, a, bd)

    def _basis_op(self, x: Tensor, weight: Tensor, bias: Tensor | None, a: Tensor,
                  bd: int) -> Tensor:
        """The basis path on the basis tensors ``weight`` ``[m, ...]`` (and ``bias``) with
        coefficients ``a`` ``[B, m]``: all ``n`` of them, or a window of them."""
        raise NotImplementedError
