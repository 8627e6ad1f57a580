"""Tests of metric-preconditioned optimisation (``weightmanifold.preconditioning``).

Everything is checked against references computed here, independently of the
library's metric code: Gram matrices by a fine composite Gauss–Legendre rule of
our own (knot-aligned, so exact for the spline products), closed-form inverses
copied from ``shared/reference/metric.md``, explicit ``kron`` products and
least-squares minimisers.

(a) the preconditioned step is the steepest descent at fixed manifold movement;
(b) it is invariant to the choice of basis for the same manifold (plain SGD is not);
(c) mechanics of the :class:`~weightmanifold.Preconditioned` wrapper;
(d) training measures: :math:`G_\\rho^{-1}` and the one-step minimum of a quadratic loss.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import weightmanifold as wm
from weightmanifold import (
    BSpline,
    Ellipse,
    Fourier,
    Line,
    Manifold,
    ManifoldParameter,
    Point,
    Polynomial,
    Preconditioned,
    Sheet,
    Torus,
    precondition_gradients,
)

DT = torch.float64
D = 5  # dimension of the per-point tensor in the steepest-descent tests


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These tests run thousands of tiny ops: intra-op threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# independent references
# ---------------------------------------------------------------------------------------------
def composite_gauss_legendre(panels: int, m: int = 8) -> tuple[Tensor, Tensor]:
    """``m``-point Gauss–Legendre on each of ``panels`` equal panels of [0, 1] (numpy, ours)."""
    x, w = np.polynomial.legendre.leggauss(m)
    edges = np.linspace(0.0, 1.0, panels + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    nodes = (0.5 * (lo + hi) + 0.5 * (hi - lo) * x).ravel()
    weights = (0.5 * (hi - lo) * w).ravel()
    return torch.as_tensor(nodes, dtype=DT), torch.as_tensor(weights, dtype=DT)


def fine_rule(manifold: Manifold) -> tuple[Tensor, Tensor]:
    """An independent quadrature rule for ∫ f(s) ds over the manifold's domain.

    1-D: 8 nodes on each of 84 equal panels. 84 is a multiple of every knot-span
    count used here (1, 3, 4, 7), so spline products (degree 6 per span) are
    integrated exactly, and trigonometric products to machine precision.
    2-D: the product of two 12-panel rules.
    """
    if manifold.dim == 1:
        x, w = composite_gauss_legendre(84)
        return x[:, None], w
    assert manifold.dim == 2
    x, w = composite_gauss_legendre(12)
    q = len(x)
    nodes = torch.stack([x.repeat_interleave(q), x.repeat(q)], dim=1)
    return nodes, (w[:, None] * w[None, :]).reshape(-1)


class Movement:
    """∫ |ΔM(s)|² ds measured by :func:`fine_rule`, and the Gram matrix by the same rule."""

    def __init__(self, manifold: Manifold) -> None:
        nodes, self.weights = fine_rule(manifold)
        self.a = manifold.coefficients(nodes)  # [F, n]
        self.gram = (self.a * self.weights[:, None]).T @ self.a

    def by_quadrature(self, dP: Tensor) -> Tensor:
        """Movement of an ``[n, d]`` step: Σ_f w_f |a(s_f)ᵀ ΔP|²."""
        return (self.weights * (self.a @ dP).pow(2).sum(-1)).sum()

    def __call__(self, dP: Tensor) -> Tensor:
        """Movement of every ``[..., n, d]`` step, as tr(ΔPᵀ G ΔP) with G from the same rule.

        Equal to :meth:`by_quadrature` for a linear basis (checked in the tests), and
        cheap for thousands of steps at once.
        """
        return (dP * (self.gram @ dP)).sum((-2, -1))


def features(s: Tensor) -> Tensor:
    """A smooth, s-dependent feature vector u(s) ∈ R^5 that defines the labels / targets."""
    s = s.reshape(len(s), -1)
    if s.shape[1] == 1:
        t = s[:, 0]
        cols = [torch.cos(2 * math.pi * t), torch.sin(2 * math.pi * t),
                torch.cos(4 * math.pi * t), torch.sin(4 * math.pi * t) - 0.3, 0.5 + 0 * t]
    else:
        t, u = s[:, 0], s[:, 1]
        cols = [torch.cos(2 * math.pi * t), torch.sin(2 * math.pi * u),
                torch.cos(2 * math.pi * (t + u)), torch.sin(2 * math.pi * (t - u)), 0.5 + 0 * t]
    return torch.stack(cols, dim=1)


_GEN = torch.Generator().manual_seed(1234)
Z_DATA = torch.randn(16, D, generator=_GEN, dtype=DT)  # logistic data points
_B = torch.randn(D, D, generator=_GEN, dtype=DT)
A_QUAD = _B @ _B.T / D + 0.2 * torch.eye(D, dtype=DT)  # SPD matrix of the quadratic loss


def logistic_loss(M: Tensor, s: Tensor, mu: float = 0.01) -> Tensor:
    """Per-example logistic loss of the classifier M(s) ∈ R^5, labels depending on s: [B]."""
    y = torch.sign(features(s) @ Z_DATA.T)
    return F.softplus(-y * (M @ Z_DATA.T)).mean(-1) + 0.5 * mu * M.pow(2).sum(-1)


def quadratic_loss(M: Tensor, s: Tensor) -> Tensor:
    """½ (M − x*(s))ᵀ A (M − x*(s)) with a nonlinear target x*(s): [B]."""
    r = M - features(s)
    return 0.5 * ((r @ A_QUAD) * r).sum(-1)


LOSSES = {"logistic": logistic_loss, "quadratic": quadratic_loss}


def make_model(manifold: Manifold, P: Tensor) -> ManifoldParameter:
    model = ManifoldParameter(manifold, tuple(P.shape[1:]), dtype=P.dtype)
    with torch.no_grad():
        model.basis.copy_(P)
    return model


def quadrature_loss(model: ManifoldParameter, ell: Callable, rule=None) -> Tensor:
    """L = Σ_q w_q ℓ(M(s_q)), by default with the manifold's own exact quadrature."""
    nodes, weights = model.manifold.quadrature() if rule is None else rule
    return (weights * ell(model(nodes), nodes)).sum()


