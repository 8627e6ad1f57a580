"""Local support: B-spline batches grouped by window run p + 1 basis tensors per example."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightmanifold as wm
from weightmanifold.layers.conditioning import Windows

pytestmark = pytest.mark.usefixtures("float64")


@pytest.fixture
def free_calls(monkeypatch):
    """Calls cost nothing in the path cost models: the tiny test layers choose their paths
    by arithmetic and tensor traffic alone, as before the per-call cost (which makes the
    basis path or a few merged runs cheapest for nearly all of them)."""
    from weightmanifold.layers.conv import _ManifoldConvNd
    from weightmanifold.layers.linear_op import ManifoldOp

    monkeypatch.setattr(ManifoldOp, "_CALL_COST", 0.0)
    monkeypatch.setattr(_ManifoldConvNd, "_CALL_COST", 0.0)


def knots_and_ends(manifold: wm.BSpline, b: int) -> torch.Tensor:
    spans = manifold.n if manifold.is_periodic else manifold.n - manifold.degree
    special = torch.arange(spans + 1, dtype=torch.float64) / spans  # every knot, both ends
    if manifold.is_periodic:
        special = special[:-1]
    s = torch.rand(b)
    s[:len(special)] = special[:b]
    return s


def assert_basis_and_reference(model, x, s, y):
    """``y`` (a local path's output) equals the basis path's and ``wm.at``'s per example,
    and so do its gradients with respect to ``s`` and every parameter."""
    y_basis = model(x, s=wm.condition(model, s, local=False))
    assert torch.allclose(y, y_basis, atol=1e-12)
    ref = torch.cat([wm.at(model, s[i].detach())(x[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(y, ref, atol=1e-10)
    params = [s, *model.parameters()]
    g = torch.autograd.grad(y.pow(2).sum(), params, allow_unused=True)
    g_basis = torch.autograd.grad(y_basis.pow(2).sum(), params, allow_unused=True)
    for u, v in zip(g, g_basis, strict=True):  # degree 0: piecewise constant in s
        assert (u is None and v is None) or torch.allclose(u, v, atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 14), p=st.integers(0, 4), periodic=st.booleans(), seed=st.integers(0, 99))
def test_every_non_zero_coefficient_lies_in_its_window_and_spans(n, p, periodic, seed):
    if n < p + 2:
        return
    torch.manual_seed(seed)
    m = wm.BSpline(n, degree=p, periodic=periodic)
    assert m.window == p + 1
    a = m.coefficients(knots_and_ends(m, 64))
    w = Windows.of(a, m.window, periodic)
    outside = a.clone()
    for u in range(len(w.starts)):
        rows = w.order[sum(w.counts[:u]):sum(w.counts[:u + 1])]
        outside[rows[:, None], torch.tensor(w.indices(u))] = 0
    assert outside.abs().max() == 0
    assert torch.allclose(w.local.sum(1), torch.ones(64))  # partition of unity, all kept
    assert sorted(w.order.tolist()) == list(range(64))
    assert torch.equal(w.order[w.restore], torch.arange(64))
    # the banded path's runs: every example in exactly w of them, nothing non-zero outside
    held = torch.zeros(64, n, dtype=torch.bool)  # in window-sorted order
    for k, runs in enumerate(w.spans):
        for lo, hi in runs:
            assert 0 <= lo < hi <= 64
            held[lo:hi, k] = True
    assert (held.sum(1) == m.window).all()
    assert (a[w.order].abs() * ~held).max() == 0


@pytest.mark.parametrize("coefficients, width", [
    # a degree-4 periodic spline just past a knot (float32): its fifth non-zero (2e-10)
    # adds nothing to a window's float32 mass, so by mass alone the window one to the
    # left, which holds an exact zero instead, ties with the right one and wins
    (wm.BSpline(9, degree=4, periodic=True).coefficients(torch.tensor([0.11204105615615845])), 5),
    (torch.tensor([[0.0, 1.0, 1e-9, 0.0, 0.0, 0.0]], dtype=torch.float32), 2),
    (torch.tensor([[0.0, 0.0, 0.0, 1e-30, 1.0, 0.0]], dtype=torch.float64), 2),
    # wrapping around the circle
    (torch.tensor([[1e-12, 0.0, 0.0, 0.0, 0.5, 0.5]]), 3),
])
def test_the_window_holds_every_non_zero_however_small(coefficients, width):
    w = Windows.of(coefficients, width, periodic=True)
    outside = coefficients.clone()
    outside[0, w.index[0]] = 0
    assert outside.abs().max() == 0
    assert torch.equal(w.local, coefficients.gather(1, w.index))


def test_no_window_where_the_support_is_global():
    assert wm.BSpline(4, degree=3).window is None  # p + 1 = n: Bernstein
    assert wm.Ellipse().window is None and wm.Line().window is None
    cond = wm.condition(wm.BSpline(4, degree=3), torch.rand(8))
    assert cond.windows is None


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 6)
        self.conv = nn.Conv1d(6, 8, 3, padding=1, groups=2)
        self.att = nn.MultiheadAttention(8, 2, batch_first=True)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = self.conv(self.emb(x).transpose(1, 2)).transpose(1, 2)
        return self.out(self.att(h, h, h)[0])


@pytest.mark.parametrize("manifold", [wm.BSpline(12, degree=3), wm.BSpline(9, degree=2,
                                                                            periodic=True),
                                      wm.BSpline(5, degree=0)], ids=repr)
@pytest.mark.parametrize("route", ["auto", "window"])
@pytest.mark.usefixtures("free_calls")
def test_local_path_equals_the_basis_path_and_the_reference(manifold, route):
    torch.manual_seed(0)
    model = wm.manifoldify(Net(), manifold, init="independent")
    if route == "window":  # one call per window in every layer, whatever the cost model says
        for layer in model.modules():
            if isinstance(layer, wm.layers.ManifoldOp):
                layer._local_path = lambda *args: "window"
    x = torch.randint(0, 7, (24, 5))
    s = knots_and_ends(manifold, 24).requires_grad_(True)
    local = wm.condition(model, s)
    assert local.windows is not None and len(local.windows[0].starts) > 1
    assert_basis_and_reference(model, x, s, model(x, s=local))


@pytest.mark.parametrize("manifold", [wm.BSpline(12, degree=3), wm.BSpline(9, degree=2,
                                                                            periodic=True)],
                         ids=repr)
@pytest.mark.usefixtures("free_calls")
def test_a_batch_sorted_by_s_skips_the_gathers_and_gives_the_same_answer(manifold):
    """Sorted by ``s``, a batch is in window order: no gather or scatter of activations,
    and the windowed and banded paths still equal the basis path and the reference."""
    torch.manual_seed(2)
    model = wm.manifoldify(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(),
                                         nn.Linear(8 * 12 * 12, 6)), manifold,
                           init="independent")
    model.module[0]._kernel_per_example = False  # the windows, whose gathers a sorted batch skips
    x = torch.randn(20, 3, 12, 12)
    s = knots_and_ends(manifold, 20)
    routes = [layer._local_path(h, wm.condition(model, s).windows[0], 0)
              for layer, h in ((model.module[0], x), (model.module[2], torch.zeros(20, 1152)))]
    assert routes == ["window", "banded"]
    ranked = s.argsort()
    for order, in_order in ((ranked, True), (ranked.flip(0), False)):
        si = s[order].clone().requires_grad_(True)
        cond = wm.condition(model, si)
        windows = cond.windows[0]
        assert len(windows.starts) > 2 and windows.in_order is in_order
        assert torch.equal(windows.order, torch.arange(20)) is in_order
        calls: list[torch.Size] = []
        plain = torch.Tensor.index_select

        def spy(t, *args, calls=calls, plain=plain, **kwargs):
            calls.append(t.shape)
            return plain(t, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:  # count the gathers of activations
            patch.setattr(torch.Tensor, "index_select", spy)
            y = model(x[order], s=cond)
        batched = [c for c in calls if len(c) > 0 and c[0] == 20]
        assert (len(batched) == 0) is in_order
        assert_basis_and_reference(model, x[order], si, y)
    # grouped batches: in order exactly when the stable sort by group is the identity
    flags = []
    for s2 in (torch.tensor([0.1] * 3 + [0.7] * 3), torch.tensor([0.7] * 3 + [0.1] * 3)):
        groups = wm.condition(model, s2, grouped=True).groups[0]
        assert groups.in_order is torch.equal(groups.order, torch.arange(6))
        flags.append(groups.in_order)
        assert torch.allclose(model(x[:6], s=wm.condition(model, s2, grouped=True)),
                              model(x[:6], s=wm.condition(model, s2, local=False)), atol=1e-12)
    assert sorted(flags) == [False, True]


def test_permute_gathers_both_ways_with_gradients_of_gradients():
    from weightmanifold.layers.conditioning import permute

    torch.manual_seed(5)
    x = torch.randn(3, 6, 2, requires_grad=True)
    order = torch.randperm(6)
    inverse = order.argsort()
    assert torch.equal(permute(x, order, inverse, 1), x.index_select(1, order))
    assert torch.autograd.gradcheck(lambda t: permute(t, order, inverse, 1), (x,))
    assert torch.autograd.gradgradcheck(lambda t: permute(t, order, inverse, 1) ** 2, (x,))
    # under torch.func the plain index_select runs
    g = torch.func.grad(lambda t: permute(t, order, inverse, 1).pow(3).sum())(x.detach())
    assert torch.allclose(g, 3 * x.detach() ** 2)


@pytest.mark.usefixtures("free_calls")
def test_bins_run_one_expert_per_example_and_equal_the_reference():
    """Experts (``wm.Bins``, unequal bins) have window 1: each example runs its own expert."""
    assert wm.Bins([0.2, 0.5, 0.7]).window == 1 and wm.Bins().window is None
    torch.manual_seed(4)
    manifold = wm.Bins([0.2, 0.5, 0.7])
    model = wm.manifoldify(Net(), manifold, init="independent")
    x = torch.randint(0, 7, (12, 5))
    s = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0, 0.1, 0.3, 0.6, 0.9, 0.19999, 0.5, 0.71])
    local = wm.condition(model, s)
    assert local.windows is not None and local.windows[0].starts == (0, 1, 2, 3)
    y = model(x, s=local)
    assert torch.allclose(y, model(x, s=wm.condition(model, s, local=False)), atol=1e-12)
    ref = torch.cat([wm.at(model, s[i])(x[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(y, ref, atol=1e-10)


@pytest.mark.usefixtures("free_calls")
def test_conv2d_local_path_and_grouped_batches():
    torch.manual_seed(1)
    manifold = wm.BSpline(10, degree=3)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU(), nn.Conv2d(4, 2, 1))
    model = wm.manifoldify(net, manifold, init="independent")
    x = torch.randn(16, 3, 5, 5)
    s = torch.rand(16)
    want = model(x, s=wm.condition(model, s, local=False))
    assert torch.allclose(model(x, s=s), want, atol=1e-12)  # local by default, eager
    # grouped with more distinct points than n: the local path; with few: shared
    assert torch.allclose(model(x, s=wm.condition(model, s, grouped=True)), want, atol=1e-12)
    few = s.clone()
    few[8:] = few[0]
    assert torch.allclose(model(x, s=wm.condition(model, few, grouped=True)),
                          model(x, s=wm.condition(model, few, local=False)), atol=1e-12)


@pytest.mark.usefixtures("free_calls")
def test_local_path_is_taken_and_costs_a_window_of_basis_tensors():
    """Counted FLOPs: the windows of a 12-point cubic spline do the arithmetic of 4; the
    per-example path the convolutions of one plain network plus the mixing of each
    example's kernel and bias from w basis tensors (counted by wm.layers.FLOP_FORMULAS)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3))
    x, s = torch.randn(128, 3, 12, 12), torch.rand(128)

    def flops(manifold, local, per_example=True):
        model = wm.manifoldify(net, manifold)
        for layer in model.modules():
            if isinstance(layer, wm.ManifoldConv2d) and not per_example:
                layer._kernel_per_example = False
        with FlopCounterMode(display=False, custom_mapping=wm.layers.FLOP_FORMULAS) as counter:
            model(x, s=wm.condition(model, s, local=local)).sum().backward()
        return counter.get_total_flops()

    with FlopCounterMode(display=False, custom_mapping=wm.layers.FLOP_FORMULAS) as counter:
        net(x.requires_grad_(False)).sum().backward()
    plain = counter.get_total_flops()  # the first layer computes no input gradient
    mixing = 2 * 128 * 4 * sum(p.numel() for p in net.parameters())  # w = 4 per value
    twelve_window = flops(wm.BSpline(12, degree=3), None, per_example=False)
    twelve_example = flops(wm.BSpline(12, degree=3), None)
    twelve_basis = flops(wm.BSpline(12, degree=3), False)
    four = flops(wm.BSpline(4, degree=3), None)
    assert twelve_window == four and twelve_basis == 3 * four
    assert twelve_example == plain + mixing < four / 3.5


def test_traced_models_fall_back_to_the_basis_path():
    torch.manual_seed(3)
    model = wm.manifoldify(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
                           wm.BSpline(8, degree=3))
    x, s = torch.randn(6, 4), torch.rand(6)
    explain = torch._dynamo.explain(model)(x, s=s)
    assert explain.graph_break_count == 0
    compiled = torch.compile(model, fullgraph=True)
    assert torch.allclose(compiled(x, s=s), model(x, s=s), atol=1e-12)


def test_low_rank_layers_ignore_windows():
    torch.manual_seed(4)
    model = wm.manifoldify(nn.Linear(6, 5), wm.BSpline(8, degree=2), rank=2, init=0.5)
    x, s = torch.randn(10, 6), torch.rand(10)
    assert torch.allclose(model(x, s=s), model(x, s=wm.condition(model, s, local=False)),
                          atol=1e-12)


def test_path_costs_choose_banded_for_wide_dense_layers_and_windows_for_convolutions():
    """Per window, every window's basis tensors are gathered and their gradients scattered:
    for a 2048 -> 512 dense layer on 128 examples that weight traffic exceeds the saving,
    and the banded path (each basis tensor read once) is taken instead."""
    layer = wm.ManifoldLinear(wm.BSpline(12, degree=3), 2048, 512)
    windows = wm.condition(layer, torch.rand(128)).windows[0]
    assert layer._local_path(torch.zeros(128, 2048), windows, 0) == "banded"
    conv = wm.ManifoldConv2d(wm.BSpline(12, degree=3), 16, 16, 3)
    assert conv._local_path(torch.zeros(128, 16, 16, 16), windows, 0) == "example"
    # a 64 x 64 x 3 x 3 kernel per example at 8 x 8: the grouped convolution measured
    # slower than the windows (bench/README.md)
    wide = wm.ManifoldConv2d(wm.BSpline(12, degree=3), 64, 64, 3, padding=1)
    assert wide._local_path(torch.zeros(128, 64, 8, 8), windows, 0) == "window"
    assert wide._local_path(torch.zeros(128, 64, 32, 32), windows, 0) == "example"
    big = wm.ManifoldConv2d(wm.BSpline(12, degree=3), 512, 512, 3)  # weight-bound at 1 x 1
    assert big._local_path(torch.zeros(128, 512, 1, 1), windows, 0) == "basis"


@pytest.mark.parametrize("manifold", [wm.BSpline(12, degree=3), wm.BSpline(9, degree=2,
                                                                            periodic=True),
                                      wm.BSpline(5, degree=0)], ids=repr)
def test_banded_path_equals_the_basis_path_and_the_reference(manifold):
    """Forced onto the banded path, dense layers (nn.Linear and transformers' Conv1D layout)
    give the basis path's outputs and gradients, s included, and wm.at's per example."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 4, bias=False))
    model = wm.manifoldify(net, manifold, init="independent")
    taken = []
    for layer in model.modules():
        if isinstance(layer, wm.ManifoldLinear):
            layer._local_path = lambda *args, _t=taken: _t.append(1) or "banded"
    x = torch.randn(30, 3, 6)  # a further leading axis: 3 positions per example
    s = knots_and_ends(manifold, 30).requires_grad_(True)
    y = model(x, s=s)
    assert len(taken) == 2
    assert_basis_and_reference(model, x, s, y)


@pytest.mark.parametrize("kind", ["linear", "transposed"])
def test_banded_path_gradcheck_and_basis_equality(kind):
    """gradcheck of the banded op in x, s, the basis and the bias (its own backward), for
    nn.Linear's layout and transformers' Conv1D layout ([n, in, out])."""
    from weightmanifold.layers.transposed_linear import ManifoldTransposedLinear

    torch.manual_seed(6)
    manifold = wm.BSpline(7, degree=2)
    cls = wm.ManifoldLinear if kind == "linear" else ManifoldTransposedLinear
    layer = cls(manifold, 3, 2)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    layer._local_path = lambda *args: "banded"
    x = torch.randn(9, 2, 3, requires_grad=True)
    s = torch.rand(9, requires_grad=True)

    def f(x, s, w, b, local=None):
        cond = wm.condition(layer, s, local=local)
        return torch.func.functional_call(layer, {"weight": w, "bias": b}, (x, cond))

    assert torch.autograd.gradcheck(f, (x, s, layer.weight, layer.bias))
    assert torch.allclose(f(x, s, layer.weight, layer.bias),
                          f(x, s, layer.weight, layer.bias, local=False), atol=1e-12)


def test_banded_path_costs_a_window_of_basis_tensors():
    """Counted FLOPs of a dense layer on the banded path: a 12-point cubic spline does the
    arithmetic of 4 basis tensors."""
    from torch.utils.flop_counter import FlopCounterMode

    x, s = torch.randn(128, 256), torch.rand(128)

    def flops(n, local=None):
        layer = wm.ManifoldLinear(wm.BSpline(n, degree=3), 256, 128)
        if n > 4 and local is None:
            layer._local_path = lambda *args: "banded"
        with FlopCounterMode(display=False) as counter:
            layer(x, wm.condition(layer, s, local=local)).sum().backward()
        return counter.get_total_flops()

    four = flops(4)  # one window: the basis path, which also counts its mixing product
    assert four * 0.99 < flops(12) <= four
    assert flops(12, local=False) > 2.9 * four


def test_banded_path_second_order_and_torch_func():
    """Gradients of gradients through the banded path (create_graph) equal the basis path's;
    under torch.func transforms the banded path is not taken and grad still works."""
    torch.manual_seed(7)
    layer = wm.ManifoldLinear(wm.BSpline(8, degree=3), 5, 4)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    layer._local_path = lambda *args: "banded"
    x = torch.randn(16, 5, requires_grad=True)
    s = torch.rand(16)

    def grad_norm(local):
        y = layer(x, wm.condition(layer, s, local=local))
        (gx,) = torch.autograd.grad(y.pow(3).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.pow(2).sum(), [x, layer.weight, layer.bias])

    for a, b in zip(grad_norm(None), grad_norm(False), strict=True):
        assert torch.allclose(a, b, atol=1e-10)
    del layer._local_path  # the real cost model, now under a transform
    big = wm.ManifoldLinear(wm.BSpline(12, degree=3), 2048, 64)
    xs, ss = torch.randn(128, 2048), torch.rand(128)
    assert big._local_path(xs, wm.condition(big, ss).windows[0], 0) == "banded"
    params = dict(big.named_parameters())
    g = torch.func.grad(lambda p: torch.func.functional_call(big, p, (xs, ss)).sum())(params)
    ref = torch.autograd.grad(big(xs, wm.condition(big, ss, local=False)).sum(),
                              [params["weight"], params["bias"]])
    assert torch.allclose(g["weight"], ref[0], atol=1e-9)
    assert torch.allclose(g["bias"], ref[1], atol=1e-9)


def _partitions(g: int):
    """Every split of windows 0..g-1 into runs of consecutive windows."""
    for cuts in range(1 << max(0, g - 1)):
        runs, first = [], 0
        for u in range(g - 1):
            if cuts >> u & 1:
                runs.append((first, u))
                first = u + 1
        runs.append((first, g - 1))
        yield tuple(runs)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(3, 12), width=st.integers(1, 4), data=st.data(),
       work=st.floats(0, 1e3), moved=st.floats(0, 1e3), call=st.floats(0, 1e5))
def test_merge_windows_is_the_cheapest_partition(n, width, data, work, moved, call):
    """The dynamic programme's runs cost what they say and no partition costs less."""
    from weightmanifold.layers.linear_op import merge_windows

    if width > n:
        return
    # up to n - 1: periodic windows wrap, and a run may not span more than n tensors
    starts = tuple(sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=8))))
    counts = tuple(data.draw(st.lists(st.integers(1, 20), min_size=len(starts),
                                      max_size=len(starts))))

    def cost(runs):
        total = 0.0
        for u, v in runs:
            m = starts[v] - starts[u] + width
            if m > n:
                return float("inf")
            total += sum(counts[u:v + 1]) * work * m + moved * m + call
        return total

    best, runs = merge_windows(starts, counts, width, n, work, moved, call)
    assert runs[0][0] == 0 and runs[-1][1] == len(starts) - 1
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(runs))
    assert best == pytest.approx(cost(runs))
    assert best <= min(cost(p) for p in _partitions(len(starts))) * (1 + 1e-12)


