"""Properties of the bases (hypothesis), differentiability, dtypes, wrapping and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import weightmanifold as wm

FAST = settings(max_examples=40, deadline=None)

ONE_MINUS = math.nextafter(1.0, 0.0)
EDGE_BOUNDED = [0.0, 1.0, ONE_MINUS, math.nextafter(0.0, 1.0), 5e-324, 0.5, 1e-300, 1 - 1e-12]
EDGE_PERIODIC = [
    *EDGE_BOUNDED, -0.0, -1e-20, -1e-17, -5e-324, 3.0, -3.0, ONE_MINUS - 1.0,
    1e6 + 0.25, -1e6 - 0.75, 2.0**40 + 0.5, 7.0 - 1e-15,
]

bounded_value = st.one_of(st.sampled_from(EDGE_BOUNDED),
                          st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False))
periodic_value = st.one_of(st.sampled_from(EDGE_PERIODIC),
                           st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
bounded_batch = st.lists(bounded_value, min_size=1, max_size=50)
periodic_batch = st.lists(periodic_value, min_size=1, max_size=50)

PARTITION_OF_UNITY = [
    wm.Line(),
    *[wm.Polynomial(k) for k in (2, 3, 6)],
    *[wm.BSpline(n, degree=p) for p in (0, 1, 2, 3, 5) for n in (p + 1, p + 4)],
]
PERIODIC_SPLINES = [wm.BSpline(n, degree=p, periodic=True) for p in (0, 1, 2, 3, 5)
                    for n in (p + 1, p + 4)]


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# -- partition of unity, non-negativity --------------------------------------------------------


@FAST
@given(s=bounded_batch)
def test_partition_of_unity_bounded(s):
    x = t64(s)
    for m in PARTITION_OF_UNITY:
        a = m.coefficients(x)
        assert a.shape == (len(s), m.n)
        torch.testing.assert_close(a.sum(1), torch.ones(len(s), dtype=torch.float64),
                                   rtol=0, atol=1e-14)
        if isinstance(m, wm.BSpline):
            assert (a >= 0).all()
            # local support: at most p + 1 non-zero functions
            assert ((a != 0).sum(1) <= m.degree + 1).all()


@FAST
@given(s=periodic_batch)
@example(s=[-1e-20])
@example(s=[-5e-324, 0.0, ONE_MINUS - 1.0])
def test_partition_of_unity_periodic(s):
    x = t64(s)
    for m in PERIODIC_SPLINES:
        a = m.coefficients(x)
        torch.testing.assert_close(a.sum(1), torch.ones(len(s), dtype=torch.float64),
                                   rtol=0, atol=1e-14)
        assert (a >= 0).all()


def test_partition_of_unity_periodic_float32_just_below_zero():
    # remainder(-1e-9, 1) rounds to 1.0 in float32; s must still land in [0, 1)
    x = torch.tensor([-1e-9, -1e-30, 0.0, -3e-8], dtype=torch.float32)
    for m in PERIODIC_SPLINES:
        a = m.coefficients(x)
        torch.testing.assert_close(a.sum(1), torch.ones(4), rtol=0, atol=1e-6)
        # s just below an integer is (to float32 precision) s = 0
        torch.testing.assert_close(a[0], m.coefficients(torch.zeros(1))[0], rtol=0, atol=1e-6)
    assert (wm.Ellipse().check(x) < 1).all()


# -- constant() --------------------------------------------------------------------------------

CONSTANT_CASES = [
    (wm.Point(), [1]),
    (wm.Line(), [1, 1]),
    (wm.Polynomial(3), [1] * 4),
    (wm.Polynomial(3, "legendre"), [1, 0, 0, 0]),
    (wm.Polynomial(4, "monomial"), [1, 0, 0, 0, 0]),
    (wm.Ellipse(), [1, 0, 0]),
    (wm.Fourier(3), [1] + [0] * 6),
    (wm.BSpline(8), [1] * 8),
    (wm.BSpline(6), [1] * 6),
    (wm.BSpline(7, periodic=True), [1] * 7),
    (wm.BSpline(5, degree=0, periodic=True), [1] * 5),
    (wm.BSpline(6, degree=4), [1] * 6),
    (wm.Torus(), [1] + [0] * 8),
    (wm.Cylinder(), [1, 0, 0, 1, 0, 0]),
    (wm.Sheet(), [1] * 4),
    (wm.Sphere(3), [1] + [0] * 15),
    (wm.Product(wm.Sphere(1), wm.BSpline(5, periodic=True)), [1] * 5 + [0] * 15),
]


def random_conditions(m, num: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if isinstance(m, wm.Sphere):
        v = torch.randn(num, 3, generator=g, dtype=torch.float64)
        return v / v.norm(dim=1, keepdim=True)
    if isinstance(m, wm.Product):
        return torch.cat([random_conditions(f, num, seed + i).reshape(num, -1)
                          for i, f in enumerate(m.factors)], dim=1)
    if m.dim == 0:
        return torch.zeros(num, dtype=torch.float64)
    s = torch.rand(num, m.dim, generator=g, dtype=torch.float64)
    return s[:, 0] if m.dim == 1 else s


@pytest.mark.parametrize("m, expected", CONSTANT_CASES, ids=[repr(c[0]) for c in CONSTANT_CASES])
def test_constant(m, expected):
    c = m.constant()
    assert c.dtype == torch.float64
    assert c.tolist() == [float(v) for v in expected]  # snapped to exact values
    a = m.coefficients(random_conditions(m, 200))
    torch.testing.assert_close(a @ c, torch.ones(200, dtype=torch.float64), rtol=0, atol=1e-13)


def test_constant_raises_when_not_in_span():
    class NoConstant(wm.Manifold):  # a(s) = (s, s²) cannot represent 1
        n, dim, periodic = 2, 1, (False,)

        def _basis(self, s):
            return torch.cat([s, s**2], 1)

        def quadrature(self):
            x, w = np.polynomial.legendre.leggauss(3)
            return torch.from_numpy((x[:, None] + 1) / 2), torch.from_numpy(w / 2)

    with pytest.raises(ValueError, match="cannot represent a constant"):
        NoConstant().constant()


# -- differentiability -------------------------------------------------------------------------


def away_from_knots(points: list[float], knots: list[float], margin: float = 1e-3) -> list[float]:
    return [p for p in points if min(abs(p - k) for k in knots) > margin]


GRAD_CASES = [
    (wm.Line(), [0.1, 0.37, 0.5, 0.93]),
    (wm.Ellipse(), [0.0, 0.13, 0.5, 0.77, 2.4, -1.3]),
    (wm.Polynomial(5, "legendre"), [0.05, 0.3, 0.61, 0.99]),
    (wm.Polynomial(4), [0.05, 0.3, 0.61, 0.99]),
    (wm.BSpline(8, periodic=True),
     away_from_knots([0.03, 0.2, 0.33, 0.52, 0.71, 0.9, 0.99, 1.61, -0.4], [i / 8 for i in range(9)]
                     + [1.61 - 1, -0.4 + 1])),
    (wm.BSpline(9), away_from_knots([0.03, 0.2, 0.33, 0.52, 0.71, 0.9, 0.99],
                                    [i / 6 for i in range(7)])),
    (wm.BSpline(7, degree=5), [0.1, 0.4, 0.6, 0.95]),
]


@pytest.mark.parametrize("m, pts", GRAD_CASES, ids=[repr(c[0]) for c in GRAD_CASES])
def test_gradcheck_one_dimensional(m, pts):
    s = t64(pts).requires_grad_(True)
    assert torch.autograd.gradcheck(m.coefficients, (s,), eps=1e-6, atol=1e-7)


def test_gradcheck_torus_and_sphere():
    s = t64([[0.1, 0.7], [0.45, -0.2], [3.3, 0.5]]).requires_grad_(True)
    assert torch.autograd.gradcheck(wm.Torus().coefficients, (s,), eps=1e-6, atol=1e-7)
    s = t64([[0.2, 0.4], [0.6, 0.9]]).requires_grad_(True)
    assert torch.autograd.gradcheck(wm.Sheet().coefficients, (s,), eps=1e-6, atol=1e-7)
    v = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v = (v / v.norm(dim=1, keepdim=True)).requires_grad_(True)
    assert torch.autograd.gradcheck(wm.Sphere(3, normalize=True).coefficients, (v,), eps=1e-6,
                                    atol=1e-6)


def test_line_derivative_is_exact():
    s = t64([0.2, 0.8]).requires_grad_(True)
    a = wm.Line().coefficients(s)
    (d0,) = torch.autograd.grad(a[:, 0].sum(), s)
    (d1,) = torch.autograd.grad(wm.Line().coefficients(s)[:, 1].sum(), s)
    assert d0.tolist() == [-1.0, -1.0] and d1.tolist() == [1.0, 1.0]


# -- dtype, device, shapes -------------------------------------------------------------------

DTYPE_CASES = [c[0] for c in CONSTANT_CASES]


@pytest.mark.parametrize("m", DTYPE_CASES, ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow_s(m, dtype):
    s64 = random_conditions(m, 7)
    s = s64.to(dtype)
    a = m.coefficients(s)
    assert a.dtype == dtype and a.device == s.device
    assert a.shape == (7, m.n)
    ref = m.coefficients(s64)
    torch.testing.assert_close(a.double(), ref, rtol=0, atol=1e-5 if dtype == torch.float32 else 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("m", DTYPE_CASES, ids=repr)
def test_device_follows_s_cuda(m):
    s = random_conditions(m, 7).cuda()
    a = m.coefficients(s)
    assert a.device == s.device
    torch.testing.assert_close(a.cpu(), m.coefficients(s.cpu()), rtol=0, atol=1e-12)


@FAST
@given(s=bounded_batch)
def test_shapes_scalar_list_and_column(s):
    m = wm.Polynomial(3)
    a = m.coefficients(t64(s))
    assert a.shape == (len(s), 4)
    torch.testing.assert_close(m.coefficients(t64(s)[:, None]), a, rtol=0, atol=0)
    torch.testing.assert_close(m.coefficients(t64(s[0])), a[:1], rtol=0, atol=0)
    # python numbers use the default dtype (float32)
    assert m.coefficients(s[0]).shape == (1, 4)
    assert m.coefficients(s).dtype == torch.get_default_dtype()


def test_point_ignores_values():
    assert wm.Point().coefficients(t64([0.3, 7.0])).tolist() == [[1.0], [1.0]]
    assert wm.Point().coefficients(torch.zeros(3, 0)).shape == (3, 1)


# -- periodic wrap ---------------------------------------------------------------------------

PERIODIC_TOPOLOGIES = [wm.Ellipse(), wm.Fourier(4), *PERIODIC_SPLINES]

dyadic = st.builds(lambda k, j: k + j / 2**20, st.integers(-1000, 1000), st.integers(0, 2**20 - 1))


@FAST
@given(s=st.lists(dyadic, min_size=1, max_size=50))
def test_periodic_wrap_exact(s):
    # s, s + 1 and s − 3 are all exact in float64 for dyadic s: the wrap is exact
    x = t64(s)
    for m in PERIODIC_TOPOLOGIES:
        a = m.coefficients(x)
        assert torch.equal(a, m.coefficients(x + 1))
        assert torch.equal(a, m.coefficients(x - 3))
        assert torch.equal(a, m.coefficients(torch.remainder(x, 1.0)))


@FAST
@given(s=periodic_batch)
def test_periodic_wrap_large_values(s):
    x = t64(s)
    # wrapping a value of size |s| costs |s|·eps; the basis has slope at most 2πK or n·p
    tol = (x.abs() + 4) * 4e-16
    for m in PERIODIC_TOPOLOGIES:
        if isinstance(m, wm.BSpline) and m.degree == 0:
            continue  # piecewise constant: s ± 1 may round across a knot (exact test above)
        slope = 2 * math.pi * m.order if isinstance(m, wm.Fourier) else m.n * m.degree
        a = m.coefficients(x)
        for shifted in (x + 1, x - 3):
            err = (a - m.coefficients(shifted)).abs().amax(dim=1)
            assert (err <= slope * tol + 1e-15).all()


def test_torus_and_cylinder_wrap_per_column():
    s = t64([[0.25, 0.6], [0.9, 0.05]])
    torus = wm.Torus()
    torch.testing.assert_close(torus.coefficients(s + t64([2.0, -5.0])), torus.coefficients(s),
                               rtol=0, atol=1e-14)
    cyl = wm.Cylinder()
    torch.testing.assert_close(cyl.coefficients(s + t64([0.0, 3.0])), cyl.coefficients(s),
                               rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match=r"Cylinder: factor 0 \(Line\(\), column 0 of s\)"):
        cyl.coefficients(s + t64([1.0, 0.0]))


def test_product_basis_is_row_major_kron():
    s = t64([[0.3, 0.8], [0.0, 0.5]])
    prod = wm.Product(wm.Polynomial(2), wm.Fourier(1))
    a = prod.coefficients(s)
    b = wm.Polynomial(2).coefficients(s[:, 0])
    c = wm.Fourier(1).coefficients(s[:, 1])
    for r in range(2):
        torch.testing.assert_close(a[r], torch.kron(b[r], c[r]), rtol=0, atol=0)


# -- bad inputs ------------------------------------------------------------------------------


def test_integer_dtype_rejected():
    with pytest.raises(TypeError, match=r"floating-point tensor, got dtype torch\.int64"):
        wm.Line().coefficients(torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="floating-point"):
        wm.Torus().coefficients(torch.zeros(2, 2, dtype=torch.int32))
    with pytest.raises(TypeError, match="floating-point"):
        wm.Line().coefficients(None)
    with pytest.raises(TypeError, match="floating-point"):
        wm.Line().coefficients(True)


def test_wrong_shapes_rejected():
    with pytest.raises(ValueError, match=r"Line expects s of shape \[B\] or \[B, 1\].*"
                                         r"got shape \[4, 2\]"):
        wm.Line().coefficients(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"expects s of shape \[B, 2\].*got shape \[4\]"):
        wm.Torus().coefficients(torch.zeros(4))
    with pytest.raises(ValueError, match=r"Sphere expects s of shape \[B, 3\].*got shape \[4, 2\]"):
        wm.Sphere(2).coefficients(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"got shape \[2, 3, 1\]"):
        wm.Line().coefficients(torch.zeros(2, 3, 1))


@pytest.mark.parametrize("m", [wm.Line(), wm.Ellipse(), wm.BSpline(6, periodic=True),
                               wm.Torus(), wm.Sphere(1)], ids=repr)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_rejected_with_index(m, bad):
    s = random_conditions(m, 5).clone()
    if s.ndim == 1:
        s[3] = bad
    else:
        s[3, -1] = bad
    with pytest.raises(ValueError, match=rf"NaN or inf at s\[3\]={bad}"):
        m.coefficients(s)


def test_bounded_value_outside_rejected_with_index_and_value():
    s = t64([0.2, 1.5, 0.3, -0.25])
    with pytest.raises(ValueError, match=r"outside the bounded domain \[0, 1\] at "
                                         r"s\[1\]=1\.5, s\[3\]=-0\.25; pass clamp=True"):
        wm.Line().coefficients(s)
    with pytest.raises(ValueError, match=r"s\[1\]=1\.5"):
        wm.BSpline(6).coefficients(s)
    with pytest.raises(ValueError, match=r"Sheet: factor 1 \(Line\(\), column 1 of s\).*"
                                         r"at s\[0\]=2"):
        wm.Sheet().coefficients(t64([[0.5, 2.0]]))
    with pytest.raises(ValueError, match=r"columns 1\.\.3 of s\).*\|s\[1\]\|=2"):
        wm.Product(wm.Line(), wm.Sphere(1)).coefficients(t64([[0.5, 1, 0, 0], [0.5, 0, 2, 0]]))
    many = torch.full((8,), 3.0, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\(and 3 more\)"):
        wm.Line().coefficients(many)


def test_clamp_clamps():
    s = t64([-0.5, 0.2, 1.7])
    clamped = t64([0.0, 0.2, 1.0])
    for loose, strict in ((wm.Line(clamp=True), wm.Line()),
                          (wm.Polynomial(3, "legendre", clamp=True), wm.Polynomial(3, "legendre")),
                          (wm.BSpline(7, clamp=True), wm.BSpline(7))):
        torch.testing.assert_close(loose.coefficients(s), strict.coefficients(clamped),
                                   rtol=0, atol=0)
    s2 = t64([[-1.0, 2.0], [0.5, 0.5]])
    torch.testing.assert_close(wm.Sheet(clamp=True).coefficients(s2),
                               wm.Sheet().coefficients(t64([[0.0, 1.0], [0.5, 0.5]])))
    # periodic splines ignore clamp: they wrap
    assert not wm.BSpline(7, periodic=True, clamp=True).clamp


def test_sphere_unit_vectors():
    with pytest.raises(ValueError, match=r"unit 3-vectors.*\|s\[1\]\|=2"):
        wm.Sphere(2).coefficients(t64([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]]))
    # a near-miss says how far off it is (|s| prints as 1 to 6 digits)
    with pytest.raises(ValueError, match=r"\|s\[0\]\|=1 \(\|s\|-1=1e-07\)"):
        wm.Sphere(2).coefficients(t64([[0.0, 0.0, 1.0 + 1e-7]]))
    # float32 vectors normalised in float32 pass (tolerance sqrt(eps) of the dtype)
    v32 = torch.randn(50, 3)
    wm.Sphere(2).coefficients(v32 / v32.norm(dim=1, keepdim=True))
    v = t64([[3.0, 4.0, 0.0], [0.0, 0.0, -0.2], [1.0, 1.0, 1.0]])
    unit = v / v.norm(dim=1, keepdim=True)
    torch.testing.assert_close(wm.Sphere(3, normalize=True).coefficients(v),
                               wm.Sphere(3).coefficients(unit), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="cannot normalise zero vectors at rows \\[1\\]"):
        wm.Sphere(1, normalize=True).coefficients(t64([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="degree must be an integer >= 1, got 0"):
        wm.Polynomial(0)
    with pytest.raises(ValueError, match=r"degree must be an integer >= 1, got 2\.0"):
        wm.Polynomial(2.0)
    with pytest.raises(ValueError, match="unknown polynomial basis 'chebyshev'; "
                                         "valid: bernstein, legendre, monomial"):
        wm.Polynomial(3, "chebyshev")
    with pytest.raises(ValueError, match=r"degree 3 needs n >= 4 control points, got n=3"):
        wm.BSpline(3)
    with pytest.raises(ValueError, match=r"degree 2 needs n >= 3 control points, got n=2"):
        wm.BSpline(2, degree=2, periodic=True)
    with pytest.raises(ValueError, match="degree must be >= 0"):
        wm.BSpline(5, degree=-1)
    with pytest.raises(ValueError, match="n must be an integer"):
        wm.BSpline(5.0)
    with pytest.raises(ValueError, match="Fourier order must be an integer >= 1, got 0"):
        wm.Fourier(0)
    with pytest.raises(ValueError, match="Sphere degree must be an integer >= 1, got 0"):
        wm.Sphere(0)
    with pytest.raises(ValueError, match="at least two factors, got 1"):
        wm.Product(wm.Line())
    with pytest.raises(TypeError, match="Product factors must be Manifolds, got str"):
        wm.Product(wm.Line(), "circle")


def test_bad_frozen_and_singular_mode():
    line = wm.Polynomial(3)
    with pytest.raises(ValueError, match=r"frozen basis indices \[4\] are out of range for n=4"):
        line.preconditioner(frozen=[0, 4])
    with pytest.raises(ValueError, match=r"\[-1\] are out of range"):
        line.preconditioner(frozen=[-1])
    with pytest.raises(ValueError, match=r"\[1, 1\] contain duplicates"):
        line.preconditioner(frozen=[1, 1])
    with pytest.raises(ValueError, match="all 4 basis points are frozen"):
        line.preconditioner(frozen=[3, 2, 1, 0])
    with pytest.raises(ValueError, match="singular must be 'regularize', 'pinv' or 'raise', "
                                         "got 'svd'"):
        line.preconditioner(singular="svd")


def test_bad_measures():
    line = wm.Line()
    s = t64([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="3 samples but 2 weights"):
        line.gram((s, t64([1.0, 1.0])))
    with pytest.raises(ValueError, match="non-negative"):
        line.gram((s, t64([1.0, -1.0, 1.0])))
    with pytest.raises(ValueError, match="non-negative, not all 0"):
        line.gram((s, t64([0.0, 0.0, 0.0])))
    with pytest.raises(ValueError, match="finite"):
        line.gram((s, t64([1.0, float("nan"), 1.0])))
    with pytest.raises(ValueError, match="no samples"):
        line.gram(torch.zeros(0, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"outside the bounded domain.*s\[1\]=1\.2"):
        line.gram(t64([0.5, 1.2]))
    with pytest.raises(TypeError, match="a measure must be a tensor of samples"):
        line.gram(object())
    with pytest.raises(ValueError, match="3 samples but 2 weights"):
        line.preconditioner((s, t64([1.0, 1.0])))
