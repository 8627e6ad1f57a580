"""Closed forms vs exact quadrature, tightness of the node counts (metric.md §4), the sphere."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import weightmanifold as wm
from _exact_reference import exact_bspline_gram, gl, panel_gl, to_float

ALL_TOPOLOGIES = [
    wm.Point(),
    wm.Line(),
    *[wm.Polynomial(k, b) for k in (1, 2, 3, 5, 7) for b in ("bernstein", "legendre", "monomial")],
    wm.Ellipse(),
    *[wm.Fourier(k) for k in (2, 3, 5, 8)],
    *[wm.BSpline(n, periodic=True) for n in (4, 5, 6, 7, 8, 13, 16)],
    *[wm.BSpline(n) for n in (4, 8, 9, 12, 20)],
    *[wm.BSpline(n, degree=p, periodic=per) for p in (0, 1, 2, 5) for n in (p + 1, 9)
      for per in (False, True)],
    wm.Torus(),
    wm.Cylinder(),
    wm.Sheet(),
    wm.Product(wm.Polynomial(3), wm.Ellipse()),
    wm.Product(wm.BSpline(7, periodic=True), wm.Line(), wm.Fourier(2)),
    wm.Product(wm.Sphere(2), wm.Line()),
    *[wm.Sphere(L) for L in (1, 2, 3, 4)],
]


@pytest.mark.parametrize("m", ALL_TOPOLOGIES, ids=repr)
def test_closed_form_matches_quadrature(m):
    closed = m.gram()
    quad = m.quadrature_gram()
    assert closed.dtype == quad.dtype == torch.float64
    assert closed.shape == quad.shape == (m.n, m.n)
    assert (closed - quad).abs().max() < 1e-13
    torch.testing.assert_close(closed, closed.T, rtol=0, atol=1e-16)
    assert torch.linalg.eigvalsh(closed).min() > 0


@pytest.mark.parametrize("m", ALL_TOPOLOGIES, ids=repr)
def test_quadrature_rule_is_a_probability_rule_in_the_domain(m):
    nodes, weights = m.quadrature()
    assert nodes.dtype == weights.dtype == torch.float64
    assert nodes.shape == (len(weights), m.dim)
    assert (weights > 0).all()
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-14)
    # nodes are valid conditions (check() does not raise and leaves them unchanged)
    torch.testing.assert_close(m.check(nodes), nodes, rtol=0, atol=1e-15)


# -- tightness of the node counts ------------------------------------------------------------


def gram_with_rule(m, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    a = m.coefficients(torch.from_numpy(x)).numpy()
    return (a * w[:, None]).T @ a


@pytest.mark.parametrize("n, periodic, bad_err", [(7, True, 2.8e-5), (10, False, 1.6e-4)])
def test_cubic_bspline_needs_four_nodes_per_span(n, periodic, bad_err):
    b = wm.BSpline(n, periodic=periodic)
    exact = to_float(exact_bspline_gram(n, 3, periodic))
    spans = n if periodic else n - 3
    breaks = list(np.linspace(0.0, 1.0, spans + 1))
    err = {m: np.abs(gram_with_rule(b, *panel_gl(breaks, m)) - exact).max() for m in (3, 4)}
    assert err[4] < 1e-15
    assert err[3] == pytest.approx(bad_err, rel=0.05)  # metric.md §4: 2.8e-5, 1.6e-4
    # four nodes on panels NOT aligned with the knots are not exact either
    shifted = [0.0] + [(i + 0.5) / spans for i in range(spans)] + [1.0]
    assert np.abs(gram_with_rule(b, *panel_gl(shifted, 4)) - exact).max() > 1e-6
    # the library's rule is the tight one: p + 1 = 4 nodes per span
    assert len(b.quadrature()[1]) == 4 * spans


@pytest.mark.parametrize("p", [0, 1, 2, 4, 5])
def test_degree_p_bspline_needs_p_plus_1_nodes_per_span(p):
    n = p + 4
    b = wm.BSpline(n, degree=p)
    exact = to_float(exact_bspline_gram(n, p, False))
    breaks = list(np.linspace(0.0, 1.0, n - p + 1))
    assert np.abs(gram_with_rule(b, *panel_gl(breaks, p + 1)) - exact).max() < 1e-15
    if p > 0:
        assert np.abs(gram_with_rule(b, *panel_gl(breaks, p)) - exact).max() > 1e-6


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_bernstein_needs_k_plus_1_nodes(k):
    p = wm.Polynomial(k)
    exact = p.gram().numpy()
    assert np.abs(gram_with_rule(p, *gl(k + 1, 0.0, 1.0)) - exact).max() < 1e-15
    assert np.abs(gram_with_rule(p, *gl(k, 0.0, 1.0)) - exact).max() > 1e-4


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_fourier_needs_2k_plus_1_uniform_nodes(order):
    f = wm.Fourier(order)
    exact = np.diag([1.0] + [0.5] * (2 * order))

    def trapezoid(num):
        return np.arange(num) / num, np.full(num, 1.0 / num)

    good = gram_with_rule(f, *trapezoid(2 * order + 1))
    bad = gram_with_rule(f, *trapezoid(2 * order))
    assert np.abs(good - exact).max() <= 6e-16 * 4
    assert np.abs(bad - exact).max() == pytest.approx(0.5, abs=1e-12)
    # with N = 2K the top-frequency diagonal becomes (1, 0) instead of (½, ½)
    np.testing.assert_allclose(np.diag(bad)[-2:], [1.0, 0.0], atol=1e-12)
    assert len(f.quadrature()[1]) == 2 * order + 1


# -- the sphere ------------------------------------------------------------------------------


def sphere_rule(nz: int, nphi: int, rotation: np.ndarray | None = None):
    z, wz = gl(nz, -1.0, 1.0)
    phi = 2 * np.pi * np.arange(nphi) / nphi
    zz, pp = np.meshgrid(z, phi, indexing="ij")
    r = np.sqrt(1 - zz**2)
    pts = np.stack([r * np.cos(pp), r * np.sin(pp), zz], -1).reshape(-1, 3)
    w = (wz[:, None] / 2 * np.full(nphi, 1.0 / nphi)[None, :]).reshape(-1)
    if rotation is not None:
        pts = pts @ rotation.T
    return pts, w


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("L", [1, 2, 3, 4])
def test_sphere_gram_is_identity(L):
    s = wm.Sphere(L)
    assert s.n == (L + 1) ** 2
    eye = np.eye(s.n)
    assert np.abs(s.quadrature_gram().numpy() - eye).max() < 1e-13
    assert np.abs(s.gram().numpy() - eye).max() == 0
    # an independent, randomly rotated rule (exact for degree ≤ 2L + 2 on the sphere)
    pts, w = sphere_rule(L + 2, 2 * L + 3, random_rotation(L))
    assert np.abs(gram_with_rule(s, pts, w) - eye).max() < 1e-13
    # and the library's rule is tight in the azimuth: 2L nodes lose the top order
    pts, w = sphere_rule(L + 1, 2 * L)
    assert np.abs(gram_with_rule(s, pts, w) - eye).max() > 0.1


def scipy_real_harmonics(L: int, pts: np.ndarray) -> np.ndarray:
    """sqrt(4π)·{Y_l^0, sqrt2·Re Y_l^m, sqrt2·Im Y_l^|m|} from scipy's complex harmonics."""
    from scipy import special

    theta = np.arccos(np.clip(pts[:, 2], -1, 1))
    phi = np.mod(np.arctan2(pts[:, 1], pts[:, 0]), 2 * np.pi)
    if hasattr(special, "sph_harm_y"):
        def Y(l, m):
            return special.sph_harm_y(l, m, theta, phi)
    else:  # scipy < 1.15: sph_harm(m, l, azimuth, polar)
        def Y(l, m):
            return special.sph_harm(m, l, phi, theta)
    cols = []
    for l in range(L + 1):
        for m in range(-l, l + 1):
            y = Y(l, abs(m))
            if m == 0:
                cols.append(y.real)
            else:
                cols.append(math.sqrt(2) * (y.real if m > 0 else y.imag))
    return math.sqrt(4 * math.pi) * np.stack(cols, 1)