@pytest.mark.parametrize("manifold", [wm.BSpline(12, degree=3), wm.BSpline(9, degree=2,
                                                                            periodic=True),
                                      wm.Bins([0.2, 0.4, 0.5, 0.7, 0.9])], ids=repr)
@pytest.mark.parametrize("order", ["sorted", "drawn"])
@pytest.mark.parametrize("call", [1e12, 3e4], ids=["one-run", "mixed-runs"])
def test_merged_runs_of_windows_equal_the_basis_path_and_the_reference(manifold, order, call,
                                                                       monkeypatch):
    """With calls made expensive, consecutive windows share a call on the basis tensors
    they span (an example sits at its window's offset in the run): values and gradients,
    ``s`` included, are the basis path's and ``wm.at``'s."""
    from weightmanifold.layers.conv import _ManifoldConvNd
    from weightmanifold.layers.linear_op import ManifoldOp

    torch.manual_seed(6)
    model = wm.manifoldify(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(),
                                         nn.Flatten(), nn.Linear(4 * 5 * 5, 3)), manifold,
                           init="independent")
    x = torch.randn(24, 3, 5, 5)
    s = knots_and_ends(manifold, 24) if isinstance(manifold, wm.BSpline) else torch.rand(24)
    if order == "sorted":
        ranked = s.argsort()
        x, s = x[ranked], s[ranked]
    s.requires_grad_(True)
    monkeypatch.setattr(ManifoldOp, "_CALL_COST", call)
    monkeypatch.setattr(_ManifoldConvNd, "_CALL_COST", call)
    for layer in (model.module[0], model.module[3]):
        monkeypatch.setattr(layer, "_local_path", lambda *args: "window")
    conv, windows = model.module[0], wm.condition(model, s).windows[0]
    runs = conv._local_costs(x, windows, 0)["window"][1]
    merged = [(u, v) for u, v in runs if u < v]
    assert merged and len(runs) < len(windows.starts)
    if call < 1e6:  # merged runs after window 0: offsets count from the run's first window
        assert len(runs) > 1 and any(u > 0 for u, _ in merged)
    assert_basis_and_reference(model, x, s, model(x, s=wm.condition(model, s)))


