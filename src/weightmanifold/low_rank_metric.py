r"""The exact metric of a low-rank manifold, and its steepest-descent step.

For a layer :math:`W(s) = W_0 + \sum_k a_k(s) U_k V_k` (per group of a grouped
convolution; see :mod:`weightmanifold.layers.low_rank`) a change
:math:`(\delta W_0, \delta U, \delta V)` of the parameters moves the manifold by

.. math::

    \delta W(s) = \delta W_0 + \sum_k a_k(s) D_k, \qquad
    D_k = \delta U_k V_k + U_k \delta V_k ,

so the volumetric metric of the seed paper, :math:`\int \lVert \delta W(s)
\rVert_F^2 ds`, is the quadratic form of the operator :math:`M = \int J^T J\,ds`:

.. math::

    M(\delta)_{W_0} = \delta W_0 + \sum_k m_k D_k,\qquad
    M(\delta)_{U_k} = F_k V_k^T,\qquad M(\delta)_{V_k} = U_k^T F_k,\qquad
    F_k = m_k \delta W_0 + \sum_l \bar G_{kl} D_l,

with :math:`m = \int a\,ds` and :math:`\bar G = \int a a^T ds`. Unlike the
full-rank metric it depends on the factors. The steepest descent
:math:`\delta = M^{-1} g` eliminates :math:`W_0` exactly:
:math:`\delta W_0 = g_{W_0} - \sum_k m_k D_k` leaves, for the factors, the Schur
complement :math:`S` — the same operator with the covariance
:math:`C = \bar G - m m^T` in place of :math:`\bar G` and no :math:`W_0` — acting on
the reduced gradients

.. math::

    \tilde g_{U_k} = g_{U_k} - m_k\, g_{W_0} V_k^T, \qquad
    \tilde g_{V_k} = g_{V_k} - m_k\, U_k^T g_{W_0}.

:math:`S` is singular: along the gauge :math:`(U M, M^{-1} V)` nothing moves, a
factor that is zero makes the other's block zero (the zero-delta start), and a
constant basis function (the ellipse's :math:`a_1 = 1`) duplicates :math:`W_0`.
The step therefore solves the damped :math:`S + \lambda I`, with
:math:`\lambda = \texttt{damping} \cdot (\operatorname{tr} K_U + \operatorname{tr} K_V) /
(2 n r)` (the scale of the factor blocks; ``1`` where both factors are zero).
Two solves:

* ``"block"`` (default): the :math:`U`–:math:`V` cross terms of :math:`S` are
  dropped, leaving two :math:`(n r) \times (n r)` systems per group —
  :math:`K_U = [C_{lk} V_l V_k^T]` acting on the rows of :math:`\delta U` and
  :math:`K_V = [C_{kl} U_k^T U_l]` on the columns of :math:`\delta V` (for
  :math:`n = 1` these are LoRA's Riemannian preconditioners :math:`(V V^T)^{-1}`,
  :math:`(U^T U)^{-1}`). It is the exact steepest descent of the metric
  :math:`\tilde M` that agrees with :math:`M` on every move of :math:`W_0` with one
  factor, and satisfies :math:`\tilde M \succeq M / 2` on the factors; its cost is a
  few products of the size of the weight and two Cholesky factorisations.
* ``"joint"``: the exact steepest descent of :math:`M + \lambda I_{U,V}`,
  solved by conjugate gradients on :math:`S + \lambda I`, preconditioned by the
  block solve (each iteration costs about four products of the size of the
  weight).

Without :math:`W_0` in the optimiser (a frozen pretrained weight), :math:`\bar G`
replaces :math:`C` and the gradients are not reduced.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .topology import Manifold

__all__ = ["LowRankGeometry", "metric_apply", "steepest_descent"]


@dataclass(frozen=True)
class LowRankGeometry:
    """``m = ∫ a``, ``Ḡ = ∫ a aᵀ`` and ``C = Ḡ - m mᵀ`` of a manifold (uniform measure)."""

    mean: Tensor
    gram: Tensor
    covariance: Tensor
    #: the basis points with ``m_k ≠ 0`` (the only ones coupled to ``W₀``; the ellipse's
    #: constant function alone), as Python ints: a property of the manifold, not of data
    coupled: tuple[int, ...] = ()

    @classmethod
    def of(cls, manifold: Manifold, like: Tensor | None = None) -> LowRankGeometry:
        g = manifold.gram()
        m = g @ manifold.constant()
        c = g - torch.outer(m, m)
        coupled = tuple(int(k) for k in torch.nonzero(m.abs() > 1e-15).flatten())
        if like is not None:
            g, m, c = (t.to(dtype=like.dtype, device=like.device) for t in (g, m, c))
        return cls(m, g, c, coupled)

    def mean_delta(self, u: Tensor, v: Tensor, du: Tensor, dv: Tensor) -> Tensor:
        r""":math:`\sum_k m_k D_k` over the coupled basis points only, ``[g, p, q]``."""
        idx = list(self.coupled)
        mk = self.mean[idx].reshape(-1, 1, 1, 1)
        return ((mk * du[idx]) @ v[idx] + u[idx] @ (mk * dv[idx])).sum(0)


def _deltas(u: Tensor, v: Tensor, du: Tensor, dv: Tensor) -> Tensor:
    """:math:`D_k = \\delta U_k V_k + U_k \\delta V_k`, ``[n, g, p, q]``."""
    return du @ v + u @ dv


def metric_apply(geometry: LowRankGeometry, u: Tensor, v: Tensor, dw0: Tensor | None,
                 du: Tensor, dv: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
    """The exact metric :math:`M = \\int J^T J\\, ds` applied to a change ``(δW₀, δU, δV)``.

    Shapes (blocks of :meth:`LowRankOp.factors`): ``u`` ``[n, g, p, r]``, ``v``
    ``[n, g, r, q]``, ``dw0`` ``[g, p, q]`` (``None``: :math:`W_0` is not a
    parameter, and :math:`\\bar G` acts alone).

    Returns:
        ``(M δ)_{W₀}`` (or ``None``), ``(M δ)_U``, ``(M δ)_V`` in the same shapes.
    """
    d = _deltas(u, v, du, dv)
    f = torch.einsum("kl,lgpq->kgpq", geometry.gram, d)
    out_w0 = None
    if dw0 is not None:
        f = f + geometry.mean.reshape(-1, 1, 1, 1) * dw0
        out_w0 = dw0 + torch.einsum("k,kgpq->gpq", geometry.mean, d)
    return out_w0, f @ v.transpose(-1, -2), u.transpose(-1, -2) @ f


def _kernels(c: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``K_U`` and ``K_V`` per group, ``[g, n r, n r]`` (index order (k, ρ))."""
    n, g, _, r = u.shape
    vv = torch.einsum("kgrq,lgsq->gkrls", v, v)  # V_k V_lᵀ
    uu = torch.einsum("kgpr,lgps->gkrls", u, u)  # U_kᵀ U_l
    cc = c.reshape(1, n, 1, n, 1)
    return (vv * cc).reshape(g, n * r, n * r), (uu * cc).reshape(g, n * r, n * r)


