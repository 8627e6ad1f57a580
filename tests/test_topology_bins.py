"""Bins: piecewise-constant experts with chosen breakpoints, against obvious references."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import weightmanifold as wm


def reference(edges: list[float], s: float) -> list[float]:
    """The bin of s by a linear scan (the last bin is closed at 1)."""
    bounds = [0.0, *edges, 1.0]
    for k in range(len(bounds) - 1):
        if bounds[k] <= s < bounds[k + 1] or (k == len(bounds) - 2 and s == 1.0):
            return [1.0 if j == k else 0.0 for j in range(len(bounds) - 1)]
    raise AssertionError(s)


edges_strategy = st.lists(st.floats(0.001, 0.999), max_size=6, unique=True).map(sorted).filter(
    lambda e: all(b - a > 1e-6 for a, b in itertools.pairwise(e)))


@settings(max_examples=60, deadline=None)
@given(edges=edges_strategy, s=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20))
def test_coefficients_are_the_indicator_of_the_bin(edges, s):
    m = wm.Bins(edges)
    a = m.coefficients(torch.tensor(s, dtype=torch.float64))
    assert a.shape == (len(s), len(edges) + 1)
    assert a.tolist() == [reference(edges, v) for v in s]


@settings(max_examples=40, deadline=None)
@given(edges=edges_strategy)
def test_gram_is_diagonal_of_bin_widths_and_quadrature_agrees(edges):
    m = wm.Bins(edges)
    widths = np.diff([0.0, *edges, 1.0])
    torch.testing.assert_close(m.gram(), torch.tensor(np.diag(widths)), rtol=0, atol=1e-15)
    torch.testing.assert_close(m.quadrature_gram(), m.gram(), rtol=0, atol=1e-15)
    torch.testing.assert_close(m.constant(), torch.ones(m.n, dtype=torch.float64))


def test_gram_exact_fractions_and_empirical_measure():
    m = wm.Bins([0.25, 0.625])
    exact = [Fraction(1, 4), Fraction(3, 8), Fraction(3, 8)]
    assert m.gram().diagonal().tolist() == [float(f) for f in exact]
    # an empirical measure: the share of samples in each bin
    samples = torch.tensor([0.1, 0.2, 0.3, 0.9], dtype=torch.float64)
    torch.testing.assert_close(m.gram(samples), torch.diag(torch.tensor(
        [0.5, 0.25, 0.25], dtype=torch.float64)))
    torch.testing.assert_close(m.preconditioner(), torch.diag(torch.tensor(
        [4.0, 8 / 3, 8 / 3], dtype=torch.float64)))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_uniform_breakpoints_equal_the_degree_zero_bspline(n):
    bins = wm.Bins([k / n for k in range(1, n)])
    spline = wm.BSpline(n, degree=0)
    s = torch.rand(500, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    s = torch.cat([s, torch.tensor([0.0, 1.0], dtype=torch.float64)])
    torch.testing.assert_close(bins.coefficients(s), spline.coefficients(s))
    torch.testing.assert_close(bins.gram(), spline.gram())


def test_domain_identity_and_registry():
    m = wm.Bins([0.3])
    with pytest.raises(ValueError, match=r"outside the bounded domain \[0, 1\]"):
        m.coefficients(torch.tensor([1.2]))
    clamped = wm.Bins([0.3], clamp=True).coefficients(torch.tensor([-0.5, 1.5]))
    assert clamped.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert m == wm.Bins((0.3,)) and m != wm.Bins([0.4]) and m != wm.Bins([0.3], clamp=True)
    assert hash(m) == hash(wm.Bins([0.3]))
    assert repr(m) == "Bins(edges=[0.3])"
    assert wm.topology.make_manifold("bins", edges=[0.3]) == m
    assert wm.Bins().n == 1  # no breakpoint: one network


@pytest.mark.parametrize(
    ("edges", "error", "match"),
    [
        ([0.5, 0.5], ValueError, "strictly increasing"),
        ([0.7, 0.2], ValueError, "strictly increasing"),
        ([0.0], ValueError, r"inside \(0, 1\)"),
        ([1.0], ValueError, r"inside \(0, 1\)"),
        ([float("nan")], ValueError, r"inside \(0, 1\)"),
        ("0.5", TypeError, "sequence of numbers"),
        (0.5, TypeError, "sequence of numbers"),
        ([True], TypeError, r"edges\[0\] must be a real number"),
    ],
)
def test_bad_breakpoints(edges, error, match):
    with pytest.raises(error, match=match):
        wm.Bins(edges)


def test_experts_layer_selects_one_network_per_example_and_round_trips(tmp_path):
    torch.manual_seed(0)
    layer = wm.ManifoldLinear(wm.Bins([0.3]), 4, 3, dtype=torch.float64)
    x = torch.randn(6, 4, dtype=torch.float64)
    s = torch.tensor([0.0, 0.1, 0.29, 0.3, 0.6, 1.0], dtype=torch.float64)
    out = layer(x, s)
    for i in range(6):
        k = 0 if s[i] < 0.3 else 1
        expected = x[i] @ layer.weight[k].T + layer.bias[k]
        torch.testing.assert_close(out[i], expected)
    torch.save(layer.state_dict(), tmp_path / "l.pt")
    other = wm.ManifoldLinear(wm.Bins([0.3]), 4, 3, dtype=torch.float64)
    other.load_state_dict(torch.load(tmp_path / "l.pt"))
    torch.testing.assert_close(other(x, s), out)
    with pytest.raises(Exception, match="Bins"):
        wm.ManifoldLinear(wm.Bins([0.4]), 4, 3, dtype=torch.float64).load_state_dict(
            torch.load(tmp_path / "l.pt"))