def test_small_convolutions_merge_windows_and_large_ones_do_not():
    """The per-call cost: a 32-channel convolution at 4 × 4 on 64 examples (the diffusion
    preset's UNet) runs its windows in a few merged calls, one at 32 × 32 on 128 examples
    (the paper CNN) in one call per window."""
    manifold = wm.BSpline(12, degree=3)
    s = torch.linspace(0, 1, 128)
    small = wm.ManifoldConv2d(manifold, 32, 32, 3, padding=1)
    windows = wm.condition(small, s[::2]).windows[0]
    assert len(windows.starts) == 9
    runs = small._local_costs(torch.zeros(64, 32, 4, 4), windows, 0)["window"][1]
    assert 1 < len(runs) < 9
    large = wm.ManifoldConv2d(manifold, 32, 64, 3, padding=1)
    windows = wm.condition(large, s).windows[0]
    runs = large._local_costs(torch.zeros(128, 32, 32, 32), windows, 0)["window"][1]
    assert runs == tuple((u, u) for u in range(9))


def _force(model: nn.Module, route: str) -> list[int]:
    taken: list[int] = []
    for layer in model.modules():
        if isinstance(layer, wm.layers.ManifoldOp) and layer._kernel_per_example:
            layer._local_path = lambda *args, _t=taken: _t.append(1) or route
    return taken