def _damping(ku: Tensor, kv: Tensor, damping: float, nr: int) -> Tensor:
    lam = damping * (ku.diagonal(dim1=-2, dim2=-1).sum(-1)
                     + kv.diagonal(dim1=-2, dim2=-1).sum(-1)) / (2 * nr)
    return torch.where(lam > 0, lam, torch.ones_like(lam))  # both factors zero: any λ


class _BlockSolver:
    """The block (``K_U``, ``K_V``) solve of the damped Schur complement."""

    def __init__(self, c: Tensor, u: Tensor, v: Tensor, damping: float) -> None:
        n, _, _, r = u.shape
        self.n, self.r = n, r
        ku, kv = _kernels(c, u, v)
        self.lam = _damping(ku, kv, damping, n * r)
        eye = torch.eye(n * r, dtype=u.dtype, device=u.device)
        self.lu = torch.linalg.cholesky(ku + self.lam[:, None, None] * eye)
        self.lv = torch.linalg.cholesky(kv + self.lam[:, None, None] * eye)

    def __call__(self, gu: Tensor, gv: Tensor) -> tuple[Tensor, Tensor]:
        n, r = self.n, self.r
        _, g, p, _ = gu.shape
        q = gv.shape[-1]
        # rows of δU: δU_all K_U = g̃U_all  ⇔  K_U δU_allᵀ = g̃U_allᵀ (K_U symmetric)
        gu_all = gu.permute(1, 2, 0, 3).reshape(g, p, n * r)
        du = torch.cholesky_solve(gu_all.transpose(1, 2), self.lu).transpose(1, 2)
        gv_all = gv.permute(1, 0, 2, 3).reshape(g, n * r, q)
        dv = torch.cholesky_solve(gv_all, self.lv)
        return (du.reshape(g, p, n, r).permute(2, 0, 1, 3),
                dv.reshape(g, n, r, q).permute(1, 0, 2, 3))


