"""Manifold layers: every forward path against per-example materialised weights, gradients,
round trips, conversion, export and bad inputs."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightmanifold as wm
from reference import per_example

MANIFOLDS = [wm.Line(), wm.Ellipse(), wm.BSpline(5, periodic=True), wm.Polynomial(2, "legendre")]


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)


def conditions(manifold: wm.Manifold, batch: int, distinct: int | None = None) -> torch.Tensor:
    """``batch`` conditions with ``distinct`` different values (all different by default)."""
    k = batch if distinct is None else distinct
    base = torch.rand(k, manifold.dim) if manifold.dim > 1 else torch.rand(k)
    idx = torch.arange(batch) % k
    return base[idx]


def check_paths(original: nn.Module, manifold: wm.Manifold, x: torch.Tensor,
                tol: float = 1e-10, **kwargs) -> wm.ManifoldModel:
    """Basis path (both mixings), shared path and single path all equal the reference."""
    model = wm.manifoldify(original, manifold, init="independent", **kwargs)
    b = len(x)
    for mix in ("input", "output", "auto"):
        for m in model.modules():
            if isinstance(m, wm.layers.ManifoldOp):
                m.mix = mix
        s = conditions(manifold, b)
        assert torch.allclose(model(x, s=s), per_example(model, original, x, s), atol=tol, rtol=0)
    model.grouped = True  # the caller asks for grouping: shared path when U <= n
    if manifold.n > 2:  # shared path: fewer distinct conditions than basis points
        s = conditions(manifold, b, distinct=2)
        assert torch.allclose(model(x, s=s), per_example(model, original, x, s), atol=tol, rtol=0)
    s = conditions(manifold, b, distinct=1).expand(b, *([manifold.dim] if manifold.dim > 1
                                                        else []))
    assert torch.allclose(model(x, s=s), per_example(model, original, x, s), atol=tol, rtol=0)
    s = conditions(manifold, b)
    for path in ("shared", "basis"):  # forced, with every condition distinct
        for m in model.modules():
            if isinstance(m, wm.layers.ManifoldOp):
                m.path = path
        assert torch.allclose(model(x, s=s), per_example(model, original, x, s), atol=tol, rtol=0)
    for m in model.modules():
        if isinstance(m, wm.layers.ManifoldOp):
            m.path = "auto"
    model.grouped = False
    s1 = conditions(manifold, 1)
    y1 = model(x, s=s1)  # a single condition for the whole batch
    assert torch.allclose(y1, per_example(model, original, x, s1.expand(b, *s1.shape[1:])),
                          atol=tol, rtol=0)
    return model


@pytest.mark.parametrize("manifold", MANIFOLDS, ids=repr)
def test_linear_paths(manifold):
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3), nn.Linear(3, 3, bias=False))
    check_paths(net, manifold, torch.randn(6, 5))


def test_linear_extra_leading_dims():
    net = nn.Linear(4, 6)
    model = check_paths(net, wm.Ellipse(), torch.randn(5, 3, 2, 4))
    assert model(torch.randn(5, 3, 2, 4), s=torch.rand(5)).shape == (5, 3, 2, 6)


CONV_CASES = {
    "conv1d": (lambda: nn.Conv1d(3, 6, 3, stride=2, padding=1), (4, 3, 11)),
    "conv1d-circular": (lambda: nn.Conv1d(4, 4, 3, padding=2, dilation=2, groups=2,
                                  padding_mode="circular"), (4, 4, 9)),
    "conv2d": (lambda: nn.Conv2d(3, 8, 3, padding=1), (4, 3, 8, 8)),
    "conv2d-reflect-groups": (lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2),
                                        groups=2, padding_mode="reflect"), (4, 4, 7, 6)),
    "conv2d-same-replicate": (lambda: nn.Conv2d(2, 4, 3, padding="same", dilation=2,
                                        padding_mode="replicate", bias=False), (4, 2, 9, 9)),
    "conv2d-valid-depthwise": (lambda: nn.Conv2d(4, 8, 3, padding="valid", groups=4), (4, 4, 6, 6)),
    "conv3d": (lambda: nn.Conv3d(2, 3, 3, padding=1, stride=(1, 2, 1)), (3, 2, 4, 5, 4)),
}


@pytest.mark.parametrize("case", list(CONV_CASES), ids=str)
@pytest.mark.parametrize("manifold", MANIFOLDS[:3], ids=repr)
def test_conv_paths(case, manifold):
    make, shape = CONV_CASES[case]
    check_paths(make(), manifold, torch.randn(*shape))


def test_paper_cnn_paths():
    cnn = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10))
    check_paths(cnn, wm.Ellipse(), torch.randn(5, 3, 10, 10))


@pytest.mark.parametrize("manifold", [wm.Line(), wm.Torus()], ids=repr)
def test_embedding_paths(manifold):
    net = nn.Sequential(nn.Embedding(11, 4, padding_idx=0), nn.Flatten(), nn.Linear(12, 2))
    idx = torch.randint(0, 11, (6, 3))
    idx[0, 0] = 0
    check_paths(net, manifold, idx)


def test_embedding_padding_idx_gets_no_gradient():
    model = wm.manifoldify(nn.Embedding(5, 3, padding_idx=1), wm.Ellipse(), init="independent")
    model(torch.tensor([[1, 2], [1, 3], [4, 1]]), s=torch.rand(3)).sum().backward()
    assert torch.all(model.module.weight.grad[:, 1] == 0)
    assert torch.any(model.module.weight.grad[:, 2] != 0)


@pytest.mark.parametrize("manifold", MANIFOLDS[:2], ids=repr)
def test_norm_paths(manifold):
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(),
                        nn.LayerNorm(36), nn.Linear(36, 3))
    check_paths(net, manifold, torch.randn(5, 2, 5, 5))


def test_layernorm_multi_dim_and_no_bias():
    net = nn.Sequential(nn.LayerNorm((3, 4), bias=False), nn.Flatten(), nn.Linear(12, 2))
    check_paths(net, wm.Ellipse(), torch.randn(5, 3, 4))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_batchnorm_eval_paths_and_shared_statistics(dims):
    cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    bn = cls(4)
    shape = (6, 4) + (3,) * dims
    model = wm.manifoldify(bn, wm.Ellipse(), init="independent")
    x = torch.randn(*shape)
    model.train()
    model(x, s=torch.rand(6))
    # in training the statistics are those of the whole batch, whatever the conditions
    plain = nn.BatchNorm1d(4) if dims == 1 else cls(4)
    plain(x)
    inner = model.module
    assert torch.allclose(inner.running_mean, plain.running_mean)
    assert torch.allclose(inner.running_var, plain.running_var)
    assert int(inner.num_batches_tracked) == 1
    model.eval()
    bn.eval()
    s = torch.rand(6)
    assert torch.allclose(model(x, s=s), per_example(model, bn, x, s), atol=1e-10)


def test_batchnorm_training_normalises_over_whole_batch():
    bn = nn.BatchNorm1d(3)
    model = wm.manifoldify(bn, wm.Line())  # constant start: at every s the original BN
    x = torch.randn(8, 3)
    s = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # shared path
    assert torch.allclose(model(x, s=s), bn(x), atol=1e-12)


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_paths_and_masks(batch_first):
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first)
    model = wm.manifoldify(mha, wm.Ellipse(), init="independent",
                           batch_dim=0 if batch_first else 1)
    b, t = 4, 5
    x = torch.randn(b, t, 8) if batch_first else torch.randn(t, b, 8)
    pad = torch.zeros(b, t, dtype=torch.bool)
    pad[0, -2:] = True
    causal = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
    s = torch.rand(b)
    out, w = model(x, x, x, s=s, key_padding_mask=pad, attn_mask=causal)
    for i in range(b):
        plain = wm.at(model, float(s[i]))
        xi = x[i : i + 1] if batch_first else x[:, i : i + 1]
        oi, wi = plain(xi, xi, xi, key_padding_mask=pad[i : i + 1], attn_mask=causal)
        got = out[i : i + 1] if batch_first else out[:, i : i + 1]
        assert torch.allclose(got, oi, atol=1e-10)
        assert torch.allclose(w[i : i + 1], wi, atol=1e-10)


def test_multihead_attention_kdim_vdim_and_per_head_weights():
    mha = nn.MultiheadAttention(8, 2, kdim=6, vdim=5, batch_first=True)
    model = wm.manifoldify(mha, wm.Line(), init="independent")
    q, k, v = torch.randn(3, 4, 8), torch.randn(3, 7, 6), torch.randn(3, 7, 5)
    s = torch.rand(3)
    out, w = model(q, k, v, s=s, average_attn_weights=False)
    assert w.shape == (3, 2, 4, 7)
    ref = per_example_mha(model, q, k, v, s)
    assert torch.allclose(out, ref, atol=1e-10)


def per_example_mha(model, q, k, v, s):
    outs = []
    for i in range(len(s)):
        outs.append(wm.at(model, float(s[i]))(q[i : i + 1], k[i : i + 1], v[i : i + 1])[0])
    return torch.cat(outs)


def test_transformer_encoder_matches_reference():
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    model = wm.manifoldify(enc, wm.Ellipse(), init="independent")
    x = torch.randn(4, 6, 16)
    s = torch.rand(4)
    assert torch.allclose(model(x, s=s), per_example(model, enc, x, s), atol=1e-10)
    model.eval()  # torch's fused fast path must not be taken: it cannot see manifold weights
    with torch.no_grad():
        assert torch.allclose(model(x, s=0.3), wm.at(model, 0.3)(x), atol=1e-10)


def test_sequence_first_transformer_with_batch_dim():
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=False)
    enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
    model = wm.manifoldify(enc, wm.Line(), init="independent", batch_dim=1)
    x = torch.randn(5, 3, 8)
    s = torch.rand(3)
    y = model(x, s=s)
    for i in range(3):
        assert torch.allclose(y[:, i], wm.at(model, float(s[i]))(x[:, i : i + 1])[:, 0],
                              atol=1e-10)


def resnet_block() -> nn.Module:
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(4)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(4)
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(x + self.scale * self.bn2(self.conv2(h)))

    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Block(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 5))


def test_resnet_like_model_with_custom_parameter():
    net = resnet_block().eval()
    model = wm.manifoldify(net, wm.Ellipse(), init="independent")
    model.eval()
    assert model.shared == ["1.scale"]
    x = torch.randn(4, 3, 6, 6)
    s = torch.rand(4)
    assert torch.allclose(model(x, s=s), per_example(model, net, x, s), atol=1e-10)


# -- gradients --------------------------------------------------------------------------------
@pytest.mark.parametrize("layer_fn,x_shape", [
    (lambda m: wm.ManifoldLinear(m, 3, 2), (4, 3)),
    (lambda m: wm.ManifoldConv2d(m, 2, 3, 3, padding=1, groups=1), (4, 2, 4, 4)),
    (lambda m: wm.ManifoldConv1d(m, 2, 2, 3, groups=2, padding_mode="circular", padding=1),
     (4, 2, 5)),
    (lambda m: wm.ManifoldLayerNorm(m, 3), (4, 2, 3)),
    (lambda m: wm.ManifoldGroupNorm(m, 1, 2), (4, 2, 3)),
], ids=["linear", "conv2d", "conv1d-circular", "layernorm", "groupnorm"])
@pytest.mark.parametrize("distinct", [4, 2, 1], ids=["basis", "shared", "single"])
def test_gradcheck(layer_fn, x_shape, distinct):
    manifold = wm.Ellipse()
    layer = layer_fn(manifold)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(*x_shape, requires_grad=True)
    s = conditions(manifold, x_shape[0], distinct)
    params = [p for p in layer.parameters()]

    def f(x, *ps):
        saved = [p.data for p in params]
        for p, v in zip(params, ps):
            p.data = v
        try:
            return torch.func.functional_call(layer, dict(zip(
                [n for n, _ in layer.named_parameters()], ps)), (x, s))
        finally:
            for p, v in zip(params, saved):
                p.data = v

    inputs = (x, *[p.detach().clone().requires_grad_() for p in params])
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


def test_embedding_gradient_matches_reference():
    net = nn.Embedding(6, 3)
    model = wm.manifoldify(net, wm.Ellipse(), init="independent")
    idx = torch.randint(0, 6, (5, 2))
    s = torch.rand(5)
    model(idx, s=s).pow(2).sum().backward()
    g = model.module.weight.grad.clone()
    model.zero_grad()
    per_example(model, net, idx, s).pow(2).sum().backward()
    assert torch.allclose(g, model.module.weight.grad, atol=1e-12)


# -- conversion and init ----------------------------------------------------------------------
@pytest.mark.parametrize("manifold", [*MANIFOLDS, wm.Torus(), wm.Sphere(1)], ids=repr)
def test_constant_init_keeps_the_original_network_everywhere(manifold):
    net = resnet_block().eval()
    model = wm.manifoldify(net, manifold).eval()
    x = torch.randn(5, 3, 6, 6)
    if isinstance(manifold, wm.Sphere):
        s = torch.nn.functional.normalize(torch.randn(5, 3), dim=1)
    else:
        s = conditions(manifold, 5)
    assert torch.allclose(model(x, s=s), net(x), atol=1e-12)


def test_independent_init_variance_and_deterministic_tensors():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(200, 300), nn.LayerNorm(300))
    model = wm.manifoldify(net, wm.Ellipse(), init="independent")
    lin, ln = model.module[0], model.module[1]
    # LayerNorm gain/bias are deterministic: constant start (gain 1 at every s)
    assert torch.equal(ln.materialise(wm.Ellipse().coefficients([0.3])[0])[0], torch.ones(300))
    # every basis point is a different draw
    assert not torch.allclose(lin.weight[0], lin.weight[1])
    # variance of W(s) equals that of the default init at every s of the ellipse
    default_var = (1 / 200) / 3  # uniform(-1/sqrt(in), 1/sqrt(in))
    for s in (0.0, 0.2, 0.7):
        w, _ = lin.materialise(wm.Ellipse().coefficients([s])[0])
        assert abs(float(w.detach().var()) / default_var - 1) < 0.03


def test_include_exclude_and_inplace():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2), nn.Linear(2, 2))
    m = wm.manifoldify(net, wm.Line(), include=["0", nn.Linear], exclude=["3"])
    assert m.converted == ["0", "2"]
    assert isinstance(net[0], nn.Conv2d)  # the original is untouched
    m2 = wm.manifoldify(net, wm.Line(), include=[lambda name, mod: name == "3"], inplace=True)
    assert m2.converted == ["3"] and isinstance(net[3], wm.ManifoldLinear)


def test_tied_weights_stay_tied_and_preconditioned_once():
    emb = nn.Embedding(5, 4)
    head = nn.Linear(4, 5, bias=False)
    head.weight = emb.weight
    net = nn.Sequential(emb, head)
    model = wm.manifoldify(net, wm.Line(), init="independent")
    assert len(wm.manifold_parameters(model)) == 1  # one manifold tensor serves both
    assert model.module[0].weight is model.module[1].weight
    idx, s = torch.randint(0, 5, (3, 2)), torch.rand(3)
    model(idx, s=s).sum().backward()  # both uses contribute to the one gradient
    assert model.module[0].weight.grad is not None
    plain = wm.at(model, 0.3)
    assert plain[0].weight is plain[1].weight  # and the export keeps the tie
    assert torch.allclose(plain(idx), model(idx, s=0.3))


# -- export -----------------------------------------------------------------------------------
def test_at_matches_and_has_no_weightmanifold_class(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    model = wm.manifoldify(net, wm.Ellipse(), init="independent").eval()
    x = torch.randn(3, 3, 6, 6)
    plain = wm.at(model, 0.4)
    assert torch.equal(wm.at(resnet_wrapped := wm.manifoldify(resnet_block(), wm.Line()), 0.2)(x),
                       resnet_wrapped(x, s=0.2))
    assert torch.equal(plain(x), model(x, s=0.4))
    # per-example s (all equal) takes the basis path: the same sum, rounded differently
    assert torch.allclose(plain(x), model(x, s=torch.full((3,), 0.4)), atol=1e-12, rtol=0)
    assert not any(type(m).__module__.startswith("weightmanifold") for m in plain.modules())
    path = tmp_path / "plain.pt"
    torch.save(plain, path)
    torch.save(x, tmp_path / "x.pt")
    torch.save(plain(x), tmp_path / "y.pt")
    # load and run in a fresh interpreter that blocks importing weightmanifold
    code = (
        "import sys, torch\n"
        "sys.modules['weightmanifold'] = None\n"  # importing weightmanifold now fails
        f"net = torch.load({str(path)!r}, weights_only=False)\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        f"y = torch.load({str(tmp_path / 'y.pt')!r})\n"
        "assert torch.equal(net(x), y)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_at_on_torus_and_point():
    net = nn.Linear(3, 2)
    torus = wm.manifoldify(net, wm.Torus(), init="independent")
    x = torch.randn(4, 3)
    assert torch.allclose(wm.at(torus, [0.1, 0.7])(x), torus(x, s=torch.tensor([[0.1, 0.7]])))
    point = wm.manifoldify(net, wm.Point())
    assert torch.allclose(point(x), net(x))
    assert torch.allclose(wm.at(point, 0.0)(x), net(x))


def test_at_is_a_copy():
    model = wm.manifoldify(nn.Linear(2, 2), wm.Line())
    plain = wm.at(model, 0.5)
    with torch.no_grad():
        plain.weight.add_(1)
    assert not torch.allclose(wm.at(model, 0.5).weight, plain.weight)


# -- state dict ---------------------------------------------------------------------------------
LAYERS = {
    "linear": lambda m: wm.ManifoldLinear(m, 3, 2),
    "conv1d": lambda m: wm.ManifoldConv1d(m, 2, 3, 3),
    "conv2d": lambda m: wm.ManifoldConv2d(m, 2, 3, 3, padding_mode="reflect", padding=1),
    "conv3d": lambda m: wm.ManifoldConv3d(m, 2, 3, 2),
    "embedding": lambda m: wm.ManifoldEmbedding(m, 5, 3),
    "layernorm": lambda m: wm.ManifoldLayerNorm(m, 3),
    "groupnorm": lambda m: wm.ManifoldGroupNorm(m, 1, 3),
    "batchnorm": lambda m: wm.ManifoldBatchNorm2d(m, 3),
    "attention": lambda m: wm.ManifoldMultiheadAttention(m, 4, 2),
    "parameter": lambda m: wm.ManifoldParameter(m, (2, 3)),
}


@pytest.mark.parametrize("kind", list(LAYERS))
def test_state_dict_round_trip(kind):
    a = LAYERS[kind](wm.Ellipse())
    with torch.no_grad():
        for p in a.parameters():
            p.normal_()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = LAYERS[kind](wm.Ellipse())
    b.load_state_dict(torch.load(buf, weights_only=True))
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb
        if isinstance(pa, torch.Tensor):
            assert torch.equal(pa, pb)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_state_dict_of_another_manifold_is_refused(kind):
    a = LAYERS[kind](wm.Line())
    b = LAYERS[kind](wm.Ellipse())
    with pytest.raises(RuntimeError, match=r"Line\(\).*Ellipse\(\)"):
        b.load_state_dict(a.state_dict())


def test_state_dict_refuses_other_n_without_extra_state():
    a = wm.manifoldify(nn.Linear(3, 2), wm.Line())
    b = wm.manifoldify(nn.Linear(3, 2), wm.Ellipse())
    sd = {k: v for k, v in a.state_dict().items() if not k.endswith("_extra_state")}
    with pytest.raises(RuntimeError, match=r"n=3"):
        b.load_state_dict(sd)


# -- threads, compile ---------------------------------------------------------------------------
def test_two_models_in_two_threads():
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
    ma = wm.manifoldify(net, wm.Line(), init="independent")
    mb = wm.manifoldify(net, wm.Ellipse(), init="independent")
    x = torch.randn(32, 4)
    sa, sb = torch.rand(32), torch.rand(32)
    ref = {0: ma(x, s=sa), 1: mb(x, s=sb)}
    errors: list[int] = []
    barrier = threading.Barrier(2)

    def run(which):
        m, s = (ma, sa) if which == 0 else (mb, sb)
        barrier.wait()
        for _ in range(100):
            if not torch.equal(m(x, s=s), ref[which]):
                errors.append(which)

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_torch_compile_matches_eager():
    torch.set_default_dtype(torch.float32)
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(36, 5))
    model = wm.manifoldify(cnn, wm.Ellipse(), init="independent")
    compiled = torch.compile(model)
    x = torch.randn(6, 3, 8, 8)
    s = torch.rand(6)
    assert torch.allclose(compiled(x, s=s), model(x, s=s), atol=1e-5)
    assert torch.allclose(compiled(x, s=0.25), model(x, s=0.25), atol=1e-5)


# -- bad input ----------------------------------------------------------------------------------
def test_missing_s():
    model = wm.manifoldify(nn.Linear(2, 2), wm.Line())
    with pytest.raises(ValueError, match=r"model\(x, s=s\)"):
        model(torch.randn(3, 2))
    with pytest.raises(ValueError, match="without conditions"):
        wm.ManifoldLinear(wm.Line(), 2, 2)(torch.randn(3, 2))


def test_s_of_wrong_length_names_layer_and_axis():
    model = wm.manifoldify(nn.Sequential(nn.Linear(2, 2)), wm.Line())
    with pytest.raises(ValueError, match=r"3 conditions.*4 examples.*dim 0"):
        model(torch.randn(4, 2), s=torch.rand(3))


def test_s_with_wrong_columns_nan_and_out_of_domain():
    model = wm.manifoldify(nn.Linear(2, 2), wm.Torus())
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        model(torch.randn(4, 2), s=torch.rand(4))
    line = wm.manifoldify(nn.Linear(2, 2), wm.Line())
    with pytest.raises(ValueError, match=r"NaN or inf at s\[1\]"):
        line(torch.randn(3, 2), s=torch.tensor([0.1, float("nan"), 0.2]))
    with pytest.raises(ValueError, match=r"outside the bounded domain.*s\[2\]=1.5"):
        line(torch.randn(3, 2), s=torch.tensor([0.1, 0.2, 1.5]))
    with pytest.raises(TypeError, match="floating-point"):
        line(torch.randn(3, 2), s=torch.tensor([0, 1, 1]))


def test_no_convertible_layer():
    with pytest.raises(ValueError, match="no convertible layer found in Sequential"):
        wm.manifoldify(nn.Sequential(nn.ReLU(), nn.Flatten()), wm.Line())
    with pytest.raises(ValueError, match="after include/exclude"):
        wm.manifoldify(nn.Sequential(nn.Linear(2, 2)), wm.Line(), exclude=[nn.Linear])


def test_bad_conversion_arguments():
    with pytest.raises(ValueError, match="unknown init 'zeros'; valid: constant, independent"):
        wm.manifoldify(nn.Linear(2, 2), wm.Line(), init="zeros")
    with pytest.raises(TypeError, match="Manifold"):
        wm.manifoldify(nn.Linear(2, 2), "ellipse")
    with pytest.raises(ValueError, match="add_bias_kv"):
        wm.manifoldify(nn.MultiheadAttention(4, 2, add_bias_kv=True), wm.Line())
    with pytest.raises(ValueError, match="max_norm"):
        wm.manifoldify(nn.Embedding(3, 2, max_norm=1.0), wm.Line())
    with pytest.raises(ValueError, match="sparse"):
        wm.manifoldify(nn.Embedding(3, 2, sparse=True), wm.Line())


def test_bad_path_and_mix_names():
    layer = wm.ManifoldLinear(wm.Ellipse(), 2, 2)
    layer.path = "fast"
    with pytest.raises(ValueError, match="path must be 'auto', 'shared', 'basis' or 'example'"):
        layer(torch.randn(4, 2), torch.rand(4))
    layer.path, layer.mix = "basis", "sideways"
    with pytest.raises(ValueError, match="mix must be 'auto', 'input' or 'output'"):
        layer(torch.randn(4, 2), torch.rand(4))


def test_at_needs_one_condition():
    model = wm.manifoldify(nn.Linear(2, 2), wm.Line())
    with pytest.raises(ValueError, match="single condition"):
        wm.at(model, [0.1, 0.2])
    with pytest.raises(ValueError, match="outside"):
        wm.at(model, 1.2)
    with pytest.raises(TypeError, match="no ordinary counterpart"):
        wm.at(wm.ManifoldParameter(wm.Line(), (2,)), 0.1)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 9), distinct=st.integers(1, 9), out=st.integers(1, 5),
       inp=st.integers(1, 5))
def test_linear_any_shape_any_number_of_distinct_conditions(batch, distinct, out, inp):
    torch.set_default_dtype(torch.float64)
    distinct = min(batch, distinct)
    net = nn.Linear(inp, out)
    model = wm.manifoldify(net, wm.Ellipse(), init="independent")
    x = torch.randn(batch, inp)
    s = conditions(wm.Ellipse(), batch, distinct)
    assert torch.allclose(model(x, s=s), per_example(model, net, x, s), atol=1e-10)


def test_point_manifold_is_plain_training():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model = wm.manifoldify(net, wm.Point())
    x = torch.randn(5, 3)
    assert torch.equal(model(x), net(x))
    copy.deepcopy(model)(x).sum().backward()


def test_piecewise_constant_experts_cost_one_network_per_example():
    from torch.utils.flop_counter import FlopCounterMode

    experts = wm.BSpline(3, degree=0, periodic=True)  # three networks, one per third of s
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(36, 3))
    check_paths(net, experts, torch.randn(9, 2, 5, 5))
    model = wm.manifoldify(net, experts, init="independent")
    model.grouped = True  # asked for: experts then run one network per example
    x, s = torch.randn(96, 2, 5, 5), torch.rand(96)
    s[:3] = torch.tensor([0.1, 0.5, 0.9])  # every expert present: 3 points, 96 distinct s
    with FlopCounterMode(display=False) as fm:
        model(x, s=s).sum().backward()
    with FlopCounterMode(display=False) as fp:
        net(x).sum().backward()
    # one network's arithmetic per example, plus materialising 3 small weight sets
    assert fm.get_total_flops() <= 1.05 * fp.get_total_flops()
    y = model(x, s=s)
    for i in range(12):  # each example is computed by its bin's network
        k = int(s[i] * 3)
        assert torch.allclose(y[i], torch.func.functional_call(
            net, {"0.weight": model.module[0].weight[k], "0.bias": model.module[0].bias[k],
                  "3.weight": model.module[3].weight[k], "3.bias": model.module[3].bias[k]},
            (x[i : i + 1],))[0], atol=1e-12)