class Mixed(Manifold):
    """The same manifold in another basis: a(s) = R b(s) for an invertible ``R``.

    A legitimate user-defined :class:`Manifold` (no closed-form Gram: the library
    integrates it with the base manifold's quadrature, exact for products of the
    base functions and so for the mixed ones).
    """

    def __init__(self, base: Manifold, R: Tensor) -> None:
        self.base, self.R = base, R.to(DT)
        self.n, self.dim, self.periodic, self.clamp = base.n, base.dim, base.periodic, base.clamp

    def check(self, s):  # type: ignore[override]
        return self.base.check(s)

    def _basis(self, s: Tensor) -> Tensor:
        return self.base._basis(s) @ self.R.to(s.dtype).T

    def quadrature(self) -> tuple[Tensor, Tensor]:
        return self.base.quadrature()

    def _config(self) -> tuple:
        return ("Mixed", self.base._config(), tuple(self.R.flatten().tolist()))

    def __repr__(self) -> str:
        return f"Mixed({self.base!r})"


def mixing(n: int, seed: int) -> Tensor:
    """A generic, well-conditioned, far-from-orthogonal n × n matrix."""
    g = torch.Generator().manual_seed(seed)
    R = torch.eye(n, dtype=DT) + 0.6 * torch.randn(n, n, generator=g, dtype=DT) / math.sqrt(n)
    R = R @ torch.diag(torch.linspace(0.6, 1.8, n, dtype=DT))
    assert torch.linalg.cond(R) < 50
    return R


# ---------------------------------------------------------------------------------------------
# (a) steepest descent
# ---------------------------------------------------------------------------------------------
STEEPEST = {
    "line": Line(),
    "ellipse": Ellipse(),
    "fourier2": Fourier(2),
    "clamped-cubic-6": BSpline(6),
    "periodic-cubic-7": BSpline(7, periodic=True),
    "bernstein3": Polynomial(3),
    "monomial3": Polynomial(3, "monomial"),
    "torus": Torus(),
}