def steepest_descent(geometry: LowRankGeometry, u: Tensor, v: Tensor, g_w0: Tensor | None,
                     g_u: Tensor, g_v: Tensor, *, damping: float = 1e-2, mode: str = "block",
                     iterations: int = 20, tolerance: float = 1e-6
                     ) -> tuple[Tensor | None, Tensor, Tensor]:
    """The metric's steepest-descent direction for the gradients ``(g_W₀, g_U, g_V)``.

    Args:
        geometry: the manifold's :class:`LowRankGeometry` in the gradients' dtype.
        u, v: the factors as blocks ``[n, g, p, r]``, ``[n, g, r, q]``.
        g_w0: the gradient of ``W₀`` as ``[g, p, q]``, or ``None`` when ``W₀`` is
            not trained.
        g_u, g_v: the gradients of the factors, shaped like ``u`` and ``v``.
        damping: the relative damping of the factor blocks (see the module).
        mode: ``"block"`` or ``"joint"``.
        iterations, tolerance: of the conjugate gradients of ``"joint"`` (relative
            residual).

    Returns:
        ``(δW₀, δU, δV)``: a step ``-η δ`` is the steepest descent.

    Raises:
        ValueError: for an unknown ``mode`` or a damping that is not positive.
    """
    if mode not in ("block", "joint"):
        raise ValueError(f"low-rank preconditioning mode must be 'block' or 'joint', "
                         f"got {mode!r}")
    if not damping > 0:
        raise ValueError(f"damping must be > 0, got {damping!r}")
    m = geometry.mean
    c = geometry.covariance if g_w0 is not None else geometry.gram
    if g_w0 is not None and geometry.coupled:
        idx = list(geometry.coupled)
        mk = m[idx].reshape(-1, 1, 1, 1)
        g_u, g_v = g_u.clone(), g_v.clone()
        g_u[idx] -= mk * (g_w0 @ v[idx].transpose(-1, -2))
        g_v[idx] -= mk * (u[idx].transpose(-1, -2) @ g_w0)
    solve = _BlockSolver(c, u, v, damping)
    du, dv = solve(g_u, g_v)
    if mode == "joint":
        du, dv = _conjugate_gradients(c, u, v, g_u, g_v, du, dv, solve, iterations, tolerance)
    if g_w0 is None:
        return None, du, dv
    if not geometry.coupled:
        return g_w0, du, dv
    return g_w0 - geometry.mean_delta(u, v, du, dv), du, dv


def _conjugate_gradients(c: Tensor, u: Tensor, v: Tensor, bu: Tensor, bv: Tensor,
                         xu: Tensor, xv: Tensor, precondition: _BlockSolver, iterations: int,
                         tolerance: float) -> tuple[Tensor, Tensor]:
    """Preconditioned CG on ``(S + λ) x = b``, ``S`` the covariance part of the metric."""
    lam = precondition.lam.reshape(1, -1, 1, 1)

    def apply(xu: Tensor, xv: Tensor) -> tuple[Tensor, Tensor]:
        f = torch.einsum("kl,lgpq->kgpq", c, _deltas(u, v, xu, xv))
        return f @ v.transpose(-1, -2) + lam * xu, u.transpose(-1, -2) @ f + lam * xv

    def dot(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> Tensor:
        return (a[0] * b[0]).sum() + (a[1] * b[1]).sum()

    au, av = apply(xu, xv)
    r = (bu - au, bv - av)
    norm_b = dot((bu, bv), (bu, bv)).sqrt()
    z = precondition(*r)
    p = z
    rz = dot(r, z)
    for _ in range(iterations):
        if not bool(dot(r, r).sqrt() > tolerance * norm_b):
            break
        ap = apply(*p)
        alpha = rz / dot(p, ap)
        xu, xv = xu + alpha * p[0], xv + alpha * p[1]
        r = (r[0] - alpha * ap[0], r[1] - alpha * ap[1])
        z = precondition(*r)
        rz_new = dot(r, z)
        p = (z[0] + (rz_new / rz) * p[0], z[1] + (rz_new / rz) * p[1])
        rz = rz_new
    return xu, xv
