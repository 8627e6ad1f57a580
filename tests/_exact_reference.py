"""Slow, exact, independent references for the topology tests (not collected by pytest).

Nothing here imports weightmanifold: B-spline bases are rebuilt from scratch with
Cox–de Boor recursion on polynomials with ``fractions.Fraction`` coefficients (one
polynomial per knot span, in the span-local variable ``u ∈ [0, 1]``), integrated
exactly; quadrature rules come straight from ``numpy.polynomial.legendre.leggauss``.
"""

from __future__ import annotations

from fractions import Fraction
from itertools import pairwise

import numpy as np

Poly = list  # ascending Fraction coefficients in the span-local variable u

# -- exact linear algebra on Fractions ------------------------------------------------------


def frac(x: object) -> Fraction:
    return x if isinstance(x, Fraction) else Fraction(x)


def fmatrix(rows: list[list[object]]) -> list[list[Fraction]]:
    return [[frac(v) for v in row] for row in rows]


def to_float(rows: list[list[Fraction]]) -> np.ndarray:
    return np.array([[float(v) for v in row] for row in rows], dtype=np.float64)


def finv(rows: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact inverse by Gauss–Jordan elimination (raises ZeroDivisionError if singular)."""
    n = len(rows)
    a = [[frac(v) for v in row] + [Fraction(int(i == j)) for j in range(n)]
         for i, row in enumerate(rows)]
    for col in range(n):
        piv = next(r for r in range(col, n) if a[r][col] != 0)
        a[col], a[piv] = a[piv], a[col]
        p = a[col][col]
        a[col] = [v / p for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0:
                f = a[r][col]
                a[r] = [v - f * w for v, w in zip(a[r], a[col], strict=True)]
    return [row[n:] for row in a]


def fmatmul(a: list[list[Fraction]], b: list[list[Fraction]]) -> list[list[Fraction]]:
    return [[sum((a[i][k] * b[k][j] for k in range(len(b))), Fraction(0))
             for j in range(len(b[0]))] for i in range(len(a))]


def fkron(a: list[list[Fraction]], b: list[list[Fraction]]) -> list[list[Fraction]]:
    return [[a[i][j] * b[k][m] for j in range(len(a[0])) for m in range(len(b[0]))]
            for i in range(len(a)) for k in range(len(b))]


# -- polynomials --------------------------------------------------------------------------


def padd(a: Poly, b: Poly) -> Poly:
    out = [Fraction(0)] * max(len(a), len(b))
    for i, v in enumerate(a):
        out[i] += v
    for i, v in enumerate(b):
        out[i] += v
    return out


def pmul(a: Poly, b: Poly) -> Poly:
    if not a or not b:
        return []
    out = [Fraction(0)] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def pint01(a: Poly) -> Fraction:
    """∫_0^1 a(u) du, exactly."""
    return sum((c / (k + 1) for k, c in enumerate(a)), Fraction(0))


def peval(a: Poly, u: float) -> float:
    return float(sum(float(c) * u**k for k, c in enumerate(a)))


# -- B-splines by Cox–de Boor ---------------------------------------------------------------


def cox_de_boor_pieces(knots: list[Fraction], p: int) -> dict[int, tuple[Fraction, list[Poly]]]:
    """Degree-``p`` B-splines on ``knots``, one polynomial per non-empty span.

    Returns ``{span k: (width h_k, [N_{i,p} restricted to span k as a polynomial in
    u, where x = t_k + h_k u, for i = 0 .. len(knots) - p - 2])}``.
    """
    t = [frac(v) for v in knots]
    out = {}
    for k in range(len(t) - 1):
        lo, hi = t[k], t[k + 1]
        if hi <= lo:
            continue
        h = hi - lo
        funcs: list[Poly] = [[Fraction(1)] if i == k else [] for i in range(len(t) - 1)]
        for q in range(1, p + 1):
            new = []
            for i in range(len(t) - 1 - q):
                term: Poly = []
                d1 = t[i + q] - t[i]
                if d1 != 0 and funcs[i]:
                    term = padd(term, pmul([(lo - t[i]) / d1, h / d1], funcs[i]))
                d2 = t[i + q + 1] - t[i + 1]
                if d2 != 0 and funcs[i + 1]:
                    term = padd(term, pmul([(t[i + q + 1] - lo) / d2, -h / d2], funcs[i + 1]))
                new.append(term)
            funcs = new
        out[k] = (h, funcs)
    return out


def clamped_pieces(n: int, p: int) -> list[tuple[Fraction, Fraction, list[Poly]]]:
    """Clamped uniform B-splines with ``n`` control points on [0, 1]: ``[(lo, h, funcs)]``."""
    m = n - p
    knots = [Fraction(0)] * p + [Fraction(j, m) for j in range(m + 1)] + [Fraction(1)] * p
    pieces = cox_de_boor_pieces(knots, p)
    return [(knots[k], h, funcs) for k, (h, funcs) in sorted(pieces.items())]


def periodic_pieces(n: int, p: int) -> list[tuple[Fraction, Fraction, list[Poly]]]:
    """Periodic uniform B-splines with ``n`` control points, h = 1/n: ``[(lo, h, funcs)]``.

    Column ``c`` is the 1-periodic sum over integer shifts of the cardinal B-spline
    (knots 0..p+1 in units of h) started at ``(c - p) h``, i.e. with support
    ``[(c - p) h, (c + 1) h]`` mod 1.
    """
    card = cox_de_boor_pieces([Fraction(j) for j in range(p + 2)], p)
    card_piece = [card[j][1][0] for j in range(p + 1)]  # cardinal spline on [j, j+1]
    h = Fraction(1, n)
    out = []
    for k in range(n):
        funcs: list[Poly] = []
        for c in range(n):
            f: Poly = []
            for a in range(-2, 3):  # integer shifts of the period
                j = k - c + p - n * a
                if 0 <= j <= p:
                    f = padd(f, card_piece[j])
            funcs.append(f)
        out.append((k * h, h, funcs))
    return out


def pieces_gram(pieces, lo: Fraction = Fraction(0), hi: Fraction = Fraction(1)):
    """Exact ∫_lo^hi a_i a_j dx over whole spans inside [lo, hi] (span ends must align)."""
    n = len(pieces[0][2])
    g = [[Fraction(0)] * n for _ in range(n)]
    for start, h, funcs in pieces:
        if start < lo or start + h > hi:
            continue
        for i in range(n):
            if not funcs[i]:
                continue
            for j in range(n):
                if funcs[j]:
                    g[i][j] += h * pint01(pmul(funcs[i], funcs[j]))
    return g


def exact_bspline_gram(n: int, p: int, periodic: bool) -> list[list[Fraction]]:
    pieces = periodic_pieces(n, p) if periodic else clamped_pieces(n, p)
    return pieces_gram(pieces)


def eval_pieces(pieces, x: np.ndarray) -> np.ndarray:
    """Evaluate the basis at points x ∈ [0, 1] (right end belongs to the last span)."""
    n = len(pieces[0][2])
    out = np.zeros((len(x), n))
    for r, xv in enumerate(x):
        for start, h, funcs in pieces:
            if float(start) <= xv < float(start + h) or (
                xv == 1.0 and start + h == 1
            ):
                u = (xv - float(start)) / float(h)
                out[r] = [peval(f, u) if f else 0.0 for f in funcs]
                break
    return out


# -- quadrature -----------------------------------------------------------------------------


def gl(m: int, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """m-point Gauss–Legendre on [a, b] from numpy (weights sum to b − a)."""
    x, w = np.polynomial.legendre.leggauss(m)
    return a + 0.5 * (b - a) * (x + 1.0), 0.5 * (b - a) * w


def panel_gl(breaks: list[float], m: int) -> tuple[np.ndarray, np.ndarray]:
    rules = [gl(m, a, b) for a, b in pairwise(breaks) if b > a]
    return np.concatenate([x for x, _ in rules]), np.concatenate([w for _, w in rules])
