"""The :class:`Manifold` base class: basis functions ``a(s)``, domain checks and the metric.

A weight manifold writes every learnable tensor as a smooth function of a
conditioning value ``s``,

.. math::

    W(s) = \\sum_{k=1}^{n} a_k(s)\\, W_k ,

with ``n`` learned basis tensors :math:`W_k` and fixed basis functions
:math:`a_k`. The shape of the :math:`a_k` gives the manifold its topology.
Everything the optimiser needs from the topology is the Gram matrix of the basis
under a measure :math:`\\rho` on the domain of ``s``,

.. math::

    \\bar G_{ij} = \\int a_i(s)\\, a_j(s)\\, d\\rho(s),

whose inverse, applied along the basis axis, turns the gradient into the step of
steepest descent that moves the manifold least in weight space.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from . import _checks

__all__ = ["Manifold"]


class Manifold(abc.ABC):
    """A family of ``n`` fixed basis functions ``a(s)`` on a ``dim``-dimensional domain.

    Subclasses define the basis (:meth:`_basis`), an exact quadrature rule for
    products of basis functions under the uniform measure (:meth:`quadrature`)
    and, where one exists, a closed-form Gram matrix (:meth:`_closed_form_gram`).

    Attributes:
        n: number of basis functions (basis tensors per learnable tensor).
        dim: number of columns of ``s``.
        periodic: for each column of ``s``, whether it wraps (``s mod 1``).
        clamp: whether bounded coordinates outside ``[0, 1]`` are clamped
            instead of rejected.
    """

    n: int
    dim: int
    periodic: tuple[bool, ...]
    clamp: bool = False

    # -- the basis -------------------------------------------------------------------
    def coefficients(self, s: Tensor | float | Sequence[float]) -> Tensor:
        """Evaluate the basis functions at a batch of conditions.

        Args:
            s: conditions, a floating tensor of shape ``[B]`` (when ``dim == 1``)
                or ``[B, dim]``. A Python number or a 0-d tensor is one
                condition (``B = 1``). Periodic coordinates wrap (``s mod 1``);
                bounded coordinates must lie in ``[0, 1]`` unless the manifold
                was built with ``clamp=True``.

        Returns:
            Tensor of shape ``[B, n]`` with the dtype and device of ``s``,
            differentiable with respect to ``s``.

        Raises:
            TypeError: if ``s`` is not a floating-point tensor.
            ValueError: if ``s`` has the wrong shape, holds NaN/inf, or lies
                outside a bounded domain.
        """
        s2 = self.check(s)
        return self._basis(s2)

    def check(self, s: Tensor | float | Sequence[float]) -> Tensor:
        """Validate ``s`` and bring it to shape ``[B, dim]`` inside the domain.

        Periodic coordinates are wrapped into ``[0, 1)``; bounded ones are
        checked (or clamped when ``clamp=True``). See :meth:`coefficients` for
        the errors raised.
        """
        s2 = _checks.as_condition_batch(s, self.dim, type(self).__name__)
        return self._to_domain(s2)

    def _to_domain(self, s: Tensor) -> Tensor:
        name = type(self).__name__
        _checks.check_finite(s, name)
        if self.dim == 0:
            return s
        cols = []
        for j, per in enumerate(self.periodic):
            col = s[:, j]
            if per:
                col = torch.remainder(col, 1.0)
                # remainder of a tiny negative value rounds up to exactly 1.0: keep [0, 1)
                col = torch.where(col >= 1.0, col - 1.0, col)
            elif self.clamp:
                col = col.clamp(0.0, 1.0)
            else:
                _checks.check_unit_interval(col, name, j, self.dim)
            cols.append(col)
        return torch.stack(cols, dim=1)

    @abc.abstractmethod
    def _basis(self, s: Tensor) -> Tensor:
        """Basis values at validated ``s`` of shape ``[B, dim]``; returns ``[B, n]``."""

    @property
    def window(self) -> int | None:
        """Width ``w < n`` of a window of consecutive basis indices (cyclic for a periodic
        curve) that holds every non-zero coefficient at any ``s``, or ``None``.

        Local bases (B-splines of degree ``p``: ``w = p + 1``) let a batch whose
        examples sit at different ``s`` cost ``w`` basis tensors per example, not
        ``n`` (see :class:`~weightmanifold.layers.conditioning.Windows`).
        """
        return None

    # -- the metric ----------------------------------------------------------------------
    @abc.abstractmethod
    def quadrature(self) -> tuple[Tensor, Tensor]:
        """An exact quadrature rule for ``a_i a_j`` under the uniform measure.

        Returns:
            ``(nodes, weights)`` in float64: nodes of shape ``[Q, dim]`` inside the
            domain and weights of shape ``[Q]`` summing to 1, such that
            ``sum_q w_q a_i(s_q) a_j(s_q)`` equals ``∫ a_i a_j ds`` exactly (up to
            float64 rounding).
        """

    def _closed_form_gram(self) -> np.ndarray | None:
        """The uniform Gram matrix in closed form, or ``None`` where there is none."""
        return None

    def quadrature_gram(self) -> Tensor:
        """The uniform Gram matrix by exact quadrature (float64, ``[n, n]``)."""
        nodes, weights = self.quadrature()
        a = self._basis(nodes)
        return (a * weights[:, None]).T @ a

    def gram(self, measure: object = None, *, num_samples: int = 100_000) -> Tensor:
        """The metric :math:`\\bar G = \\int a(s) a(s)^T d\\rho(s)` (float64, ``[n, n]``).

        Args:
            measure: ``None`` for the uniform measure on the domain (the
                paper's), or the measure of the conditions actually sampled in
                training: a tensor of samples ``[S]``/``[S, dim]`` (empirical
                measure), a pair ``(samples, weights)`` (weights are
                normalised), or a callable ``sampler(num_samples) -> samples``.
            num_samples: samples drawn from a callable ``measure``.

        Returns:
            The symmetric positive semi-definite Gram matrix in float64. It is
            exact for the uniform measure (closed form or exact quadrature) and
            for discrete measures.

        Raises:
            TypeError, ValueError: for a malformed measure or samples outside the
                domain.

        Examples:
            >>> import weightmanifold as wm
            >>> wm.Line().gram()
            tensor([[0.3333, 0.1667],
                    [0.1667, 0.3333]], dtype=torch.float64)
        """
        if measure is None:
            closed = self._closed_form_gram()
            if closed is not None:
                return torch.as_tensor(closed, dtype=torch.float64)
            return self.quadrature_gram()
        samples, weights = _checks.measure_samples(measure, num_samples, type(self).__name__)
        a = self.coefficients(samples.to(torch.float64))
        return (a * weights[:, None]).T @ a

    def preconditioner(
        self,
        measure: object = None,
        *,
        frozen: Sequence[int] = (),
        singular: str = "regularize",
        eps: float = 1e-3,
        rcond: float = 1e-10,
        num_samples: int = 100_000,
    ) -> Tensor:
        """The ``[n, n]`` matrix applied to gradients along the basis axis.

        Without frozen points and with the uniform measure this is
        :math:`\\bar G^{-1}`. With frozen basis points ``F`` (the tethered rod,
        generalised) only the learned set ``L`` moves, and the metric of the
        learned points is the block :math:`G_{LL}` (not a block of
        :math:`G^{-1}`); the result is :math:`G_{LL}^{-1}` embedded in an
        ``n × n`` matrix with zero rows and columns at ``F``:

        .. math::

            \\Delta P_L = -\\eta\\, G_{LL}^{-1} \\nabla_{P_L} L, \\qquad \\Delta P_F = 0.

        With a training measure :math:`\\rho` that misses the support of some
        basis functions, :math:`G_\\rho` is singular and the :math:`\\rho`-steepest
        direction is only defined up to its null space. ``singular`` decides:

        * ``"regularize"`` (default): :math:`(G_\\rho + \\varepsilon\\, G_U)^{-1}`,
          so directions the data never sees are moved as the uniform metric
          would move them, scaled by :math:`1/\\varepsilon`;
        * ``"pinv"``: the Moore–Penrose pseudo-inverse, which never moves the
          unseen directions;
        * ``"raise"``: a ``ValueError``.

        A Gram matrix counts as singular when the smallest eigenvalue of
        :math:`G_U^{-1/2} G_\\rho G_U^{-1/2}` is below ``rcond`` times the largest;
        a non-singular one is inverted exactly, whatever ``singular`` says.

        Args:
            measure: see :meth:`gram`.
            frozen: indices of basis points that stay fixed.
            singular: ``"regularize"``, ``"pinv"`` or ``"raise"``.
            eps: regularisation weight for ``singular="regularize"``.
            rcond: relative eigenvalue threshold for singularity.
            num_samples: samples drawn from a callable ``measure``.

        Returns:
            float64 tensor of shape ``[n, n]``.

        Raises:
            ValueError: for bad ``frozen`` indices, an unknown ``singular`` mode,
                all points frozen, or a singular metric with ``singular="raise"``.

        Examples:
            >>> import weightmanifold as wm
            >>> wm.Line().preconditioner(frozen=[0])
            tensor([[0., 0.],
                    [0., 3.]], dtype=torch.float64)
        """
        if singular not in ("regularize", "pinv", "raise"):
            raise ValueError(
                f"singular must be 'regularize', 'pinv' or 'raise', got {singular!r}"
            )
        learned = _checks.learned_indices(frozen, self.n)
        g_u = self.gram()
        g = g_u if measure is None else self.gram(measure, num_samples=num_samples)
        idx = torch.tensor(learned)
        g_ll = g[idx][:, idx]
        gu_ll = g_u[idx][:, idx]
        # generalised eigenvalues of (G_LL, G_U,LL): singular relative to the uniform metric
        lu = torch.linalg.cholesky(gu_ll)
        eye = torch.eye(len(learned), dtype=g.dtype)
        lu_inv = torch.linalg.solve_triangular(lu, eye, upper=False)
        ev = torch.linalg.eigvalsh(lu_inv @ g_ll @ lu_inv.T)
        if ev.min() > rcond * ev.max():
            inv = torch.linalg.inv(g_ll)
        elif singular == "raise":
            raise ValueError(
                f"the metric of {self!r} under the given measure is singular "
                f"(relative eigenvalue {float(ev.min() / ev.max()):.3g} < rcond={rcond}); "
                "the measure misses part of the manifold. Use singular='regularize' or 'pinv'."
            )
        elif singular == "pinv":
            inv = torch.linalg.pinv(g_ll, rtol=rcond, hermitian=True)
        else:
            inv = torch.linalg.inv(g_ll + eps * gu_ll)
        inv = 0.5 * (inv + inv.T)
        out = torch.zeros(self.n, self.n, dtype=torch.float64)
        out[idx[:, None], idx[None, :]] = inv
        return out

    def constant(self) -> Tensor:
        """Coefficients ``c`` with :math:`\\sum_k c_k a_k(s) = 1` for every ``s`` (float64 ``[n]``).

        Setting basis tensor :math:`W_k = c_k W` makes :math:`W(s) = W` at every
        ``s``: the whole manifold starts at one network. ``c`` is the
        :math:`L^2` projection of the constant function,
        :math:`c = \\bar G^{-1} \\int a(s)\\, ds`; ones for partition-of-unity
        bases (line, Bernstein, B-splines), ``(1, 0, …, 0)`` for Fourier and
        spherical harmonics.

        Raises:
            ValueError: if the constant function is not in the span of the basis.
        """
        nodes, weights = self.quadrature()
        a = self._basis(nodes)
        c = torch.linalg.solve(self.gram(), a.T @ weights)
        residual = (a @ c - 1).abs().max()
        if residual > 1e-9:
            raise ValueError(
                f"{self!r} cannot represent a constant: its basis does not span the "
                f"constant function (residual {float(residual):.3g})"
            )
        # snap round-off to exact integers (ones, zeros) so constant starts are exact
        return torch.where((c - c.round()).abs() < 1e-12, c.round(), c)

    # -- identity ------------------------------------------------------------------------
    def _config(self) -> tuple:
        """Hashable description: two manifolds with equal configs are the same topology."""
        return (type(self).__name__, self.n, self.dim, self.clamp)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifold) and self._config() == other._config()

    def __hash__(self) -> int:
        return hash(self._config())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n})"
