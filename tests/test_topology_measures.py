"""Metrics under a training measure ρ (metric.md §3(3)) and the singular case."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import weightmanifold as wm
from _exact_reference import clamped_pieces, finv, fmatrix, gl, panel_gl, pieces_gram, to_float

F = Fraction  # short for typed-in exact values


def measure(x: np.ndarray, w: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(x), torch.from_numpy(w)


def uniform_half(m: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """ρ = U[0, ½] as an m-point Gauss–Legendre rule (weights are renormalised by gram)."""
    return measure(*gl(m, 0.0, 0.5))


# -- empirical measures ----------------------------------------------------------------------


def test_sample_tensor_gives_empirical_gram():
    rng = np.random.default_rng(0)
    s = rng.random(257)
    a = np.stack([1 - s, s], 1)  # the line, written out
    expected = sum(np.outer(r, r) for r in a) / len(s)
    np.testing.assert_allclose(wm.Line().gram(torch.from_numpy(s)).numpy(), expected,
                               rtol=0, atol=1e-15)
    # Fourier K=2 on samples outside [0, 1): they wrap
    t = rng.normal(size=100) * 3
    th = 2 * np.pi * t
    b = np.stack([np.ones_like(t), np.cos(th), np.sin(th), np.cos(2 * th), np.sin(2 * th)], 1)
    np.testing.assert_allclose(wm.Fourier(2).gram(torch.from_numpy(t)).numpy(), b.T @ b / 100,
                               rtol=0, atol=1e-14)


def test_weighted_samples_normalise_weights():
    s = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    w = torch.tensor([2.0, 0.0, 6.0], dtype=torch.float64)
    # ¼ δ_0 + ¾ δ_1
    np.testing.assert_allclose(wm.Line().gram((s, w)).numpy(), [[0.25, 0], [0, 0.75]], atol=0)


def test_torus_samples_two_columns():
    rng = np.random.default_rng(1)
    s = rng.random((64, 2))
    a = np.stack([np.kron(wm.Ellipse().coefficients(torch.tensor(r[:1])).numpy()[0],
                          wm.Ellipse().coefficients(torch.tensor(r[1:])).numpy()[0]) for r in s])
    np.testing.assert_allclose(wm.Torus().gram(torch.from_numpy(s)).numpy(), a.T @ a / 64,
                               atol=1e-15)


# -- exact G_ρ of metric.md §3(3) ---------------------------------------------------------------


def test_line_uniform_half():
    g = wm.Line().gram(uniform_half())
    np.testing.assert_allclose(g.numpy(), to_float(fmatrix([[F(7, 12), F(1, 6)],
                                                            [F(1, 6), F(1, 12)]])),
                               rtol=0, atol=1e-15)
    assert finv(fmatrix([[F(7, 12), F(1, 6)], [F(1, 6), F(1, 12)]])) == fmatrix([[4, -8],
                                                                                 [-8, 28]])
    p = wm.Line().preconditioner(uniform_half())
    np.testing.assert_allclose(p.numpy(), [[4, -8], [-8, 28]], rtol=0, atol=1e-12)


def test_line_beta22():
    x, w = gl(5, 0.0, 1.0)  # exact for the degree-4 integrands a_i a_j · 6s(1 − s)
    g = wm.Line().gram(measure(x, w * 6 * x * (1 - x)))
    np.testing.assert_allclose(g.numpy(), [[0.3, 0.2], [0.2, 0.3]], rtol=0, atol=1e-15)
    p = wm.Line().preconditioner(measure(x, w * 6 * x * (1 - x)))
    np.testing.assert_allclose(p.numpy(), [[6, -4], [-4, 6]], rtol=0, atol=1e-13)


def test_fourier_uniform_half_is_not_diagonal():
    g = wm.Fourier(1).gram(uniform_half(30))
    expected = [[1, 0, 2 / math.pi], [0, 0.5, 0], [2 / math.pi, 0, 0.5]]
    np.testing.assert_allclose(g.numpy(), expected, rtol=0, atol=1e-14)


def test_callable_sampler_converges():
    gen = torch.Generator().manual_seed(1234)

    def sampler(num):
        return 0.5 * torch.rand(num, generator=gen, dtype=torch.float64)

    expected = np.array([[7 / 12, 1 / 6], [1 / 6, 1 / 12]])
    g = wm.Line().gram(sampler, num_samples=200_000)
    assert np.abs(g.numpy() - expected).max() < 3e-3
    # and it is G_ρ, not the uniform G_U (which is ≈ 0.25 away)
    assert np.abs(g.numpy() - wm.Line().gram().numpy()).max() > 0.2
    p = wm.Line().preconditioner(sampler, num_samples=200_000)
    assert np.abs(p.numpy() - [[4, -8], [-8, 28]]).max() < 0.5


@pytest.mark.parametrize("m", [wm.Line(), wm.Polynomial(3), wm.Fourier(2), wm.BSpline(8)],
                         ids=repr)
def test_rho_step_is_l2_rho_projection(m):
    # ΔM(s) = a(s)^T G_ρ^{-1} E_ρ[a f] is the L²(ρ) projection of f onto span{a}:
    # compare with an independent weighted least-squares solve on the same nodes
    x, w = panel_gl([0.0, 1 / 8, 2 / 8, 3 / 8, 0.5], 8)
    x, w = np.concatenate([x, gl(20, 0.5, 0.9)[0]]), np.concatenate([w, 0.1 * gl(20, 0.5, 0.9)[1]])
    w = w / w.sum()
    f = np.sin(7 * x) + x**2
    a = m.coefficients(torch.from_numpy(x)).numpy()
    coef = m.preconditioner(measure(x, w)).numpy() @ (a.T @ (w * f))
    lsq, *_ = np.linalg.lstsq(a * np.sqrt(w)[:, None], f * np.sqrt(w), rcond=None)
    np.testing.assert_allclose(coef, lsq, rtol=1e-8, atol=1e-8)


# -- the singular case: clamped cubic n = 7 and ρ = U[0, ½] --------------------------------------

N7 = wm.BSpline(7)
RHO = measure(*panel_gl([0.0, 0.25, 0.5], 4))  # exact for the degree-6 integrands per span
G_RHO = 2 * to_float(pieces_gram(clamped_pieces(7, 3), F(0), F(1, 2)))
G_U = to_float(pieces_gram(clamped_pieces(7, 3)))
UNSEEN = [5, 6]  # B_5, B_6 are supported on [½, 1]


def test_singular_gram_is_exact_and_has_two_zero_eigenvalues():
    np.testing.assert_allclose(N7.gram(RHO).numpy(), G_RHO, rtol=0, atol=1e-15)
    ev = np.linalg.eigvalsh(G_RHO)
    assert np.abs(ev[:2]).max() < 1e-15 and ev[2] > 1e-4
    assert (G_RHO[UNSEEN] == 0).all()


def test_singular_raise():
    with pytest.raises(ValueError, match=r"singular.*misses part of the manifold.*"
                                         r"singular='regularize' or 'pinv'"):
        N7.preconditioner(RHO, singular="raise")
    # a non-singular measure is inverted exactly whatever `singular` says
    p = wm.Line().preconditioner(uniform_half(), singular="raise")
    np.testing.assert_allclose(p.numpy(), [[4, -8], [-8, 28]], atol=1e-12)


def test_regularize_is_inverse_of_g_rho_plus_eps_g_u():
    for eps in (1e-3, 1e-2):
        p = N7.preconditioner(RHO, singular="regularize", eps=eps).numpy()
        expected = np.linalg.inv(G_RHO + eps * G_U)
        np.testing.assert_allclose(p, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    # default mode is regularize with eps = 1e-3
    np.testing.assert_array_equal(N7.preconditioner(RHO).numpy(),
                                  N7.preconditioner(RHO, singular="regularize", eps=1e-3).numpy())


def test_pinv_never_moves_unseen_directions():
    p = N7.preconditioner(RHO, singular="pinv").numpy()
    np.testing.assert_allclose(p, np.linalg.pinv(G_RHO, hermitian=True), rtol=1e-9, atol=1e-6)
    for v in np.eye(7)[UNSEEN]:  # the null space of G_ρ
        assert np.abs(p @ v).max() < 1e-12
    rng = np.random.default_rng(3)
    g = rng.standard_normal(7)
    assert np.abs((p @ g)[UNSEEN]).max() < 1e-12


def rho_movement_and_decrease(p: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    d = -p @ g
    return float(d @ G_RHO @ d), float(g @ d)


def test_pinv_and_regularize_agree_on_rho_movement_and_decrease():
    rng = np.random.default_rng(5)
    p_pinv = N7.preconditioner(RHO, singular="pinv").numpy()
    gaps = []
    for eps in (1e-3, 1e-6):
        p_reg = N7.preconditioner(RHO, singular="regularize", eps=eps).numpy()
        gap = 0.0
        for _ in range(5):
            g = G_RHO @ rng.standard_normal(7)  # a gradient ḡ_ρ: in the range of G_ρ
            assert np.abs(g[UNSEEN]).max() == 0
            y_norm = float(g @ np.linalg.pinv(G_RHO) @ g)
            mov_p, dec_p = rho_movement_and_decrease(p_pinv, g)
            mov_r, dec_r = rho_movement_and_decrease(p_reg, g)
            # pinv: movement = −decrease = ḡ^T G_ρ^+ ḡ exactly
            assert mov_p == pytest.approx(y_norm, rel=1e-9)
            assert dec_p == pytest.approx(-y_norm, rel=1e-9)
            gap = max(gap, abs(mov_r - mov_p) / mov_p, abs(dec_r - dec_p) / abs(dec_p))
        gaps.append(gap)
    # the same to O(eps / smallest non-zero eigenvalue), converging as eps → 0
    assert gaps[0] < 2e-2 and gaps[1] < 2e-5 and gaps[1] < gaps[0] / 100


def test_pinv_and_regularize_differ_on_unseen_region():
    rng = np.random.default_rng(6)
    g = G_RHO @ rng.standard_normal(7)
    x, w = gl(4, 0.75, 1.0)
    a = N7.coefficients(torch.from_numpy(x)).numpy()

    def unseen_movement(p):
        return float(w @ (a @ (p @ g)) ** 2)

    p_pinv = N7.preconditioner(RHO, singular="pinv").numpy()
    p_reg = N7.preconditioner(RHO, singular="regularize").numpy()
    assert abs(unseen_movement(p_pinv) - unseen_movement(p_reg)) > 1e-3 * unseen_movement(p_pinv)


def test_frozen_with_measure():
    # freezing the unseen points makes G_ρ,LL regular: the exact inverse, embedded
    p = N7.preconditioner(RHO, frozen=UNSEEN, singular="raise").numpy()
    learned = [0, 1, 2, 3, 4]
    expected = np.zeros((7, 7))
    expected[np.ix_(learned, learned)] = np.linalg.inv(G_RHO[np.ix_(learned, learned)])
    np.testing.assert_allclose(p, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