def random_basis(manifold: Manifold, seed: int, *shape: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.5 * torch.randn(manifold.n, *(shape or (D,)), generator=g, dtype=DT)


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("name", list(STEEPEST))
def test_preconditioned_step_is_steepest_descent(name: str, loss: str) -> None:
    manifold = STEEPEST[name]
    ell = LOSSES[loss]
    model = make_model(manifold, random_basis(manifold, 7))
    P0 = model.basis.detach().clone()
    L0 = quadrature_loss(model, ell)
    L0.backward()
    g = model.basis.grad.detach().clone()  # ḡ = ∂L/∂P, [n, d]

    # independent cross-check of the gradient: ḡ = Σ_q w_q a(s_q) ∇ℓ(M(s_q))ᵀ
    nodes, weights = manifold.quadrature()
    M = (manifold.coefficients(nodes) @ P0).requires_grad_(True)
    (grad_ell,) = torch.autograd.grad(ell(M, nodes).sum(), M)
    torch.testing.assert_close(g, manifold.coefficients(nodes).T @ (weights[:, None] * grad_ell),
                               rtol=1e-12, atol=1e-14)

    # one Preconditioned SGD step with lr = 1 is ΔP = −G⁻¹ ḡ (G by our own quadrature)
    opt = Preconditioned(torch.optim.SGD(model.parameters(), lr=1.0), model)
    opt.step()
    dP = model.basis.detach() - P0
    move = Movement(manifold)
    G = move.gram
    torch.testing.assert_close(dP, -torch.linalg.solve(G, g), rtol=1e-10, atol=1e-12)

    C0 = 1e-2

    def decrease(steps: Tensor) -> Tensor:
        """−⟨ḡ, ΔP⟩ after rescaling every step to movement C0 (measured independently)."""
        scale = torch.sqrt(C0 / move(steps))
        return -(g * steps).sum((-2, -1)) * scale

    best = math.sqrt(C0 * float((g * torch.linalg.solve(G, g)).sum()))
    pre = float(decrease(dP))
    assert pre == pytest.approx(best, rel=1e-10)

    # the rescaled step really moves the manifold by C0, measured pointwise by quadrature
    for direction in (dP, -g):
        step = direction * math.sqrt(C0 / float(move(direction)))
        assert float(move.by_quadrature(step)) == pytest.approx(C0, rel=1e-12)

    # the plain gradient is strictly worse
    plain = float(decrease(-g))
    assert plain < best * (1 - 1e-3)

    # no random perturbation at the same movement beats it ...
    gen = torch.Generator().manual_seed(11)
    rand = torch.randn(4000, *g.shape, generator=gen, dtype=DT)
    rand_dec = decrease(rand)
    assert float(rand_dec.max()) <= best * (1 + 1e-12)
    # ... and every small perturbation of the optimum is strictly worse (local optimality)
    unit = dP / dP.norm()
    local = decrease(unit + 1e-2 * rand[:500] / rand[:500].norm(dim=(-2, -1), keepdim=True))
    assert float(local.max()) < best * (1 - 1e-7)

    # the actual loss change at small movement follows the same ordering
    c_small = 1e-6

    def actual(direction: Tensor) -> float:
        s = direction * math.sqrt(c_small / float(move(direction)))
        with torch.no_grad():
            return float(quadrature_loss(make_model(manifold, P0 + s), ell) - L0)

    assert actual(dP) < actual(-g)
    assert actual(dP) == pytest.approx(-math.sqrt(c_small / C0) * best, rel=1e-2)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_tethered_bernstein_uses_the_learned_block_not_a_block_of_the_inverse(loss: str) -> None:
    manifold = Polynomial(3)  # cubic Bernstein, basis point 0 frozen (tethered)
    ell = LOSSES[loss]
    model = make_model(manifold, random_basis(manifold, 3))
    P0 = model.basis.detach().clone()
    quadrature_loss(model, ell).backward()
    g = model.basis.grad.detach().clone()

    opt = Preconditioned(torch.optim.SGD(model.parameters(), lr=1.0), model, frozen=[0])
    opt.step()
    dP = model.basis.detach() - P0
    assert torch.equal(dP[0], torch.zeros(D, dtype=DT))  # exactly still

    move = Movement(manifold)
    G = move.gram
    G_LL = G[1:, 1:]
    g_L = g[1:]
    torch.testing.assert_close(dP[1:], -torch.linalg.solve(G_LL, g_L), rtol=1e-10, atol=1e-12)
    # G_LL⁻¹ is not the (L, L) block of G⁻¹
    block = torch.linalg.inv(G)[1:, 1:]
    assert (torch.linalg.inv(G_LL) - block).abs().max() > 1.0

    C0 = 1e-2

    def decrease(steps_L: Tensor) -> Tensor:
        full = torch.cat([torch.zeros(*steps_L.shape[:-2], 1, D, dtype=DT), steps_L], dim=-2)
        return -(g_L * steps_L).sum((-2, -1)) * torch.sqrt(C0 / move(full))

    best = math.sqrt(C0 * float((g_L * torch.linalg.solve(G_LL, g_L)).sum()))
    assert float(decrease(dP[1:])) == pytest.approx(best, rel=1e-10)
    assert float(decrease(-block @ g_L)) < best * (1 - 1e-3)  # the wrong inverse
    assert float(decrease(-g_L)) < best * (1 - 1e-3)  # plain gradient
    rand = torch.randn(4000, 3, D, generator=torch.Generator().manual_seed(5), dtype=DT)
    assert float(decrease(rand).max()) <= best * (1 + 1e-12)


def test_tethered_rod_line() -> None:
    """Line with point 0 frozen: G_22⁻¹ = 3 (zeroing the row/column of G⁻¹ would give 4).

    With one learned point both choices give the same direction, so the same
    decrease at equal movement: only the scale differs.
    """
    manifold = Line()
    model = make_model(manifold, random_basis(manifold, 2))
    P0 = model.basis.detach().clone()
    quadrature_loss(model, logistic_loss).backward()
    g = model.basis.grad.detach().clone()
    Preconditioned(torch.optim.SGD(model.parameters(), lr=1.0), model, frozen=[0]).step()
    dP = model.basis.detach() - P0
    assert torch.equal(dP[0], torch.zeros(D, dtype=DT))
    torch.testing.assert_close(dP[1], -3.0 * g[1], rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------------------
# (b) parameterisation invariance
# ---------------------------------------------------------------------------------------------
def change_of_basis(mA: Manifold, mB: Manifold) -> Tensor:
    """``T`` with a_A(s)ᵀ = a_B(s)ᵀ T for all s, so that P_B = T P_A gives M_B ≡ M_A.

    Solved by least squares at generic points, then verified at other points.
    """
    g = torch.Generator().manual_seed(99)
    s = torch.rand(64, mA.dim, generator=g, dtype=DT)
    T = torch.linalg.lstsq(mB.coefficients(s), mA.coefficients(s), driver="gelsd").solution
    s2 = torch.rand(200, mA.dim, generator=g, dtype=DT)
    assert (mA.coefficients(s2) - mB.coefficients(s2) @ T).abs().max() < 1e-10, "not the same span"
    return T


def train_rule(dim: int) -> tuple[Tensor, Tensor]:
    """A fixed batch of conditions (midpoint rule) shared by both parameterisations."""
    x = (torch.arange(16, dtype=DT) + 0.5) / 16
    if dim == 1:
        return x[:, None], torch.full((16,), 1 / 16, dtype=DT)
    x = x[::2]
    nodes = torch.stack([x.repeat_interleave(8), x.repeat(8)], dim=1)
    return nodes, torch.full((64,), 1 / 64, dtype=DT)


def eval_points(dim: int) -> Tensor:
    return torch.rand(101, dim, generator=torch.Generator().manual_seed(3), dtype=DT)


def trajectory(manifold: Manifold, P: Tensor, make_opt: Callable, precondition: bool,
               steps: int = 50) -> Tensor:
    """M(s) at fixed evaluation points after every one of ``steps`` steps: [steps + 1, S, d]."""
    model = make_model(manifold, P)
    opt = make_opt(model.parameters())
    if precondition:
        opt = Preconditioned(opt, model)
    nodes, weights = train_rule(manifold.dim)
    cond = wm.Conditioning.from_s(manifold, nodes)  # basis evaluated once, reused every step
    a_eval = manifold.coefficients(eval_points(manifold.dim))
    out = [a_eval @ model.basis.detach()]
    for _ in range(steps):
        opt.zero_grad()
        (weights * logistic_loss(model(cond), nodes)).sum().backward()
        opt.step()
        out.append(a_eval @ model.basis.detach())
    return torch.stack(out)


PAIRS = {
    "line/legendre1": (Line(), Polynomial(1, "legendre")),
    "bernstein3/monomial3": (Polynomial(3), Polynomial(3, "monomial")),
    "clamped-cubic-4/monomial3": (BSpline(4), Polynomial(3, "monomial")),
    "legendre3/bernstein3": (Polynomial(3, "legendre"), Polynomial(3)),
    "ellipse/mixed": (Ellipse(), Mixed(Ellipse(), mixing(3, 1))),
    "fourier2/mixed": (Fourier(2), Mixed(Fourier(2), mixing(5, 2))),
    "clamped-cubic-6/mixed": (BSpline(6), Mixed(BSpline(6), mixing(6, 3))),
    "periodic-cubic-7/mixed": (BSpline(7, periodic=True),
                               Mixed(BSpline(7, periodic=True), mixing(7, 4))),
    "torus/mixed": (Torus(), Mixed(Torus(), mixing(9, 5))),
}

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.5),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    # weight decay is added to the *preconditioned* gradient, a linear map of P: still invariant
    "nesterov+wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True,
                                             weight_decay=0.05),
}


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("pair", list(PAIRS))
def test_preconditioned_trajectory_does_not_depend_on_the_basis(pair: str, opt_name: str) -> None:
    mA, mB = PAIRS[pair]
    make_opt = OPTIMIZERS[opt_name]
    T = change_of_basis(mA, mB)
    P_A = random_basis(mA, 21)
    P_B = T @ P_A
    pre_A = trajectory(mA, P_A, make_opt, precondition=True)
    pre_B = trajectory(mB, P_B, make_opt, precondition=True)
    assert (pre_A[0] - pre_B[0]).abs().max() < 1e-12  # same starting manifold
    assert (pre_A[-1] - pre_A[0]).abs().max() > 0.1  # it did train
    assert (pre_A - pre_B).abs().max() < 1e-10
    plain_A = trajectory(mA, P_A, make_opt, precondition=False)
    plain_B = trajectory(mB, P_B, make_opt, precondition=False)
    assert (plain_A - plain_B).abs().max() > 1e-3


