"""B-splines against an independent exact reference (Cox–de Boor in Fractions) and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline as SciBSpline

import weightmanifold as wm
from _exact_reference import (
    clamped_pieces,
    eval_pieces,
    exact_bspline_gram,
    panel_gl,
    periodic_pieces,
    to_float,
)

# (n, degree, periodic): degrees 0..4, n = degree + 1 (periodic and Bernstein), and the
# clamped cubic n = 6, 7 that have no closed-form table
CASES = sorted(
    {(n, p, False) for p in range(5) for n in (p + 1, p + 2, p + 3, 6, 7, 9) if n >= p + 1}
    | {(n, p, True) for p in range(5) for n in (1, p + 1, p + 2, 5, 7, 9) if n >= p + 1}
)


def _id(case):
    n, p, per = case
    return f"{'periodic' if per else 'clamped'}-p{p}-n{n}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_gram_matches_exact_cox_de_boor(case):
    n, p, periodic = case
    b = wm.BSpline(n, degree=p, periodic=periodic)
    exact = exact_bspline_gram(n, p, periodic)
    expected = to_float(exact)
    np.testing.assert_allclose(b.gram().numpy(), expected, rtol=0, atol=1e-14)
    np.testing.assert_allclose(b.quadrature_gram().numpy(), expected, rtol=0, atol=1e-14)
    if b.exact_gram() is not None:
        assert b.exact_gram() == exact


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_coefficients_match_exact_cox_de_boor(case):
    n, p, periodic = case
    pieces = periodic_pieces(n, p) if periodic else clamped_pieces(n, p)
    rng = np.random.default_rng(n * 10 + p)
    x = np.concatenate([rng.random(60), np.linspace(0, 1, 13)[:-1]])
    if not periodic:
        x = np.append(x, 1.0)
    expected = eval_pieces(pieces, x)
    got = wm.BSpline(n, degree=p, periodic=periodic).coefficients(torch.from_numpy(x))
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-13)


def test_cubic_clamped_n6_n7_exact_values():
    # the two sizes metric.md leaves to exact quadrature; spot-check the coupling entries
    g6 = exact_bspline_gram(6, 3, False)
    g7 = exact_bspline_gram(7, 3, False)
    for n, g in ((6, g6), (7, g7)):
        h = 1 / (n - 3)
        sums = [1 / 4, 1 / 2, 3 / 4] + [1.0] * (n - 6) + [3 / 4, 1 / 2, 1 / 4]
        np.testing.assert_allclose(to_float(g).sum(1), np.array(sums) * h, atol=1e-15)
        np.testing.assert_allclose(wm.BSpline(n).gram().numpy(), to_float(g), atol=1e-14)


# -- scipy -----------------------------------------------------------------------------------


def scipy_clamped(n: int, p: int, x: np.ndarray) -> np.ndarray:
    m = n - p
    t = np.r_[np.zeros(p), np.linspace(0.0, 1.0, m + 1), np.ones(p)]
    return SciBSpline.design_matrix(x, t, p).toarray()


def scipy_periodic(n: int, p: int, x: np.ndarray) -> np.ndarray:
    # uniform knots extended by p spans on each side, then fold columns mod n
    t = (np.arange(n + 2 * p + 1) - p) / n
    full = SciBSpline.design_matrix(x, t, p).toarray()  # n + p columns
    out = np.zeros((len(x), n))
    for c in range(full.shape[1]):
        out[:, c % n] += full[:, c]
    return out


SCIPY_CASES = [(n, p) for p in (1, 2, 3, 4, 5) for n in (p + 1, p + 3, 11)]


@pytest.mark.parametrize("n, p", SCIPY_CASES)
def test_coefficients_match_scipy_clamped(n, p):
    rng = np.random.default_rng(p)
    x = np.r_[0.0, rng.random(300), np.linspace(0, 1, n - p + 1), 1.0]
    got = wm.BSpline(n, degree=p).coefficients(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, scipy_clamped(n, p, x), rtol=0, atol=1e-13)


@pytest.mark.parametrize("n, p", SCIPY_CASES)
def test_coefficients_match_scipy_periodic(n, p):
    rng = np.random.default_rng(100 + p)
    x = np.r_[0.0, rng.random(300), np.arange(n) / n]
    got = wm.BSpline(n, degree=p, periodic=True).coefficients(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, scipy_periodic(n, p, x), rtol=0, atol=1e-13)
    # and, periodically wrapped, for s outside [0, 1)
    shifted = torch.from_numpy(x + rng.integers(-5, 6, size=len(x)))
    got2 = wm.BSpline(n, degree=p, periodic=True).coefficients(shifted).numpy()
    np.testing.assert_allclose(got2, got, rtol=0, atol=1e-12)


@pytest.mark.parametrize("p", [1, 2, 4, 5])
@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("extra", [0, 1, 5])
def test_gram_matches_scipy_integrals(p, periodic, extra):
    n = p + 1 + extra
    spans = n if periodic else n - p
    # 8 Gauss–Legendre nodes per knot span: exact for degree ≤ 15 ≥ 2p
    x, w = panel_gl(list(np.linspace(0.0, 1.0, spans + 1)), 8)
    a = scipy_periodic(n, p, x) if periodic else scipy_clamped(n, p, x)
    expected = (a * w[:, None]).T @ a
    b = wm.BSpline(n, degree=p, periodic=periodic)
    np.testing.assert_allclose(b.gram().numpy(), expected, rtol=0, atol=1e-14)


def test_gram_entry_matches_scipy_quad():
    # one adaptive-quadrature spot check per degree, no knot alignment assumed
    from scipy.integrate import quad

    for p in (1, 2, 4, 5):
        n = p + 4
        t = np.r_[np.zeros(p), np.linspace(0.0, 1.0, n - p + 1), np.ones(p)]
        bi = SciBSpline.basis_element(t[1 : p + 3], extrapolate=False)  # B_1
        bj = SciBSpline.basis_element(t[2 : p + 4], extrapolate=False)  # B_2
        val, _ = quad(lambda s, bi=bi, bj=bj: np.nan_to_num(bi(s) * bj(s)), 0, 1,
                      points=list(np.linspace(0, 1, n - p + 1)), epsabs=1e-15, epsrel=1e-14)
        assert float(wm.BSpline(n, degree=p).gram()[1, 2]) == pytest.approx(val, abs=1e-13)
