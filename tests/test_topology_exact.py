"""Every exact Gram matrix of metric.md §2, frozen points (§1) and topology identity.

Expected values are typed in from /work/shared/reference/metric.md as
``fractions.Fraction``; inverses of typed-in matrices are taken exactly in Fractions.
"""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pytest
import torch

import weightmanifold as wm
from _exact_reference import finv, fkron, fmatmul, fmatrix, to_float

F = Fraction  # short for typed-in exact values

TOL = 1e-13


def assert_exact(actual: torch.Tensor, expected: list[list[object]], tol: float = TOL) -> None:
    """max |actual − expected| ≤ tol · max(1, max|expected|) (relative for large entries)."""
    assert actual.dtype == torch.float64
    exp = to_float(fmatrix(expected))
    act = actual.detach().numpy()
    assert act.shape == exp.shape
    scale = max(1.0, float(np.abs(exp).max()))
    err = float(np.abs(act - exp).max())
    assert err <= tol * scale, f"max error {err:.3g} > {tol * scale:.3g}\n{act}\nvs\n{exp}"


def diag(values: list[object]) -> list[list[object]]:
    return [[v if i == j else 0 for j in range(len(values))] for i, v in enumerate(values)]


def circulant(first_row: list[Fraction]) -> list[list[Fraction]]:
    n = len(first_row)
    return [[first_row[(j - i) % n] for j in range(n)] for i in range(n)]


# -- line, ellipse, tethered rod ------------------------------------------------------------

LINE_G = [[F(1, 3), F(1, 6)], [F(1, 6), F(1, 3)]]


def test_line_gram_and_inverse():
    assert_exact(wm.Line().gram(), LINE_G)
    assert_exact(wm.Line().quadrature_gram(), LINE_G)
    assert_exact(wm.Line().preconditioner(), [[4, -2], [-2, 4]])


def test_ellipse_gram_and_inverse():
    assert_exact(wm.Ellipse().gram(), diag([1, F(1, 2), F(1, 2)]))
    assert_exact(wm.Ellipse().quadrature_gram(), diag([1, F(1, 2), F(1, 2)]))
    assert_exact(wm.Ellipse().preconditioner(), diag([1, 2, 2]))


def test_tethered_rod_uses_inverse_of_learned_block():
    p = wm.Line().preconditioner(frozen=[0])
    assert_exact(p, [[0, 0], [0, 3]])
    # zeroing the frozen row/column of the full inverse gives 4, which differs
    full_inv = finv(fmatrix(LINE_G))
    assert full_inv[1][1] == 4
    assert abs(float(p[1, 1]) - float(full_inv[1][1])) == pytest.approx(1.0, abs=1e-13)
    assert_exact(wm.Line().preconditioner(frozen=[1]), [[3, 0], [0, 0]])


def test_line_as_one_and_centred_s_by_change_of_basis():
    # b(s) = (1, s − ½) = T a(s) with a(s) = (1 − s, s): 1 = a0 + a1, s − ½ = −½ a0 + ½ a1
    t = torch.tensor([[1.0, 1.0], [-0.5, 0.5]], dtype=torch.float64)
    s = torch.linspace(0, 1, 11, dtype=torch.float64)
    a = wm.Line().coefficients(s)
    torch.testing.assert_close(a @ t.T, torch.stack([torch.ones_like(s), s - 0.5], 1))
    g_b = t @ wm.Line().gram() @ t.T
    assert_exact(g_b, diag([1, F(1, 12)]))
    assert_exact(torch.linalg.inv(g_b), diag([1, 12]))


# -- Fourier -------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [1, 2, 3])
def test_fourier_gram_and_inverse(order):
    f = wm.Fourier(order)
    assert f.n == 2 * order + 1
    assert_exact(f.gram(), diag([1] + [F(1, 2)] * (2 * order)))
    assert_exact(f.quadrature_gram(), diag([1] + [F(1, 2)] * (2 * order)))
    assert_exact(f.preconditioner(), diag([1] + [2] * (2 * order)))


# -- polynomials -----------------------------------------------------------------------------

BERNSTEIN = {
    1: (LINE_G, [[4, -2], [-2, 4]]),
    2: (
        [[F(1, 5), F(1, 10), F(1, 30)], [F(1, 10), F(2, 15), F(1, 10)],
         [F(1, 30), F(1, 10), F(1, 5)]],
        [[9, -9, 3], [-9, 21, -9], [3, -9, 9]],
    ),
    3: (
        [[F(1, 7), F(1, 14), F(1, 35), F(1, 140)], [F(1, 14), F(3, 35), F(9, 140), F(1, 35)],
         [F(1, 35), F(9, 140), F(3, 35), F(1, 14)], [F(1, 140), F(1, 35), F(1, 14), F(1, 7)]],
        [[16, -24, 16, -4], [-24, F(208, 3), F(-172, 3), 16], [16, F(-172, 3), F(208, 3), -24],
         [-4, 16, -24, 16]],
    ),
}