@pytest.mark.parametrize("manifold", [wm.BSpline(12, degree=3), wm.BSpline(9, degree=2,
                                                                            periodic=True),
                                      wm.BSpline(5, degree=0)], ids=repr)
@pytest.mark.parametrize(("dims", "options"), [
    (1, {"padding": 2, "dilation": 2}),
    (2, {"padding": 1, "groups": 2, "padding_mode": "reflect"}),
    (2, {"stride": 2, "bias": False, "padding_mode": "circular", "padding": 1}),
    (3, {"padding": "same"}),
], ids=["1d-dilated", "2d-groups-reflect", "2d-strided-circular-nobias", "3d-same"])
def test_per_example_path_equals_the_basis_path_and_the_reference(manifold, dims, options):
    """Forced onto the per-example path (each example's kernel mixed from its window, one
    grouped convolution), convolutions of every kind give the basis path's outputs and
    gradients (s included) and wm.at's per example."""
    torch.manual_seed(11)
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    net = nn.Sequential(conv(4, 6, 3, **options), nn.Tanh(), conv(6, 2, 1))
    model = wm.manifoldify(net, manifold, init="independent")
    taken = _force(model, "example")
    x = torch.randn(14, 4, *([5] * dims))
    s = knots_and_ends(manifold, 14).requires_grad_(True)
    y = model(x, s=s)
    assert len(taken) == 2
    assert_basis_and_reference(model, x, s, y)