@pytest.mark.parametrize("opt_name", ["adam", "adamw"])
@pytest.mark.parametrize("pair", ["line/legendre1", "bernstein3/monomial3", "ellipse/mixed"])
def test_adam_is_not_basis_invariant_even_preconditioned(pair: str, opt_name: str) -> None:
    """Documented limitation: Adam's per-element scaling does not commute with a change of basis."""
    mA, mB = PAIRS[pair]
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[opt_name]
    T = change_of_basis(mA, mB)
    P_A = random_basis(mA, 21)
    pre_A = trajectory(mA, P_A, lambda p: cls(p, lr=0.02), precondition=True)
    pre_B = trajectory(mB, T @ P_A, lambda p: cls(p, lr=0.02), precondition=True)
    assert (pre_A[0] - pre_B[0]).abs().max() < 1e-12
    assert (pre_A - pre_B).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("mA", "mB"),
    [(BSpline(4), Polynomial(3)), (Ellipse(), Fourier(1)), (Line(), Polynomial(1))],
    ids=["clamped-cubic-4=bernstein3", "ellipse=fourier1", "line=bernstein1"],
)
def test_identical_bases_are_identical(mA: Manifold, mB: Manifold) -> None:
    s = torch.rand(50, generator=torch.Generator().manual_seed(0), dtype=DT)
    torch.testing.assert_close(mA.coefficients(s), mB.coefficients(s), rtol=0, atol=1e-14)
    torch.testing.assert_close(mA.preconditioner(), mB.preconditioner(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# (c) mechanics of the wrapper
# ---------------------------------------------------------------------------------------------
def circulant_inverse_periodic_cubic(n: int) -> Tensor:
    """G⁻¹ of the periodic cubic B-spline from metric.md's circulant formula (exact fractions)."""
    beta = [Fraction(151, 315), Fraction(397, 1680), Fraction(1, 42), Fraction(1, 5040)]
    G = [[Fraction(0)] * n for _ in range(n)]
    for i in range(n):
        for m in range(-3, 4):
            G[i][(i + m) % n] += beta[abs(m)] / n
    return torch.linalg.inv(torch.tensor([[float(v) for v in row] for row in G], dtype=DT))


_T = 1 / 3
METRIC_MD_INVERSES = {  # G⁻¹ copied from shared/reference/metric.md §2
    "line": (Line(), [[4, -2], [-2, 4]]),
    "ellipse": (Ellipse(), np.diag([1, 2, 2])),
    "fourier3": (Fourier(3), np.diag([1, 2, 2, 2, 2, 2, 2])),
    "bernstein2": (Polynomial(2), [[9, -9, 3], [-9, 21, -9], [3, -9, 9]]),
    "bernstein3": (Polynomial(3), [[16, -24, 16, -4], [-24, 208 * _T, -172 * _T, 16],
                                   [16, -172 * _T, 208 * _T, -24], [-4, 16, -24, 16]]),
    "clamped-cubic-4": (BSpline(4), [[16, -24, 16, -4], [-24, 208 * _T, -172 * _T, 16],
                                     [16, -172 * _T, 208 * _T, -24], [-4, 16, -24, 16]]),
    "monomial3": (Polynomial(3, "monomial"),
                  [[16, -120, 240, -140], [-120, 1200, -2700, 1680],
                   [240, -2700, 6480, -4200], [-140, 1680, -4200, 2800]]),
    "legendre4": (Polynomial(4, "legendre"), np.diag([1, 3, 5, 7, 9])),
    "torus": (Torus(), np.diag([1, 2, 2, 2, 4, 4, 2, 4, 4])),
    "sheet": (Sheet(), [[16, -8, -8, 4], [-8, 16, 4, -8], [-8, 4, 16, -8], [4, -8, -8, 16]]),
    "periodic-cubic-8": (BSpline(8, periodic=True), circulant_inverse_periodic_cubic(8)),
}


@pytest.mark.parametrize("name", list(METRIC_MD_INVERSES))
def test_precondition_gradients_equals_explicit_kron(name: str) -> None:
    manifold, ginv = METRIC_MD_INVERSES[name]
    ginv = torch.as_tensor(np.asarray(ginv, dtype=np.float64)).contiguous()
    model = ManifoldParameter(manifold, (3, 2), dtype=DT)
    g = torch.randn(manifold.n, 3, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    model.basis.grad = g.clone()
    precondition_gradients(model)
    expected = (torch.kron(ginv, torch.eye(6, dtype=DT)) @ g.reshape(-1)).reshape(g.shape)
    torch.testing.assert_close(model.basis.grad, expected, rtol=1e-11, atol=1e-11)


def test_never_forms_the_nd_by_nd_matrix() -> None:
    """n·d = 7·10⁶: the explicit (n·d)² matrix would need ~196 TB; the wrapper needs n × n."""
    manifold = BSpline(7, periodic=True)
    model = ManifoldParameter(manifold, (1000, 1000), dtype=torch.float32)
    g = torch.randn(7, 1000, 1000, generator=torch.Generator().manual_seed(0))
    model.basis.grad = g.clone()
    opt = Preconditioned(torch.optim.SGD(model.parameters(), lr=1.0), model)
    opt.precondition()
    ginv = circulant_inverse_periodic_cubic(7)
    expected = torch.einsum("ij,jkl->ikl", ginv, g.double())
    torch.testing.assert_close(model.basis.grad.double(), expected, rtol=1e-4, atol=1e-4)


class TwoPart(nn.Module):
    """Two manifold parameters next to an ordinary ``nn.Linear`` (no basis axis)."""

    def __init__(self, manifold: Manifold | None = None, seed: int = 0,
                 dtype: torch.dtype = DT) -> None:
        super().__init__()
        manifold = BSpline(6) if manifold is None else manifold
        g = torch.Generator().manual_seed(seed)
        self.bias = ManifoldParameter(manifold, (4,), dtype=dtype)
        self.gain = ManifoldParameter(manifold, (4,), dtype=dtype)
        self.lin = nn.Linear(3, 4).to(dtype)
        with torch.no_grad():
            self.bias.basis.copy_(torch.randn(manifold.n, 4, generator=g, dtype=dtype))
            self.gain.basis.copy_(1 + 0.3 * torch.randn(manifold.n, 4, generator=g, dtype=dtype))
            self.lin.weight.copy_(torch.randn(4, 3, generator=g, dtype=dtype))
            self.lin.bias.copy_(torch.randn(4, generator=g, dtype=dtype))

    def loss(self, separable: bool = False) -> Tensor:
        m = self.bias.manifold
        s = torch.rand(8, m.dim, generator=torch.Generator().manual_seed(1), dtype=DT)
        x = torch.linspace(-1, 1, 24, dtype=self.lin.weight.dtype).reshape(8, 3)
        b = self.bias(s.to(self.lin.weight.dtype))
        k = self.gain(s.to(self.lin.weight.dtype))
        if separable:
            return (b - 1).pow(2).sum() + (k * b.detach()).pow(2).sum() + self.lin(x).tanh().sum()
        return (k * self.lin(x) + b).tanh().pow(2).sum() + 0.1 * b.pow(4).sum()


OPT_FACTORIES = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05),
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "sgd-nesterov-wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                                 weight_decay=0.01),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adam-amsgrad-wd": lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True, weight_decay=0.01),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5),
}


