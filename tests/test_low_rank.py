"""Low-rank manifolds: layers against a per-example reference, the exact metric against a
brute-force Jacobian, the steepest-descent step, conversion, export, saving and bad input."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightmanifold as wm
from weightmanifold.layers import (
    LowRankConv1d,
    LowRankConv2d,
    LowRankEmbedding,
    LowRankLinear,
    LowRankOp,
    LowRankTransposedLinear,
)
from weightmanifold.low_rank_metric import (
    LowRankGeometry,
    _damping,
    _kernels,
    metric_apply,
    steepest_descent,
)

MANIFOLDS = [wm.Ellipse(), wm.Line(), wm.BSpline(5, degree=3), wm.Polynomial(2), wm.Torus(),
             wm.Point()]


pytestmark = pytest.mark.usefixtures("float64")


def randomise(layer: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return layer


def weight_at(layer: LowRankOp, a: torch.Tensor) -> torch.Tensor:
    """W0 + sum_k a_k U_k V_k with an explicit loop over basis points and groups."""
    g = getattr(layer, "groups", 1)
    w = layer.weight.clone()
    p = w.shape[0] // g
    rows = w.reshape(g, p, -1).clone()
    for k in range(layer.manifold.n):
        up = layer.weight_up[k]
        down = layer.weight_down[k].reshape(g, layer.rank, -1)
        for j in range(g):
            rows[j] = rows[j] + a[k] * up[j * p:(j + 1) * p] @ down[j]
    return rows.reshape(w.shape)


def per_example(layer: LowRankOp, x: torch.Tensor, s: torch.Tensor, op) -> torch.Tensor:
    a = layer.manifold.coefficients(s)
    outs = []
    for i in range(len(x)):
        bias = None if layer.bias is None else sum(a[i, k] * layer.bias[k]
                                                   for k in range(layer.manifold.n))
        outs.append(op(x[i:i + 1], weight_at(layer, a[i]), bias))
    return torch.cat(outs)


def conditions(manifold: wm.Manifold, b: int) -> torch.Tensor:
    s = torch.rand(b, manifold.dim) if manifold.dim > 1 else torch.rand(b)
    return s


def mixed(layer: LowRankOp) -> LowRankOp:
    layer.mix = "input"  # force the input-mixed path of a convolution
    return layer


CASES = {
    "linear": (lambda m: LowRankLinear(m, 6, 5, rank=2), (7, 6),
               lambda layer: lambda x, w, b: F.linear(x, w, b)),
    "linear-3d": (lambda m: LowRankLinear(m, 6, 5, bias=False, rank=3), (4, 3, 6),
                  lambda layer: lambda x, w, b: F.linear(x, w, b)),
    "conv2d": (lambda m: LowRankConv2d(m, 3, 6, 3, stride=2, padding=1, rank=2), (5, 3, 7, 7),
               lambda layer: lambda x, w, b: layer._conv(x, w, b, layer.groups)),
    "conv2d-groups": (lambda m: LowRankConv2d(m, 4, 6, 3, padding="same", groups=2, rank=2,
                                              padding_mode="reflect"), (5, 4, 6, 6),
                      lambda layer: lambda x, w, b: layer._conv(x, w, b, layer.groups)),
    "conv2d-narrow-input": (lambda m: LowRankConv2d(m, 1, 8, 3, padding=1, rank=3),
                            (5, 1, 6, 6),
                            lambda layer: lambda x, w, b: layer._conv(x, w, b, layer.groups)),
    "conv2d-groups-input-mixed": (lambda m: mixed(LowRankConv2d(m, 4, 6, 3, groups=2, rank=2)),
                                  (5, 4, 6, 6),
                                  lambda layer: lambda x, w, b: layer._conv(x, w, b,
                                                                            layer.groups)),
    "conv1d": (lambda m: LowRankConv1d(m, 3, 4, 3, dilation=2, rank=2), (5, 3, 11),
               lambda layer: lambda x, w, b: layer._conv(x, w, b, layer.groups)),
    "embedding": (lambda m: LowRankEmbedding(m, 10, 4, rank=2), None,
                  lambda layer: lambda x, w, b: F.embedding(x, w)),
    "transposed": (lambda m: LowRankTransposedLinear(m, 6, 5, rank=2), (4, 2, 6),
                   lambda layer: lambda x, w, b: x @ w + b),
}


@pytest.mark.parametrize("manifold", MANIFOLDS, ids=repr)
@pytest.mark.parametrize("case", list(CASES))
def test_every_path_equals_the_per_example_reference(case, manifold):
    make, shape, op = CASES[case]
    layer = randomise(make(manifold))
    x = torch.randint(0, 10, (6, 3)) if shape is None else torch.randn(shape)
    s = conditions(manifold, len(x))
    want = per_example(layer, x, s, op(layer))
    assert torch.allclose(layer(x, s), want, atol=1e-10, rtol=0)  # basis path
    grouped = wm.condition(layer, s, grouped=True)
    assert torch.allclose(layer(x, grouped), want, atol=1e-10, rtol=0)  # shared / basis
    one = s[:1]
    assert torch.allclose(layer(x, one), per_example(layer, x, one.expand(len(x), *one.shape[1:]),
                                                     op(layer)), atol=1e-10, rtol=0)  # single


def test_gradients_against_the_reference_and_gradcheck():
    layer = randomise(LowRankConv2d(wm.Ellipse(), 2, 3, 3, padding=1, rank=2))
    x = torch.randn(4, 2, 5, 5, requires_grad=True)
    s = torch.rand(4)
    op = CASES["conv2d"][2](layer)
    out = layer(x, s)
    g_fast = torch.autograd.grad(out.pow(2).sum(), [x, *layer.parameters()])
    g_ref = torch.autograd.grad(per_example(layer, x, s, op).pow(2).sum(),
                                [x, *layer.parameters()])
    for a, b in zip(g_fast, g_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-9)
    small = randomise(LowRankLinear(wm.Ellipse(), 3, 2, rank=1))
    xs = torch.randn(3, 3, requires_grad=True)
    st_ = torch.rand(3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, s: small(x, s), (xs, st_))


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 6), out=st.integers(1, 6), inp=st.integers(1, 6), data=st.data())
def test_linear_any_shape_and_rank(b, out, inp, data):
    rank = data.draw(st.integers(1, min(out, inp)))
    layer = randomise(LowRankLinear(wm.Line(), inp, out, rank=rank))
    x = torch.randn(b, inp)
    s = torch.rand(b)
    want = per_example(layer, x, s, lambda x, w, bias: F.linear(x, w, bias))
    assert torch.allclose(layer(x, s), want, atol=1e-10, rtol=0)


# -- the metric ------------------------------------------------------------------------------
def brute_force(manifold, w0, u, v):
    """∫ JᵀJ ds and ∫ J ds by exact quadrature of the Jacobian of vec W(s) in (W0, U, V)."""
    sizes = [w0.numel(), u.numel(), v.numel()]
    theta = torch.cat([w0.flatten(), u.flatten(), v.flatten()])

    def weight(t, a):
        t0, t1, t2 = t.split(sizes)
        return (t0.reshape(w0.shape) + torch.einsum("k,kgpr,kgrq->gpq", a, t1.reshape(u.shape),
                                                    t2.reshape(v.shape))).flatten()

    nodes, weights = manifold.quadrature()
    metric = torch.zeros(theta.numel(), theta.numel())
    mean = 0
    for a, w in zip(manifold.coefficients(nodes), weights, strict=True):
        jac = torch.autograd.functional.jacobian(lambda t, a=a: weight(t, a), theta)
        metric += w * jac.T @ jac
        mean = mean + w * jac
    return metric, mean, sizes


def brute_force_metric(manifold, w0, u, v):
    metric, _, sizes = brute_force(manifold, w0, u, v)
    return metric, sizes


def random_factors(manifold, g=2, p=3, q=4, r=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = manifold.n
    return (torch.randn(g, p, q, generator=gen), torch.randn(n, g, p, r, generator=gen),
            torch.randn(n, g, r, q, generator=gen))


def split(x, sizes, shapes):
    return [t.reshape(s) for t, s in zip(x.split(sizes), shapes, strict=True)]


@pytest.mark.parametrize("manifold", [wm.Ellipse(), wm.BSpline(4, degree=2), wm.Line()],
                         ids=repr)
def test_metric_equals_brute_force_jacobian_metric(manifold):
    w0, u, v = random_factors(manifold)
    metric, sizes = brute_force_metric(manifold, w0, u, v)
    geo = LowRankGeometry.of(manifold)
    d = torch.randn(metric.shape[0])
    d0, du, dv = split(d, sizes, [w0.shape, u.shape, v.shape])
    got = torch.cat([t.flatten() for t in metric_apply(geo, u, v, d0, du, dv)])
    assert torch.allclose(got, metric @ d, atol=1e-11)
    # without W0 as a parameter: the factor block of the same metric
    _, mu, mv = metric_apply(geo, u, v, None, du, dv)
    block = metric[sizes[0]:, sizes[0]:] @ d[sizes[0]:]
    assert torch.allclose(torch.cat([mu.flatten(), mv.flatten()]), block, atol=1e-11)


def damped(metric, sizes, u, v, manifold, damping, train_w0=True):
    geo = LowRankGeometry.of(manifold)
    ku, kv = _kernels(geo.covariance if train_w0 else geo.gram, u, v)
    lam = _damping(ku, kv, damping, u.shape[0] * u.shape[-1])
    diag = torch.zeros(metric.shape[0])
    g = u.shape[1]
    diag[sizes[0]:sizes[0] + sizes[1]] = lam.reshape(1, g, 1, 1).expand(u.shape).flatten()
    diag[sizes[0] + sizes[1]:] = lam.reshape(1, g, 1, 1).expand(v.shape).flatten()
    return metric + torch.diag(diag)


@pytest.mark.parametrize("manifold", [wm.Ellipse(), wm.BSpline(4, degree=2)], ids=repr)
def test_joint_step_is_the_exact_steepest_descent(manifold):
    """The joint step solves the damped exact metric, and no direction of the same metric
    length decreases the linearised loss more."""
    w0, u, v = random_factors(manifold, seed=1)
    metric, sizes = brute_force_metric(manifold, w0, u, v)
    m_lam = damped(metric, sizes, u, v, manifold, 1e-2)
    grad = torch.randn(metric.shape[0])
    g0, gu, gv = split(grad, sizes, [w0.shape, u.shape, v.shape])
    out = steepest_descent(LowRankGeometry.of(manifold), u, v, g0, gu, gv, mode="joint",
                           iterations=400, tolerance=1e-13)
    step = torch.cat([t.flatten() for t in out])
    exact = torch.linalg.solve(m_lam, grad)
    assert torch.allclose(step, exact, rtol=1e-8, atol=1e-9)
    best = float(grad @ step)
    length = float(step @ m_lam @ step)
    chol = torch.linalg.cholesky(m_lam)
    dirs = torch.linalg.solve_triangular(chol.T, torch.randn(metric.shape[0], 2000),
                                         upper=True)  # random directions, M-normalised below
    dirs = dirs / (dirs * (m_lam @ dirs)).sum(0).sqrt() * length ** 0.5
    assert float((grad @ dirs).max()) <= best * (1 + 1e-10)
    block = torch.cat([t.flatten() for t in steepest_descent(
        LowRankGeometry.of(manifold), u, v, g0, gu, gv, mode="block")])
    block = block / float(block @ m_lam @ block) ** 0.5 * length ** 0.5
    assert float(grad @ block) < best * (1 - 1e-4)  # the block step is not the exact one


def test_block_step_is_the_steepest_descent_of_the_metric_without_factor_cross_terms():
    """The block step solves M̃ = M minus the U–V cross blocks of the metric's variance part
    (built here from brute-force Jacobians), which equals M on moves of W0 with one factor."""
    manifold = wm.Ellipse()
    w0, u, v = random_factors(manifold, seed=2)
    metric, mean_jac, sizes = brute_force(manifold, w0, u, v)
    variance = metric - mean_jac.T @ mean_jac
    cut = metric.clone()
    iu = slice(sizes[0], sizes[0] + sizes[1])
    iv = slice(sizes[0] + sizes[1], None)
    cut[iu, iv] -= variance[iu, iv]
    cut[iv, iu] -= variance[iv, iu]
    grad = torch.randn(metric.shape[0])
    g0, gu, gv = split(grad, sizes, [w0.shape, u.shape, v.shape])
    step = torch.cat([t.flatten() for t in steepest_descent(
        LowRankGeometry.of(manifold), u, v, g0, gu, gv, mode="block")])
    exact = torch.linalg.solve(damped(cut, sizes, u, v, manifold, 1e-2), grad)
    assert torch.allclose(step, exact, rtol=1e-8, atol=1e-9)
    d = torch.randn(metric.shape[0])
    d[iv] = 0  # a move of W0 and U only: both metrics agree
    assert float(d @ cut @ d) == pytest.approx(float(d @ metric @ d), rel=1e-12)


def test_frozen_w0_uses_the_gram_matrix():
    manifold = wm.Ellipse()
    w0, u, v = random_factors(manifold, seed=3)
    metric, sizes = brute_force_metric(manifold, w0, u, v)
    m_lam = damped(metric, sizes, u, v, manifold, 1e-2, train_w0=False)
    fac = slice(sizes[0], None)
    grad = torch.randn(metric.shape[0] - sizes[0])
    gu, gv = split(grad, sizes[1:], [u.shape, v.shape])
    none, du, dv = steepest_descent(LowRankGeometry.of(manifold), u, v, None, gu, gv,
                                    mode="joint", iterations=400, tolerance=1e-13)
    assert none is None
    exact = torch.linalg.solve(m_lam[fac, fac], grad)
    assert torch.allclose(torch.cat([du.flatten(), dv.flatten()]), exact, rtol=1e-8, atol=1e-9)


def test_zero_delta_start_is_finite_and_moves_only_the_up_projection():
    manifold = wm.Ellipse()
    w0, u, v = random_factors(manifold, seed=4)
    u = torch.zeros_like(u)
    g0 = torch.randn_like(w0)
    gu = torch.randn_like(u)
    gv = torch.zeros_like(v)  # ∂L/∂V = Uᵀ(...) = 0 at U = 0
    for mode in ("block", "joint"):
        d0, du, dv = steepest_descent(LowRankGeometry.of(manifold), u, v, g0, gu, gv, mode=mode)
        assert all(torch.isfinite(t).all() for t in (d0, du, dv))
        assert torch.count_nonzero(dv) == 0 and du.abs().sum() > 0


# -- conversion, training, export, saving ---------------------------------------------------
def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 6), nn.LayerNorm(6),
                         nn.Linear(6, 3))


def test_pretrained_network_is_itself_at_every_s_and_at_exports_plain():
    torch.manual_seed(0)
    net = cnn()
    model = wm.manifoldify(net, wm.Ellipse(), rank=2)
    x = torch.randn(5, 2, 6, 6)
    s = torch.rand(5)
    assert torch.allclose(model(x, s=s), net(x), atol=1e-12)
    randomise(model)
    for i in range(len(x)):
        plain = wm.at(model, s[i])
        assert not any(isinstance(m, wm.ManifoldModule) for m in plain.modules())
        assert torch.allclose(plain(x[i:i + 1]), model(x[i:i + 1], s=s[i:i + 1]), atol=1e-10)
    assert isinstance(model.module[6], wm.ManifoldLayerNorm)  # vectors stay full rank


@pytest.mark.parametrize("eps", [0.0, 0.3, 1.0])
def test_modulated_low_rank_init_keeps_the_mean_network(eps):
    torch.manual_seed(1)
    net = nn.Linear(40, 30)
    model = wm.manifoldify(net, wm.Ellipse(), rank=4, init=eps).requires_grad_(False)
    layer = model.module
    nodes, weights = wm.Ellipse().quadrature()
    a = wm.Ellipse().coefficients(nodes)
    mean = sum(w * weight_at(layer, ak) for ak, w in zip(a, weights, strict=True))
    assert torch.allclose(mean, net.weight, atol=1e-12)
    spread = sum(w * (weight_at(layer, ak) - net.weight.detach()).pow(2).mean()
                 for ak, w in zip(a, weights, strict=True)) ** 0.5
    rms = net.weight.detach().pow(2).mean() ** 0.5
    assert float(spread / rms) == pytest.approx(eps, abs=0.35 * eps + 1e-12)


def test_training_step_with_preconditioning_and_ties():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(12, 8)
            self.att = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 12, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, x):
            h = self.emb(x)
            return self.head(self.att(h, h, h)[0])

    torch.manual_seed(2)
    model = wm.manifoldify(LM(), wm.Line(), rank=2, init=0.5)
    assert model.module.head.weight_up is model.module.emb.weight_up
    assert len(wm.preconditioning.low_rank_layers(model)) == 5  # q, k, v, out, tied emb/head
    x = torch.randint(0, 12, (4, 5))
    s = torch.rand(4)
    want = torch.cat([wm.at(model, s[i])(x[i:i + 1]) for i in range(4)])
    assert torch.allclose(model(x, s=s), want, atol=1e-10)
    for mode in ("block", "joint"):
        opt = wm.Preconditioned(torch.optim.SGD(model.parameters(), lr=1e-3), model,
                                low_rank=mode)
        before = F.cross_entropy(model(x, s=s).flatten(0, 1), x.flatten())
        before.backward()
        opt.step()
        opt.zero_grad()
        after = F.cross_entropy(model(x, s=s).flatten(0, 1), x.flatten())
        assert after < before


def test_preconditioned_equals_the_functional_step_and_runs_once():
    torch.manual_seed(3)
    model = wm.manifoldify(cnn(), wm.Ellipse(), rank=2, init=0.2)
    x, s = torch.randn(4, 2, 6, 6), torch.rand(4)
    model(x, s=s).pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt = wm.Preconditioned(torch.optim.SGD(model.parameters(), lr=0.1), model)
    opt.precondition()
    once = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.precondition()  # a second call does nothing
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, once[n])
        p.grad.copy_(grads[n])
    wm.precondition_gradients(model)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, once[n], atol=1e-12)
    layer = model.module[0]
    u, v = layer.factors()[1:]
    _, du, _ = steepest_descent(LowRankGeometry.of(wm.Ellipse()), u, v,
                                  grads["module.0.weight"].reshape(layer.factors()[0].shape),
                                  grads["module.0.weight_up"].reshape(u.shape),
                                  grads["module.0.weight_down"].reshape(v.shape))
    assert torch.allclose(once["module.0.weight_up"], du.reshape(layer.weight_up.shape))


def test_frozen_w0_fine_tuning_trains_only_the_deltas():
    torch.manual_seed(4)
    model = wm.manifoldify(cnn(), wm.Ellipse(), rank=2)
    for layer in wm.preconditioning.low_rank_layers(model):
        layer.weight.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = wm.Preconditioned(torch.optim.SGD(trained, lr=0.05), model)
    frozen = model.module[0].weight.clone()
    x, s = torch.randn(6, 2, 6, 6), torch.rand(6)
    target = torch.randn(6, 3) * s[:, None]
    losses = []
    for _ in range(5):
        loss = F.mse_loss(model(x, s=s), target)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(model.module[0].weight, frozen)
    assert losses[-1] < losses[0]


def test_preconditioning_cost_is_a_small_share_of_a_step():
    """Counted FLOPs: the block step of every layer is under 5 % of a batch-64 training step."""
    from torch.utils.flop_counter import FlopCounterMode

    from weightmanifold.experiments.models import paper_cnn

    torch.set_default_dtype(torch.float32)
    torch.manual_seed(5)
    model = wm.manifoldify(paper_cnn(1, 28, 10, (32, 64, 128), 512), wm.Ellipse(), rank=8,
                           init=0.1)
    x, s = torch.randn(64, 1, 28, 28), torch.rand(64)
    with FlopCounterMode(display=False) as step:
        F.cross_entropy(model(x, s=s), torch.zeros(64, dtype=torch.long)).backward()
    opt = wm.Preconditioned(torch.optim.SGD(model.parameters(), lr=0.1), model)
    with FlopCounterMode(display=False) as pre:
        opt.precondition()
    assert pre.get_total_flops() < 0.05 * step.get_total_flops()


def test_compile_and_export_are_clean():
    torch.manual_seed(6)
    model = wm.manifoldify(cnn(), wm.Ellipse(), rank=2, init=0.3)
    x, s = torch.randn(4, 2, 6, 6), torch.rand(4)
    explain = torch._dynamo.explain(model)(x, s=s)
    assert explain.graph_break_count == 0
    program = torch.export.export(model, (x,), {"s": s})
    assert torch.allclose(program.module()(x, s=s), model(x, s=s), atol=1e-5)


def test_state_dict_round_trip_and_refusals():
    torch.manual_seed(7)
    model = wm.manifoldify(cnn(), wm.Ellipse(), rank=2, init=0.3)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    other = wm.manifoldify(cnn(), wm.Ellipse(), rank=2)
    other.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    x, s = torch.randn(3, 2, 6, 6), torch.rand(3)
    assert torch.equal(other(x, s=s), model(x, s=s))
    full = wm.manifoldify(cnn(), wm.Ellipse())
    with pytest.raises(RuntimeError, match=r"saved from a low-rank manifold model.*rank 2"
                                           r".*full-rank"):
        full.load_state_dict(model.state_dict())
    with pytest.raises(RuntimeError, match=r"saved from a full-rank manifold model.*low-rank "
                                           r"\(rank 2\)"):
        model.load_state_dict(full.state_dict())
    rank3 = wm.manifoldify(cnn(), wm.Ellipse(), rank=3)
    with pytest.raises(RuntimeError, match=r"saved with rank 2.*rank 3"):
        rank3.load_state_dict(model.state_dict())


def test_dense_basis_is_the_same_manifold():
    layer = randomise(LowRankLinear(wm.Ellipse(), 5, 4, rank=2))
    full = wm.ManifoldLinear(wm.Ellipse(), 5, 4)
    with torch.no_grad():
        full.weight.copy_(layer.dense_basis())
        full.bias.copy_(layer.bias)
    x, s = torch.randn(6, 5), torch.rand(6)
    assert torch.allclose(full(x, s), layer(x, s), atol=1e-12)


@pytest.mark.parametrize("rank, error, match", [
    (0, ValueError, "rank must be >= 1"),
    (-2, ValueError, "rank must be >= 1"),
    (1.5, TypeError, "rank must be an integer"),
    (True, TypeError, "rank must be an integer"),
    (9, ValueError, r"^0: LowRankConv2d: rank 9 exceeds the layer's dimensions.*8 x 18"),
])
def test_bad_rank(rank, error, match):
    with pytest.raises(error, match=match):
        wm.manifoldify(cnn(), wm.Ellipse(), rank=rank)


def test_rank_per_layer_with_a_callable():
    model = wm.manifoldify(cnn(), wm.Ellipse(),
                           rank=lambda name, m: None if name == "0"
                           else min(m.weight.shape[0], m.weight[0].numel()))
    assert type(model.module[0]) is wm.ManifoldConv2d
    assert isinstance(model.module[2], LowRankConv2d) and model.module[2].rank == 8
    assert model.module[5].rank == 6
    with pytest.raises(TypeError, match=r"^0: LowRankConv2d: rank must be an integer, got .8."):
        wm.manifoldify(cnn(), wm.Ellipse(), rank=lambda name, m: "8")


def test_low_rank_with_measure_or_frozen_is_refused():
    model = wm.manifoldify(cnn(), wm.Ellipse(), rank=2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"low-rank layers .* full-rank manifolds only"):
        wm.Preconditioned(sgd, model, frozen=[0])
    with pytest.raises(ValueError, match="'block' or 'joint'"):
        wm.Preconditioned(sgd, model, low_rank="exact")
    with pytest.raises(ValueError, match="damping must be > 0"):
        wm.Preconditioned(sgd, model, damping=0.0)