def test_per_example_path_gradcheck_and_channels_last():
    """gradcheck through the kernels' embedding_bag and the grouped convolution, in x, s,
    the basis and the bias; a channels-last input gives a channels-last output."""
    torch.manual_seed(12)
    layer = wm.ManifoldConv2d(wm.BSpline(7, degree=2), 3, 4, 3, padding=1, groups=1)
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))
        layer.bias.add_(torch.randn_like(layer.bias))
    _force(layer, "example")
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    s = torch.tensor([0.05, 0.3, 0.31, 0.7, 0.95], requires_grad=True)

    def f(x, s, weight, bias):
        return torch.func.functional_call(layer, {"weight": weight, "bias": bias}, (x,),
                                          {"s": wm.condition(layer, s)})

    assert torch.autograd.gradcheck(f, (x, s, layer.weight, layer.bias))
    xl = x.detach().contiguous(memory_format=torch.channels_last)
    y = layer(xl, s=s)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y, layer(x.detach(), s=wm.condition(layer, s, local=False)),
                          atol=1e-12)


def test_per_example_path_second_order_and_torch_func():
    """Gradients of gradients through the kernels' mixing (its backward is differentiable)
    equal the basis path's; under torch.func the cost model does not offer the path (its
    Function has no functorch rule) and the answer is unchanged."""
    from torch.func import functional_call, grad

    torch.manual_seed(13)
    layer = wm.ManifoldConv2d(wm.BSpline(7, degree=2), 3, 4, 3, padding=1)
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))
    x = torch.randn(6, 3, 4, 4, requires_grad=True)
    s = torch.rand(6, requires_grad=True)

    def second(local: bool | None) -> list[torch.Tensor]:
        y = layer(x, s=wm.condition(layer, s, local=local))
        g = torch.autograd.grad(y.pow(2).sum(), [layer.weight, x, s], create_graph=True)
        return list(torch.autograd.grad(sum(t.pow(2).sum() for t in g),
                                        [layer.weight, x, s, layer.bias]))

    _force(layer, "example")
    forced = second(None)
    for u, v in zip(forced, second(False), strict=True):
        assert torch.allclose(u, v, atol=1e-9)
    del layer._local_path
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss(p, x, s):
        return functional_call(layer, p, (x,), {"s": s}).pow(2).sum()

    got = grad(loss)(params, x.detach(), s.detach())["weight"]
    want = torch.autograd.grad(layer(x, s=wm.condition(layer, s, local=False)).pow(2).sum(),
                               layer.weight)[0]
    assert torch.allclose(got, want, atol=1e-10)