@pytest.mark.parametrize("k", [1, 2, 3])
def test_bernstein_gram_and_inverse(k):
    g, ginv = BERNSTEIN[k]
    # the typed-in pair is consistent: exact inverse of G is the typed-in G^{-1}
    assert finv(fmatrix(g)) == fmatrix(ginv)
    # and matches the general formula C(k,i)C(k,j) / ((2k+1) C(2k,i+j))
    assert fmatrix(g) == [[F(comb(k, i) * comb(k, j), (2 * k + 1) * comb(2 * k, i + j))
                           for j in range(k + 1)] for i in range(k + 1)]
    p = wm.Polynomial(k)
    assert_exact(p.gram(), g)
    assert_exact(p.quadrature_gram(), g)
    assert_exact(p.preconditioner(), ginv, tol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_legendre_gram_and_inverse(k):
    p = wm.Polynomial(k, "legendre")
    assert_exact(p.gram(), diag([F(1, 2 * i + 1) for i in range(k + 1)]))
    assert_exact(p.quadrature_gram(), diag([F(1, 2 * i + 1) for i in range(k + 1)]))
    assert_exact(p.preconditioner(), diag([2 * i + 1 for i in range(k + 1)]))


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_monomial_gram_is_hilbert(k):
    hilbert = [[F(1, i + j + 1) for j in range(k + 1)] for i in range(k + 1)]
    assert_exact(wm.Polynomial(k, "monomial").gram(), hilbert)
    assert_exact(wm.Polynomial(k, "monomial").quadrature_gram(), hilbert)


def test_monomial_inverse_k3():
    expected = [[16, -120, 240, -140], [-120, 1200, -2700, 1680],
                [240, -2700, 6480, -4200], [-140, 1680, -4200, 2800]]
    assert finv([[F(1, i + j + 1) for j in range(4)] for i in range(4)]) == fmatrix(expected)
    # Hilbert(4) has condition number ≈ 1.55e4: allow that much float64 round-off
    assert_exact(wm.Polynomial(3, "monomial").preconditioner(), expected, tol=1e-13 * 2e4)


# -- B-splines -------------------------------------------------------------------------------

BETA = [F(151, 315), F(397, 1680), F(1, 42), F(1, 5040)]

PERIODIC_FIRST_ROWS = {
    4: [F(151, 315), F(149, 630), F(1, 21), F(149, 630)],
    5: [F(151, 315), F(397, 1680), F(121, 5040), F(121, 5040), F(397, 1680)],
    6: [F(151, 315), F(397, 1680), F(1, 42), F(1, 2520), F(1, 42), F(397, 1680)],
}


def periodic_first_row(n: int) -> list[Fraction]:
    if n in PERIODIC_FIRST_ROWS:
        return PERIODIC_FIRST_ROWS[n]
    assert n >= 7
    return [BETA[0], BETA[1], BETA[2], BETA[3]] + [F(0)] * (n - 7) + [BETA[3], BETA[2], BETA[1]]


def test_cubic_beta_is_a_partition_of_unity_integral():
    assert BETA[0] + 2 * (BETA[1] + BETA[2] + BETA[3]) == 1
    assert [b * 5040 for b in BETA] == [2416, 1191, 120, 1]


@pytest.mark.parametrize("n", [4, 5, 6, 7, 8, 16])
def test_periodic_cubic_circulant(n):
    expected = [[v / n for v in row] for row in circulant(periodic_first_row(n))]
    b = wm.BSpline(n, periodic=True)
    assert b.exact_gram() == expected
    assert_exact(b.gram(), expected)
    assert_exact(b.quadrature_gram(), expected)


@pytest.mark.parametrize("n, cond", [(8, 315 / 17), (16, 315 / 17), (7, 12.03)])
def test_periodic_cubic_condition_number(n, cond):
    ev = np.linalg.eigvalsh(wm.BSpline(n, periodic=True).gram().numpy())
    assert ev.max() / ev.min() == pytest.approx(cond, abs=5e-3 if n == 7 else 1e-10)
    assert ev.min() * n >= 17 / 315 - 1e-12 and ev.max() * n <= 1 + 1e-12


def test_printed_periodic_gram_n8_matches_reference():
    # what `python -c "import weightmanifold as wm; print(wm.BSpline(n=8, periodic=True).gram())"`
    # shows, compared at full precision
    g = wm.BSpline(n=8, periodic=True).gram()
    expected = to_float([[v / 8 for v in row] for row in circulant(periodic_first_row(8))])
    assert np.abs(g.numpy() - expected).max() < 1e-12


def test_clamped_cubic_n4_is_bernstein():
    b = wm.BSpline(4)
    assert b.exact_gram() == fmatrix(BERNSTEIN[3][0])
    assert_exact(b.gram(), BERNSTEIN[3][0])
    assert_exact(b.quadrature_gram(), BERNSTEIN[3][0])
    s = torch.linspace(0, 1, 21, dtype=torch.float64)
    torch.testing.assert_close(b.coefficients(s), wm.Polynomial(3).coefficients(s))


def test_clamped_cubic_n5_rows():
    rows = [[F(1, 7), F(7, 80), F(1, 56), F(1, 560), 0],
            [F(7, 80), F(31, 140), F(39, 280), F(1, 20), F(1, 560)],
            [F(1, 56), F(39, 280), F(13, 70), F(39, 280), F(1, 56)]]
    h = F(1, 2)
    expected = [[F(v) * h for v in row] for row in rows]
    g = wm.BSpline(5).gram()
    assert_exact(g[:3], expected)
    # rows 3, 4 are the mirror images of rows 1, 0
    assert_exact(g[3:], [row[::-1] for row in expected[1::-1]])


LEFT_BLOCK = {
    (0, 0): F(1, 7), (0, 1): F(7, 80), (0, 2): F(31, 1680), (0, 3): F(1, 840),
    (1, 1): F(31, 140), (1, 2): F(5, 32), (1, 3): F(29, 840), (1, 4): F(1, 3360),
    (2, 2): F(183, 560), (2, 3): F(283, 1260), (2, 4): F(239, 10080), (2, 5): F(1, 5040),
}


def clamped_cubic_table(n: int) -> list[list[Fraction]]:
    """Ĝ for n ≥ 8 from metric.md: interior Toeplitz β plus boundary block and mirror."""
    g = [[BETA[abs(i - j)] if abs(i - j) <= 3 else F(0) for j in range(n)] for i in range(n)]
    for (i, j), v in LEFT_BLOCK.items():
        for a, b in ((i, j), (j, i)):
            g[a][b] = v
            g[n - 1 - a][n - 1 - b] = v
    return g


@pytest.mark.parametrize("n", [8, 9, 10, 11, 12])
def test_clamped_cubic_boundary_table(n):
    h = F(1, n - 3)
    table = clamped_cubic_table(n)
    # row sums of Ĝ are [1/4, 1/2, 3/4, 1, …, 1, 3/4, 1/2, 1/4]
    sums = [F(1, 4), F(1, 2), F(3, 4)] + [F(1)] * (n - 6) + [F(3, 4), F(1, 2), F(1, 4)]
    assert [sum(row) for row in table] == sums
    expected = [[v * h for v in row] for row in table]
    b = wm.BSpline(n)
    assert b.exact_gram() == expected
    assert_exact(b.gram(), expected)
    assert_exact(b.quadrature_gram(), expected)
    # row sums of G itself (∫ B_i, since the B_i sum to 1) are those times h
    np.testing.assert_allclose(b.gram().sum(1).numpy(), [float(v * h) for v in sums],
                               rtol=0, atol=TOL)


@pytest.mark.parametrize("n", [6, 7])
def test_clamped_cubic_without_table_has_no_exact_gram(n):
    assert wm.BSpline(n).exact_gram() is None


# -- tensor products -------------------------------------------------------------------------


def test_torus_diagonal():
    d = [1, F(1, 2), F(1, 2), F(1, 2), F(1, 4), F(1, 4), F(1, 2), F(1, 4), F(1, 4)]
    t = wm.Torus()
    assert_exact(t.gram(), diag(d))
    assert_exact(t.quadrature_gram(), diag(d))
    assert_exact(t.preconditioner(), diag([1 / v for v in map(F, d)]))


def test_sheet_matrix_and_inverse():
    g = [[F(v, 36) for v in row] for row in [[4, 2, 2, 1], [2, 4, 1, 2], [2, 1, 4, 2],
                                             [1, 2, 2, 4]]]
    ginv = [[16, -8, -8, 4], [-8, 16, 4, -8], [-8, 4, 16, -8], [4, -8, -8, 16]]
    assert finv(g) == fmatrix(ginv)
    assert fkron(fmatrix(LINE_G), fmatrix(LINE_G)) == g
    sheet = wm.Sheet()
    assert_exact(sheet.gram(), g)
    assert_exact(sheet.quadrature_gram(), g)
    assert_exact(sheet.preconditioner(), ginv, tol=1e-12)


def test_cubic_bernstein_times_circle_is_kron():
    expected = fkron(fmatrix(BERNSTEIN[3][0]), diag([1, F(1, 2), F(1, 2)]))
    expected_inv = fkron(fmatrix(BERNSTEIN[3][1]), diag([1, 2, 2]))
    assert finv(expected) == expected_inv
    prod = wm.Product(wm.Polynomial(3), wm.Ellipse())
    assert_exact(prod.gram(), expected)
    assert_exact(prod.quadrature_gram(), expected)
    assert_exact(prod.preconditioner(), expected_inv, tol=1e-12)


# -- frozen points (§1) ----------------------------------------------------------------------


@pytest.mark.parametrize("frozen", [[0], [0, 3], [1], [3, 1]])
def test_frozen_is_inverse_of_learned_block(frozen):
    g = fmatrix(BERNSTEIN[3][0])
    learned = [i for i in range(4) if i not in frozen]
    g_ll_inv = finv([[g[i][j] for j in learned] for i in learned])
    expected = [[F(0)] * 4 for _ in range(4)]
    for a, i in enumerate(learned):
        for b, j in enumerate(learned):
            expected[i][j] = g_ll_inv[a][b]
    p = wm.Polynomial(3).preconditioner(frozen=frozen)
    assert_exact(p, expected, tol=1e-12)
    # NOT the (L, L) block of the full inverse
    full_inv = finv(g)
    block = [[full_inv[i][j] if i in learned and j in learned else F(0) for j in range(4)]
             for i in range(4)]
    assert np.abs(p.numpy() - to_float(block)).max() > 1.0
    # frozen rows and columns are exactly zero: frozen points never move
    assert (p[frozen] == 0).all() and (p[:, frozen] == 0).all()


def test_frozen_update_is_steepest_descent_for_learned_points():
    # G_LL^{-1} g_L gives a better linearised decrease at equal movement than the
    # (L, L) block of G^{-1} (metric.md §3(1)); check on a random gradient
    g = to_float(fmatrix(BERNSTEIN[3][0]))
    learned = [1, 2, 3]
    g_ll = g[np.ix_(learned, learned)]
    rng = np.random.default_rng(0)
    grad = rng.standard_normal(3)
    p = wm.Polynomial(3).preconditioner(frozen=[0]).numpy()[np.ix_(learned, learned)]
    block = np.linalg.inv(g)[np.ix_(learned, learned)]

    def decrease(direction):  # linearised decrease at unit movement d^T G_LL d = 1
        return grad @ direction / np.sqrt(direction @ g_ll @ direction)

    best = -np.sqrt(grad @ np.linalg.solve(g_ll, grad))
    assert decrease(-p @ grad) == pytest.approx(best, rel=1e-12)
    assert decrease(-block @ grad) > best + 1e-6


# -- identity --------------------------------------------------------------------------------


def test_equality_and_hash():
    assert wm.Line() == wm.Polynomial(1, "bernstein")
    assert hash(wm.Line()) == hash(wm.Polynomial(1, "bernstein"))
    assert wm.Ellipse() == wm.Fourier(1)
    assert hash(wm.Ellipse()) == hash(wm.Fourier(1))
    assert wm.BSpline(8) != wm.BSpline(8, periodic=True)
    assert wm.BSpline(8) == wm.BSpline(8)
    assert wm.BSpline(8, degree=2) != wm.BSpline(8)
    assert wm.Polynomial(3, "legendre") != wm.Polynomial(3, "monomial")
    assert wm.Fourier(2) != wm.Fourier(3)
    assert wm.Torus() == wm.Product(wm.Ellipse(), wm.Fourier(1))
    assert wm.Sheet() != wm.Torus()
    assert len({wm.Line(), wm.Polynomial(1), wm.Ellipse(), wm.Fourier(1)}) == 2
    assert wm.Line() != "Line()"


def test_kron_reference_helper_is_row_major():
    # fkron matches numpy's kron (guards the references used above)
    a = fmatrix([[1, 2], [3, 4]])
    b = fmatrix([[0, 5], [6, 7]])
    np.testing.assert_array_equal(to_float(fkron(a, b)), np.kron(to_float(a), to_float(b)))
    np.testing.assert_array_equal(to_float(fmatmul(a, b)), to_float(a) @ to_float(b))