@pytest.mark.parametrize("opt_name", list(OPT_FACTORIES))
def test_wrapper_equals_manual_preconditioning_then_bare_step(opt_name: str) -> None:
    make = OPT_FACTORIES[opt_name]
    a, b = TwoPart(), TwoPart()
    opt_a = Preconditioned(make(a.parameters()), a)
    opt_b = make(b.parameters())
    for _ in range(6):
        opt_a.zero_grad()
        a.loss().backward()
        opt_a.step()
        opt_b.zero_grad()
        b.loss().backward()
        precondition_gradients(b)
        opt_b.step()
        for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(pa, pb), name
    # and it is not the bare optimiser
    c = TwoPart()
    opt_c = make(c.parameters())
    for _ in range(6):
        opt_c.zero_grad()
        c.loss().backward()
        opt_c.step()
    assert not torch.equal(c.bias.basis, a.bias.basis)


@pytest.mark.parametrize("opt_name", ["sgd-nesterov-wd", "adam", "adamw"])
def test_parameters_without_basis_axis_pass_through_bitwise(opt_name: str) -> None:
    make = OPT_FACTORIES[opt_name]
    a, b = TwoPart(), TwoPart()
    opt_a = Preconditioned(make(a.parameters()), a)
    opt_b = make(b.parameters())
    for _ in range(5):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            model.loss(separable=True).backward()
            opt.step()
    assert torch.equal(a.lin.weight, b.lin.weight)
    assert torch.equal(a.lin.bias, b.lin.bias)
    assert not torch.equal(a.bias.basis, b.bias.basis)


def _run(model: TwoPart, opt: torch.optim.Optimizer, steps: int) -> list[Tensor]:
    out = []
    for _ in range(steps):
        opt.zero_grad()
        model.loss().backward()
        opt.step()
        out.extend(p.detach().clone() for p in model.parameters())
    return out


def test_state_dict_round_trip_continues_identically() -> None:
    def build(seed: int) -> tuple[TwoPart, Preconditioned]:
        model = TwoPart(Polynomial(3), seed=seed)
        base = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
        return model, Preconditioned(base, model, frozen=[0])

    model_a, opt_a = build(0)
    _run(model_a, opt_a, 3)
    buf = io.BytesIO()
    torch.save({"model": model_a.state_dict(), "opt": opt_a.state_dict()}, buf)
    sig = opt_a.state_dict()["weightmanifold"]
    assert sig["frozen"] == [0]
    assert sig["manifolds"] == ["Polynomial(degree=3, basis='bernstein')"]
    continued = _run(model_a, opt_a, 4)

    model_b, opt_b = build(1)  # different initial values: loading must overwrite them
    buf.seek(0)
    saved = torch.load(buf)
    model_b.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["opt"])
    resumed = _run(model_b, opt_b, 4)
    assert all(torch.equal(x, y) for x, y in zip(continued, resumed))


def test_load_state_dict_of_the_bare_optimizer_is_accepted() -> None:
    model = TwoPart()
    bare = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _run(model, bare, 2)
    opt = Preconditioned(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model)
    opt.load_state_dict(bare.state_dict())
    buf = bare.state[model.bias.basis]["momentum_buffer"]
    assert torch.equal(opt.state[model.bias.basis]["momentum_buffer"], buf)


def test_load_state_dict_with_other_frozen_set_raises() -> None:
    model = TwoPart(Polynomial(3))
    opt = Preconditioned(torch.optim.Adam(model.parameters()), model, frozen=[0])
    _run(model, opt, 1)
    sd = opt.state_dict()
    other = Preconditioned(torch.optim.Adam(model.parameters()), model, frozen=[0, 3])
    with pytest.raises(ValueError, match=r"\[0\].*\[0, 3\]"):
        other.load_state_dict(sd)


def test_load_state_dict_for_another_manifold_raises() -> None:
    model_a = TwoPart(Line())
    opt_a = Preconditioned(torch.optim.SGD(model_a.parameters(), lr=0.1, momentum=0.9), model_a)
    _run(model_a, opt_a, 1)
    model_b = TwoPart(Polynomial(1, "legendre"))  # same shapes, other manifold
    opt_b = Preconditioned(torch.optim.SGD(model_b.parameters(), lr=0.1, momentum=0.9), model_b)
    with pytest.raises(ValueError, match=r"Line\(\).*legendre") as err:
        opt_b.load_state_dict(opt_a.state_dict())
    assert "Line()" in str(err.value) and "basis='legendre'" in str(err.value)