def _set_path(model: nn.Module, path: str) -> None:
    for layer in model.modules():
        if isinstance(layer, wm.ManifoldConv2d):
            layer.path = path


@pytest.mark.parametrize("manifold", [wm.Ellipse(), wm.Line(), wm.BSpline(4, degree=3),
                                      wm.BSpline(9, degree=2)], ids=repr)
def test_path_example_on_any_manifold_equals_the_basis_path_and_the_reference(manifold):
    """path="example", asked for: every example's kernel mixed from all n basis tensors (or
    its window, eagerly on a B-spline with windows), one grouped convolution; values and
    gradients (s included) as the basis path's and wm.at's."""
    torch.manual_seed(14)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, groups=1), nn.Tanh(),
                        nn.Conv2d(5, 4, 3, stride=2, groups=1))
    model = wm.manifoldify(net, manifold, init="independent")
    x, s = torch.randn(9, 3, 6, 6), torch.rand(9, requires_grad=True)
    _set_path(model, "example")
    y = model(x, s=s)
    params = [s, *model.parameters()]
    g = torch.autograd.grad(y.pow(2).sum(), params)
    _set_path(model, "basis")
    y_basis = model(x, s=s)
    g_basis = torch.autograd.grad(y_basis.pow(2).sum(), params)
    assert torch.allclose(y, y_basis, atol=1e-12)
    for u, v in zip(g, g_basis, strict=True):
        assert torch.allclose(u, v, atol=1e-10)
    ref = torch.cat([wm.at(model, s[i].detach())(x[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(y, ref, atol=1e-10)


def test_path_example_compiles_whole_and_is_checked():
    """Without windows the mixing is one matrix product: no graph break, the compiled
    model gives the eager answer; gradcheck in x, s and the basis; a layer without the
    path refuses it by name."""
    torch.manual_seed(15)
    model = wm.manifoldify(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(),
                                         nn.Conv2d(3, 2, 1)), wm.Ellipse(), init=0.5)
    _set_path(model, "example")
    x, s = torch.randn(4, 2, 5, 5), torch.rand(4)
    explain = torch._dynamo.explain(model)(x, s=s)
    assert explain.graph_break_count == 0
    compiled = torch.compile(model, fullgraph=True)
    assert torch.allclose(compiled(x, s=s), model(x, s=s), atol=1e-10)
    layer = model.module[0]
    assert torch.autograd.gradcheck(
        lambda x, s, w: torch.func.functional_call(layer, {"weight": w, "bias": layer.bias},
                                                   (x,), {"s": s}),
        (x.clone().requires_grad_(True), s.clone().requires_grad_(True), layer.weight))
    dense = wm.ManifoldLinear(wm.Ellipse(), 4, 3)
    dense.path = "example"
    with pytest.raises(ValueError, match="path='example', which only full-rank convolutions offer"):
        dense(torch.randn(5, 4), torch.rand(5))


def test_path_example_is_refused_by_low_rank_convolutions_and_kept_under_torch_func():
    """A low-rank convolution has no stacked basis to mix kernels from: it refuses the path
    by name. Forced on a B-spline under torch.func (windows built, but _MixRows has no
    functorch rule) the kernels are mixed by the dense product instead."""
    from torch.func import functional_call, grad

    low = wm.manifoldify(nn.Conv2d(3, 6, 3), wm.Ellipse(), rank=2, init=0.5)
    for layer in low.modules():
        if isinstance(layer, wm.layers.ManifoldOp):
            layer.path = "example"
    with pytest.raises(ValueError, match="only full-rank convolutions offer"):
        low(torch.randn(4, 3, 5, 5), s=torch.rand(4))
    torch.manual_seed(16)
    layer = wm.ManifoldConv2d(wm.BSpline(9, degree=2), 3, 4, 3, padding=1)
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))
    layer.path = "example"
    params = {k: v.detach() for k, v in layer.named_parameters()}
    x, s = torch.randn(6, 3, 4, 4), torch.rand(6)

    def loss(p):
        return functional_call(layer, p, (x,), {"s": s}).pow(2).sum()

    got = grad(loss)(params)
    layer.path = "basis"
    want = grad(loss)(params)
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-10), k


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_flop_formulas_count_a_users_embedding_bag_once_per_value(mode):
    """FLOP_FORMULAS replaces torch's embedding_bag count for every caller: an unweighted
    bag costs one add (or comparison) per value read, a weighted one a multiply-add."""
    from torch.utils.flop_counter import FlopCounterMode

    bag = nn.EmbeddingBag(10, 4, mode=mode)
    index = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with FlopCounterMode(display=False, custom_mapping=wm.layers.FLOP_FORMULAS) as counter:
        bag(index)
    assert counter.get_total_flops() == 6 * 4
    bag.requires_grad_(False)  # a frozen bag runs aten._embedding_bag_forward_only
    with FlopCounterMode(display=False, custom_mapping=wm.layers.FLOP_FORMULAS) as counter:
        bag(index)
    assert counter.get_total_flops() == 6 * 4
    if mode == "sum":
        with FlopCounterMode(display=False, custom_mapping=wm.layers.FLOP_FORMULAS) as counter:
            bag(index, per_sample_weights=torch.rand(2, 3))
        assert counter.get_total_flops() == 2 * 6 * 4