@pytest.mark.parametrize("L", [1, 2, 3, 4])
def test_sphere_matches_scipy_up_to_sign(L):
    rng = np.random.default_rng(7 + L)
    pts = rng.standard_normal((400, 3))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    ours = wm.Sphere(L).coefficients(torch.from_numpy(pts)).numpy()
    ref = scipy_real_harmonics(L, pts)
    for col in range(ours.shape[1]):
        k = np.argmax(np.abs(ref[:, col]))
        sign = np.sign(ours[k, col] * ref[k, col])
        assert sign != 0
        np.testing.assert_allclose(ours[:, col], sign * ref[:, col], rtol=0, atol=1e-12)


def test_sphere_constant_harmonic_and_poles():
    pts = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.6, 0.0, 0.8]],
                       dtype=torch.float64)
    a = wm.Sphere(3).coefficients(pts)
    assert (a[:, 0] == 1).all()
    # at the north pole only the m = 0 harmonics survive: a_l0 = sqrt(2l+1) P_l(1) = sqrt(2l+1)
    zonal = [l * l + l for l in range(4)]
    torch.testing.assert_close(a[0, zonal], torch.tensor([math.sqrt(2 * l + 1) for l in range(4)],
                                                         dtype=torch.float64))
    others = [i for i in range(16) if i not in zonal]
    assert a[0, others].abs().max() == 0
    # at the south pole P_l(−1) = (−1)^l
    torch.testing.assert_close(
        a[1, zonal],
        torch.tensor([(-1) ** l * math.sqrt(2 * l + 1) for l in range(4)], dtype=torch.float64))


def test_sphere_smooth_at_pole():
    # finite gradient at the pole, equal to the limit of gradients approaching it
    sph = wm.Sphere(4)

    def grad_at(v):
        s = torch.tensor([v], dtype=torch.float64, requires_grad=True)
        weights = torch.linspace(-1, 1, sph.n, dtype=torch.float64)
        (sph.coefficients(s) @ weights).sum().backward()
        return s.grad[0]

    g_pole = grad_at([0.0, 0.0, 1.0])
    assert torch.isfinite(g_pole).all()
    for eps in (1e-4, 1e-6):
        for phi in (0.3, 2.0, 4.5):
            r = math.sin(eps)
            near = grad_at([r * math.cos(phi), r * math.sin(phi), math.cos(eps)])
            assert (near - g_pole).abs().max() < 1e3 * eps
    # and the full Jacobian (with normalisation) passes gradcheck at both poles
    norm = wm.Sphere(3, normalize=True)
    for v in ([0.0, 0.0, 1.0], [0.0, 0.0, -1.0]):
        s = torch.tensor([v], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(norm.coefficients, (s,), eps=1e-6, atol=1e-6)