def test_works_with_step_lr_scheduler() -> None:
    import warnings

    a, b = TwoPart(), TwoPart()
    opt_a = Preconditioned(torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9), a)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    sched_a = torch.optim.lr_scheduler.StepLR(opt_a, step_size=2, gamma=0.5)
    sched_b = torch.optim.lr_scheduler.StepLR(opt_b, step_size=2, gamma=0.5)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        for _ in range(5):
            opt_a.zero_grad()
            a.loss().backward()
            opt_a.step()
            sched_a.step()
            opt_b.zero_grad()
            b.loss().backward()
            precondition_gradients(b)
            opt_b.step()
            sched_b.step()
            lrs.append(opt_a.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.05, 0.05, 0.025, 0.025])
    assert opt_a.optimizer.param_groups[0]["lr"] == lrs[-1]
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_optimizer_hooks_can_be_registered() -> None:
    """The inherited hook API works; step hooks run inside the step, on preconditioned grads."""
    model = TwoPart()
    opt = Preconditioned(torch.optim.SGD(model.parameters(), lr=0.1), model)
    calls: list[str] = []
    seen: list[Tensor] = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append(model.bias.basis.grad.clone()))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    opt.register_state_dict_pre_hook(lambda o: calls.append("sd-pre"))
    opt.register_state_dict_post_hook(lambda o, sd: calls.append("sd-post"))
    opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("load-pre"))
    handle = opt.register_load_state_dict_post_hook(lambda o: calls.append("load-post"))
    model.loss().backward()
    raw = model.bias.basis.grad.clone()
    opt.step()
    torch.testing.assert_close(seen[0], torch.linalg.solve(Movement(BSpline(6)).gram, raw),
                               rtol=1e-10, atol=1e-10)
    opt.load_state_dict(opt.state_dict())
    assert calls == ["post", "sd-pre", "sd-post", "load-pre", "load-post"]
    handle.remove()
    opt.load_state_dict(opt.state_dict())
    assert calls[-1] == "load-pre"


def test_closure_step_preconditions_the_closures_gradients() -> None:
    a, b = TwoPart(), TwoPart()
    opt_a = Preconditioned(torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.9), a)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9)

    def closure() -> Tensor:
        opt_a.zero_grad()
        loss = a.loss()
        loss.backward()
        return loss

    for _ in range(4):
        expected = a.loss().detach()
        got = opt_a.step(closure)
        assert torch.equal(got.detach(), expected)
        opt_b.zero_grad()
        b.loss().backward()
        precondition_gradients(b)
        opt_b.step()
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)


@pytest.mark.parametrize(
    ("manifold", "frozen"),
    [(Polynomial(3), [0]), (BSpline(6), [0, 5]), (Ellipse(), [0])],
    ids=["bernstein3-[0]", "clamped-cubic-6-[0,5]", "ellipse-[0]"],
)
@pytest.mark.parametrize("opt_name", ["sgd-nesterov-wd", "adam-amsgrad-wd", "adamw"])
def test_frozen_points_stay_put_even_with_weight_decay(manifold: Manifold, frozen: list[int],
                                                       opt_name: str) -> None:
    model = TwoPart(manifold)
    params = [model.bias.basis, model.gain.basis]
    start = [p.detach().clone() for p in params]
    opt = Preconditioned(OPT_FACTORIES[opt_name](model.parameters()), model, frozen=frozen)
    _run(model, opt, 5)
    learned = [i for i in range(manifold.n) if i not in frozen]
    for p, p0 in zip(params, start):
        assert torch.equal(p[frozen], p0[frozen])
        assert (p[learned] - p0[learned]).abs().min() > 0


def test_frozen_sgd_weight_decay_step_matches_formula() -> None:
    """ΔP_L = −η (G_LL⁻¹ ḡ_L + λ P_L), ΔP_F = 0: decay acts on the preconditioned gradient."""
    manifold, frozen, lr, wd = BSpline(6), [0, 5], 0.1, 0.3
    model = TwoPart(manifold)
    P0 = model.bias.basis.detach().clone()
    opt = Preconditioned(torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd), model,
                         frozen=frozen)
    model.loss().backward()
    g = model.bias.basis.grad.detach().clone()
    opt.step()
    G = Movement(manifold).gram
    L = [1, 2, 3, 4]
    expected = P0.clone()
    expected[L] = P0[L] - lr * (torch.linalg.solve(G[L][:, L], g[L]) + wd * P0[L])
    torch.testing.assert_close(model.bias.basis.detach(), expected, rtol=1e-12, atol=1e-12)


def test_precondition_gradients_with_frozen() -> None:
    manifold = BSpline(6)
    model = ManifoldParameter(manifold, (3,), dtype=DT)
    g = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    model.basis.grad = g.clone()
    precondition_gradients(model, frozen=[0, 5])
    out = model.basis.grad
    assert torch.equal(out[[0, 5]], torch.zeros(2, 3, dtype=DT))
    G = Movement(manifold).gram
    torch.testing.assert_close(out[1:5], torch.linalg.solve(G[1:5, 1:5], g[1:5]),
                               rtol=1e-11, atol=1e-12)


def test_wrapping_a_non_optimizer_raises_type_error() -> None:
    model = TwoPart()
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        Preconditioned(list(model.parameters()), model)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Preconditioned(model, model)  # type: ignore[arg-type]
    inner = Preconditioned(torch.optim.SGD(model.parameters(), lr=0.1), model)
    with pytest.raises(TypeError, match="already"):
        Preconditioned(inner, model)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        wm.manifold_parameters(torch.optim.SGD(model.parameters(), lr=0.1))  # type: ignore[arg-type]


def test_optimizer_over_part_of_the_model_preconditions_that_part() -> None:
    model = TwoPart()
    opt = Preconditioned(torch.optim.SGD(model.bias.parameters(), lr=0.1), model)
    rest = Preconditioned(torch.optim.SGD([*model.gain.parameters(), *model.lin.parameters()],
                                          lr=0.1), model)
    model.loss().backward()
    raw = {name: p.grad.clone() for name, p in model.named_parameters()}
    opt.precondition()  # only the optimiser's own manifold parameter changes
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.grad, raw[n])}
    assert changed == {"bias.basis"}
    rest.precondition()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.grad, raw[n])}
    assert changed == {"bias.basis", "gain.basis"}
    with pytest.raises(ValueError, match="none of the model's parameters"):
        Preconditioned(torch.optim.SGD(TwoPart().parameters(), lr=0.1), model)


def test_sparse_gradients_raise() -> None:
    model = TwoPart()
    opt = Preconditioned(torch.optim.SGD(model.parameters(), lr=0.1), model)
    model.bias.basis.grad = torch.randn(6, 4, dtype=DT).to_sparse()
    with pytest.raises(ValueError, match="dense"):
        opt.step()
    with pytest.raises(ValueError, match="dense"):
        precondition_gradients(model)


@pytest.mark.parametrize(
    ("manifold", "diag", "frozen"),
    [(Ellipse(), [1, 2, 2], []), (Fourier(2), [1, 2, 2, 2, 2], []),
     (Torus(), [1, 2, 2, 2, 4, 4, 2, 4, 4], []), (Ellipse(), [0, 2, 2], [0]),
     (Polynomial(3, "legendre"), [1, 3, 5, 7], [])],
    ids=["ellipse", "fourier2", "torus", "ellipse-frozen0", "legendre3"],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_diagonal_fast_path_equals_dense_product(manifold: Manifold, diag: list[float],
                                                 frozen: list[int], dtype: torch.dtype) -> None:
    model = ManifoldParameter(manifold, (3, 4), dtype=dtype)
    g = torch.randn(manifold.n, 3, 4, generator=torch.Generator().manual_seed(0), dtype=dtype)
    model.basis.grad = g.clone()
    precondition_gradients(model, frozen=frozen)
    dense = (torch.diag(torch.tensor(diag, dtype=dtype)) @ g.reshape(manifold.n, -1))
    assert torch.equal(model.basis.grad, dense.reshape(g.shape))


def test_float32_parameters() -> None:
    manifold = BSpline(6)
    model = ManifoldParameter(manifold, (5,), dtype=torch.float32)
    with torch.no_grad():
        model.basis.copy_(torch.randn(6, 5, generator=torch.Generator().manual_seed(0)))
    P0 = model.basis.detach().clone()
    opt = Preconditioned(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model)
    s = torch.rand(32, generator=torch.Generator().manual_seed(1))
    model(s).pow(2).sum().backward()
    g = model.basis.grad.detach().double().clone()
    opt.step()
    assert model.basis.dtype == torch.float32 and model.basis.grad.dtype == torch.float32
    G = Movement(manifold).gram
    expected = P0.double() - 0.1 * torch.linalg.solve(G, g)
    torch.testing.assert_close(model.basis.detach().double(), expected, rtol=1e-5, atol=1e-5)


def test_mixed_precision_parameters_on_one_manifold() -> None:
    """A float64 and a float32 tensor on the same manifold: each gets G⁻¹ in its own dtype."""
    manifold = BSpline(6)
    model = nn.ModuleList([ManifoldParameter(manifold, (3,), dtype=DT),
                           ManifoldParameter(manifold, (2,), dtype=torch.float32)])
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(6, 3, generator=gen, dtype=DT), torch.randn(6, 2, generator=gen)]
    for p, g in zip(model, grads):
        p.basis.grad = g.clone()
    opt = Preconditioned(torch.optim.SGD(model.parameters(), lr=1.0), model)
    opt.step()
    G = Movement(manifold).gram
    for p, g in zip(model, grads):
        assert p.basis.dtype == g.dtype
        expected = -torch.linalg.solve(G, g.double())
        tol = 1e-10 if g.dtype == DT else 1e-4
        torch.testing.assert_close(p.basis.detach().double(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("opt_name", ["sgd-nesterov-wd", "adam", "adamw"])
def test_point_manifold_is_the_bare_optimizer(opt_name: str) -> None:
    make = OPT_FACTORIES[opt_name]
    a, b = TwoPart(Point()), TwoPart(Point())
    opt_a = Preconditioned(make(a.parameters()), a)
    opt_b = make(b.parameters())
    for _ in range(5):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            model.loss().backward()
            opt.step()
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)


def test_shared_manifold_parameter_is_preconditioned_once() -> None:
    shared = ManifoldParameter(Line(), (3,), dtype=DT)
    model = nn.ModuleList([shared, nn.Sequential(shared)])
    assert len(wm.manifold_parameters(model)) == 1
    g = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    shared.basis.grad = g.clone()
    precondition_gradients(model)
    ginv = torch.tensor([[4.0, -2.0], [-2.0, 4.0]], dtype=DT)
    torch.testing.assert_close(shared.basis.grad, ginv @ g, rtol=1e-14, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# (d) training measures
# ---------------------------------------------------------------------------------------------
def gauss_legendre_on(a: float, b: float, m: int) -> tuple[Tensor, Tensor]:
    x, w = np.polynomial.legendre.leggauss(m)
    nodes = a + 0.5 * (b - a) * (x + 1)
    return torch.as_tensor(nodes, dtype=DT), torch.as_tensor(w / w.sum(), dtype=DT)


def beta22() -> tuple[Tensor, Tensor]:
    """ρ = Beta(2, 2): Gauss–Legendre nodes weighted by the density 6 s (1 − s)."""
    x, w = composite_gauss_legendre(12, 8)
    return x, w * 6 * x * (1 - x)


MEASURES = {  # (manifold, measure (nodes, weights), exact G_ρ⁻¹ from metric.md §3(3) or None)
    "line-U[0,1/2]": (Line(), gauss_legendre_on(0.0, 0.5, 4), [[4, -8], [-8, 28]]),
    "line-beta22": (Line(), beta22(), [[6, -4], [-4, 6]]),
    "ellipse-U[0,1/2]": (Ellipse(), gauss_legendre_on(0.0, 0.5, 24),
                         np.linalg.inv([[1, 0, 2 / np.pi], [0, 0.5, 0], [2 / np.pi, 0, 0.5]])),
    "clamped-cubic-6-beta22": (BSpline(6), beta22(), None),
    "fourier2-empirical": (Fourier(2), (torch.rand(40, generator=torch.Generator().manual_seed(8),
                                                   dtype=DT) ** 2, torch.full((40,), 1 / 40,
                                                                              dtype=DT)), None),
}


@pytest.mark.parametrize("name", list(MEASURES))
def test_measure_uses_G_rho_inverse(name: str) -> None:
    manifold, (nodes, weights), ginv = MEASURES[name]
    if ginv is None:  # G_ρ by the discrete measure itself, computed here
        a = manifold.coefficients(nodes)
        ginv = torch.linalg.inv((a * weights[:, None]).T @ a)
    ginv = torch.as_tensor(np.asarray(ginv, dtype=np.float64)).contiguous()
    model = ManifoldParameter(manifold, (D,), dtype=DT)
    opt = Preconditioned(torch.optim.SGD(model.parameters(), lr=1.0), model,
                         measure=(nodes, weights))
    g = torch.randn(manifold.n, D, generator=torch.Generator().manual_seed(0), dtype=DT)
    model.basis.grad = g.clone()
    opt.step()
    torch.testing.assert_close(model.basis.detach(), -ginv @ g, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(MEASURES))
def test_one_step_reaches_the_minimum_of_L_rho(name: str) -> None:
    """ℓ = ½|x − x*(s)|², L_ρ = E_ρ ℓ: G_ρ ⊗ I is its Hessian, so η = 1 is a Newton step."""
    manifold, (nodes, weights), _ = MEASURES[name]

    def L_rho(model: ManifoldParameter) -> Tensor:
        return (weights * 0.5 * (model(nodes) - features(nodes)).pow(2).sum(-1)).sum()

    # the minimiser by weighted least squares, independently
    a = manifold.coefficients(nodes)
    sw = weights.sqrt()[:, None]
    P_star = torch.linalg.lstsq(sw * a, sw * features(nodes), driver="gelsd").solution
    L_min = float(L_rho(make_model(manifold, P_star)).detach())

    P0 = random_basis(manifold, 4)
    results = {}
    for measure in ((nodes, weights), None):
        model = make_model(manifold, P0)
        opt = Preconditioned(torch.optim.SGD(model.parameters(), lr=1.0), model, measure=measure)
        L0 = float(L_rho(model).detach())
        L_rho(model).backward()
        opt.step()
        results[measure is None] = (model.basis.detach(), float(L_rho(model).detach()))
    P1, L1 = results[False]
    assert L0 - L_min > 0.1
    torch.testing.assert_close(P1, P_star, rtol=1e-8, atol=1e-8)
    assert L1 == pytest.approx(L_min, rel=1e-10, abs=1e-13)
    # the uniform metric does not: its step is not the Newton step of L_ρ
    assert results[True][1] - L_min > 1e-3 * (L0 - L_min)


def test_measure_missing_part_of_the_manifold() -> None:
    """Clamped n=7, ρ = U[0, ½]: basis functions 5, 6 are never seen (G_ρ singular)."""
    manifold = BSpline(7)
    measure = gauss_legendre_on(0.0, 0.5, 16)
    model = ManifoldParameter(manifold, (D,), dtype=DT)
    with pytest.raises(ValueError, match="singular"):
        Preconditioned(torch.optim.SGD(model.parameters(), lr=1.0), model, measure=measure,
                       singular="raise")
    nodes, weights = measure
    model = make_model(manifold, random_basis(manifold, 6))
    P0 = model.basis.detach().clone()
    opt = Preconditioned(torch.optim.SGD(model.parameters(), lr=1.0), model, measure=measure,
                         singular="pinv")
    (weights * 0.5 * (model(nodes) - features(nodes)).pow(2).sum(-1)).sum().backward()
    assert torch.equal(model.basis.grad[5:], torch.zeros(2, D, dtype=DT))  # unseen
    opt.step()
    P1 = model.basis.detach()
    torch.testing.assert_close(P1[5:], P0[5:], rtol=0, atol=1e-12)  # pinv leaves them alone
    a = manifold.coefficients(nodes)
    sw = weights.sqrt()[:, None]
    # on the support of ρ the manifold is the weighted least-squares fit, in one step
    fit = a @ torch.linalg.lstsq(sw * a, sw * features(nodes), driver="gelsd").solution
    torch.testing.assert_close(a @ P1, fit, rtol=1e-8, atol=1e-8)


def test_state_dict_loads_across_equal_manifolds_written_differently():
    """Line() and Polynomial(1, "bernstein") are the same topology: the state loads."""
    a = wm.ManifoldParameter(wm.Line(), (3,))
    b = wm.ManifoldParameter(wm.Polynomial(1, "bernstein"), (3,))
    opt_a = wm.Preconditioned(torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9), a)
    opt_b = wm.Preconditioned(torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9), b)
    a(torch.rand(4)).sum().backward()
    opt_a.step()
    opt_b.load_state_dict(opt_a.state_dict())
    c = wm.ManifoldParameter(wm.Polynomial(1, "legendre"), (3,))
    opt_c = wm.Preconditioned(torch.optim.SGD(c.parameters(), lr=0.1, momentum=0.9), c)
    with pytest.raises(ValueError, match=r"Line\(\).*legendre"):
        opt_c.load_state_dict(opt_a.state_dict())


def test_blocked_metric_step_equals_one_product() -> None:
    """On CPU the metric step runs in cache-sized column blocks, in place: a parameter of
    many blocks (and a last, partial one) gets exactly Ḡ⁻¹ applied along its basis axis;
    a non-contiguous gradient takes the one-product path."""
    import weightmanifold.preconditioning as P

    manifold = BSpline(12, degree=3)
    model = ManifoldParameter(manifold, (301, 77), dtype=DT)
    columns = 301 * 77
    assert columns > 3 * (P._BLOCK_VALUES // manifold.n)  # several blocks
    assert columns % (P._BLOCK_VALUES // manifold.n) != 0  # and a partial last one
    g = torch.randn(12, 301, 77, generator=torch.Generator().manual_seed(1), dtype=DT)
    model.basis.grad = g.clone()
    precondition_gradients(model)
    ginv = manifold.preconditioner().to(DT)
    expected = (ginv @ g.reshape(12, -1)).reshape(g.shape)
    torch.testing.assert_close(model.basis.grad, expected, rtol=1e-12, atol=1e-12)
    model.basis.grad = g.clone().transpose(1, 2).contiguous().transpose(1, 2)  # strided
    assert not model.basis.grad.is_contiguous()
    precondition_gradients(model)
    torch.testing.assert_close(model.basis.grad, expected, rtol=1e-12, atol=1e-12)
