"""Conditioning as an explicit value: compile, export, checkpoint, channels_last, torch.func,
gradients with respect to s, and the inputs that used to give silently wrong answers."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.checkpoint import checkpoint

import weightmanifold as wm
from reference import per_example


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def paper_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3),
        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 12), nn.ReLU(),
        nn.Linear(12, 10))


class Block(nn.Module):
    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.GroupNorm(2, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


def resnet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Block(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 5))


def encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


CASES = {
    "paper-cnn": (paper_cnn, (6, 3, 12, 12)),
    "resnet-block": (resnet, (6, 3, 8, 8)),
    "transformer-encoder": (encoder, (6, 5, 16)),
}


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


# -- compile and export -------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_compile_fullgraph_no_graph_breaks_and_matches_eager(case):
    make, shape = CASES[case]
    model = wm.manifoldify(make(), wm.Ellipse(), init="independent")
    x, s = torch.randn(*shape), torch.rand(shape[0])
    explained = torch._dynamo.explain(model)(x, s=s)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    y = model(x, s=s)
    y.square().sum().backward()
    eager = _grads(model)
    model.zero_grad()
    yc = compiled(x, s=s)
    yc.square().sum().backward()
    assert torch.allclose(yc, y, atol=1e-5)
    for a, b in zip(_grads(model), eager):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_compiled_training_with_varying_batches_does_not_recompile_every_step():
    from torch._dynamo.utils import counters

    model = wm.manifoldify(paper_cnn(), wm.Ellipse(), init="independent")
    opt = wm.Preconditioned(torch.optim.SGD(model.parameters(), lr=0.01), model)
    compiled = torch.compile(model, fullgraph=True)
    counters.clear()
    sizes = [8, 5, 7, 8, 3, 6, 8, 4, 7, 5]
    for i, b in enumerate(sizes):
        x = torch.randn(b, 3, 12, 12)
        # a varying number of distinct conditions: 1, 2, ... up to all different
        s = torch.rand(1 + i % b).repeat(b)[:b]
        loss = compiled(x, s=s).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    frames = counters["stats"]["unique_graphs"]
    assert frames <= 3, f"{frames} graphs compiled for {len(sizes)} steps"


def test_compiled_model_refuses_bad_s_without_breaking_the_graph():
    model = wm.manifoldify(nn.Linear(3, 2), wm.Line())
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(3, 3)
    compiled(x, s=torch.rand(3))
    with pytest.raises(RuntimeError, match="NaN or inf"):
        compiled(x, s=torch.tensor([0.1, float("nan"), 0.2]))
    with pytest.raises(RuntimeError, match=r"outside the bounded domain \[0, 1\]"):
        compiled(x, s=torch.tensor([0.1, 1.5, 0.2]))


def test_export_with_per_example_s():
    model = wm.manifoldify(paper_cnn(), wm.Ellipse(), init="independent").eval()
    x, s = torch.randn(4, 3, 12, 12), torch.rand(4)
    exported = torch.export.export(model, (x,), {"s": s})
    x2, s2 = torch.randn(4, 3, 12, 12), torch.rand(4)
    assert torch.allclose(exported.module()(x2, s=s2), model(x2, s=s2), atol=1e-5)
    with pytest.raises(RuntimeError, match="NaN or inf"):
        exported.module()(x2, s=torch.full((4,), float("nan")))


def test_conditioning_built_outside_the_compiled_region():
    model = wm.manifoldify(paper_cnn(), wm.Line(), init="independent")
    compiled = torch.compile(model, fullgraph=True)
    x, s = torch.randn(5, 3, 12, 12), torch.rand(5)
    cond = wm.condition(model, s)
    assert torch.allclose(compiled(x, s=cond), model(x, s=s), atol=1e-5)


# -- the tools users reach for -----------------------------------------------------------------
class Checkpointed(nn.Module):
    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = Block()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = checkpoint(self.block, h, use_reentrant=self.reentrant)
        return self.head(h)


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_matches_unchecked(reentrant):
    torch.set_default_dtype(torch.float64)
    try:
        net = Checkpointed(reentrant)
        model = wm.manifoldify(net, wm.Ellipse(), init="independent")
        x = torch.randn(4, 3, 6, 6, requires_grad=reentrant)
        s = torch.rand(4)
        model(x, s=s).square().sum().backward()
        checked = _grads(model)
        model.zero_grad()
        for m in model.modules():
            if isinstance(m, Checkpointed):
                m.forward = lambda x, m=m: m.head(m.block(m.stem(x)))  # unchecked
        model(x, s=s).square().sum().backward()
        for a, b in zip(checked, _grads(model)):
            assert torch.allclose(a, b, atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


def test_two_models_backward_together_with_checkpointing():
    torch.set_default_dtype(torch.float64)
    try:
        net = Checkpointed(False)
        ma = wm.manifoldify(net, wm.Line(), init="independent")
        mb = wm.manifoldify(net, wm.Ellipse(), init="independent")
        x = torch.randn(3, 3, 6, 6)
        sa, sb = torch.rand(3), torch.rand(3)
        (ma(x, s=sa).sum() + mb(x, s=sb).square().sum()).backward()
        ga, gb = _grads(ma), _grads(mb)
        ma.zero_grad()
        mb.zero_grad()
        ma(x, s=sa).sum().backward()
        mb(x, s=sb).square().sum().backward()
        for a, b in zip(ga + gb, _grads(ma) + _grads(mb)):
            assert torch.allclose(a, b, atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


def test_channels_last_models_and_inputs():
    net = resnet()
    model = wm.manifoldify(net, wm.Ellipse(), init="independent").eval()
    x, s = torch.randn(4, 3, 8, 8), torch.rand(4)
    ref = model(x, s=s)
    model = model.to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    for ss in (s, 0.3):
        y = model(xc, s=ss)
        assert torch.allclose(y, model(x, s=ss), atol=1e-5)
    assert torch.allclose(model(xc, s=s), ref, atol=1e-5)
    conv = model.module[0]
    yc = conv(xc, wm.condition(conv, s))
    assert yc.is_contiguous(memory_format=torch.channels_last)
    for m in conv.modules():
        if isinstance(m, wm.layers.ManifoldOp):
            m.mix = "output"
    assert conv(xc, wm.condition(conv, s)).is_contiguous(memory_format=torch.channels_last)


def test_vmap_per_sample_gradients_equal_a_loop():
    from torch.func import functional_call, grad, vmap

    model = wm.manifoldify(paper_cnn(), wm.Ellipse(), init="independent")
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y, s = torch.randn(4, 3, 12, 12), torch.randint(0, 10, (4,)), torch.rand(4)

    def loss(p, xi, yi, si):
        out = functional_call(model, p, (xi[None],), {"s": si[None]})
        return nn.functional.cross_entropy(out, yi[None])

    batched = vmap(grad(loss), in_dims=(None, 0, 0, 0))(params, x, y, s)
    for i in range(4):
        one = grad(loss)(params, x[i], y[i], s[i])
        for k in params:
            assert torch.allclose(batched[k][i], one[k], atol=1e-5)


@pytest.mark.parametrize("manifold", [wm.Ellipse(), wm.BSpline(5, degree=3),
                                      wm.Polynomial(2)], ids=repr)
def test_gradient_with_respect_to_s(manifold):
    torch.set_default_dtype(torch.float64)
    try:
        net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.LayerNorm(12),
                            nn.Linear(12, 2))
        model = wm.manifoldify(net, manifold, init="independent")
        x = torch.randn(3, 2, 4, 4)
        s = torch.tensor([0.21, 0.47, 0.73], requires_grad=True)
        assert torch.autograd.gradcheck(lambda s: model(x, s=s), (s,))
        s1 = torch.tensor(0.4, requires_grad=True)  # the single-condition path too
        assert torch.autograd.gradcheck(lambda s: model(x, s=s), (s1,))
    finally:
        torch.set_default_dtype(torch.float32)


def test_transformer_encoder_eval_with_padding_mask():
    enc = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True), 2)
    model = wm.manifoldify(enc, wm.Line(), init="independent").eval()
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
    s = torch.rand(3)
    with torch.no_grad():
        y = model(x, s=s, src_key_padding_mask=mask)
        for i in range(3):
            plain = wm.at(model, float(s[i]))
            ref = plain(x[i : i + 1], src_key_padding_mask=mask[i : i + 1])
            keep = ~mask[i]
            assert torch.allclose(y[i][keep], ref[0][keep], atol=1e-5)


# -- no silent wrong answers -------------------------------------------------------------------
def test_sequence_first_model_without_batch_dim_is_refused():
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)  # batch_first=False
    enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
    with pytest.raises(ValueError, match=r"batch_first=False.*batch_dim=1"):
        wm.manifoldify(enc, wm.Line())
    model = wm.manifoldify(enc, wm.Line(), init="independent", batch_dim=1)
    x, s = torch.randn(3, 3, 8), torch.rand(3)  # sequence length == batch size
    y = model(x, s=s)
    for i in range(3):
        assert torch.allclose(y[:, i], wm.at(model, float(s[i]))(x[:, i : i + 1])[:, 0],
                              atol=1e-5)
    # a lone attention layer arranges its own batch: no ambiguity
    wm.manifoldify(nn.MultiheadAttention(8, 2), wm.Line())


def test_layer_on_another_manifold_inside_a_model_gets_its_own_coefficients():
    torch.set_default_dtype(torch.float64)
    try:
        inner = wm.ManifoldLinear(wm.Polynomial(2), 4, 4)
        with torch.no_grad():
            inner.weight.normal_()
        net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), inner, nn.Linear(4, 2))
        model = wm.manifoldify(net, wm.Ellipse(), init="independent")
        assert model.manifolds == (wm.Ellipse(), wm.Polynomial(2))
        x, s = torch.randn(5, 3), torch.rand(5)
        y = model(x, s=s)
        for i in range(5):
            assert torch.allclose(y[i], wm.at(model, float(s[i]))(x[i : i + 1])[0], atol=1e-12)
        assert torch.allclose(model(x, s=0.3), wm.at(model, 0.3)(x), atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


def test_subclass_with_its_own_forward_is_left_ordinary_with_a_warning():
    class Scaled(nn.Linear):
        def forward(self, x):
            return 2.0 * super().forward(x) + 1.0

    net = nn.Sequential(nn.Linear(3, 4), Scaled(4, 2))
    with pytest.warns(UserWarning, match=r"overrides.*: 1"):
        model = wm.manifoldify(net, wm.Ellipse())
    assert model.skipped == ["1"] and "1.weight" in model.shared
    x = torch.randn(5, 3)
    assert torch.allclose(model(x, s=torch.rand(5)), net(x), atol=1e-6)
    with pytest.raises(ValueError, match="overriding forward: Scaled"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wm.manifoldify(Scaled(3, 2), wm.Line())


def test_module_registered_twice_is_converted_once_and_stays_one():
    lin = nn.Linear(4, 4)
    net = nn.Sequential(lin, nn.ReLU(), lin)
    model = wm.manifoldify(net, wm.Ellipse(), init="independent")
    assert model.module[0] is model.module[2]
    assert isinstance(model.module[2], wm.ManifoldLinear)
    assert model.converted == ["0", "2"]
    x, s = torch.randn(5, 4), torch.rand(5)
    assert torch.allclose(model(x, s=s), per_example(model, net, x, s), atol=1e-6)
    plain = wm.at(model, 0.2)
    assert plain[0] is plain[2]
    assert torch.allclose(plain(x), model(x, s=0.2), atol=1e-6)


def test_precondition_then_step_applies_the_metric_once():
    torch.set_default_dtype(torch.float64)
    try:
        model = wm.manifoldify(nn.Linear(3, 2), wm.Ellipse(), init="independent")
        x, s = torch.randn(8, 3), torch.rand(8)

        def run(clip: bool) -> torch.Tensor:
            m = wm.manifoldify(nn.Linear(3, 2), wm.Ellipse(), init="independent")
            m.load_state_dict(model.state_dict())
            opt = wm.Preconditioned(torch.optim.SGD(m.parameters(), lr=1.0), m)
            for _ in range(2):  # the mark must not leak into the next step
                opt.zero_grad()
                m(x, s=s).square().sum().backward()
                if clip:
                    opt.precondition()
                    opt.precondition()  # idempotent
                    torch.nn.utils.clip_grad_norm_(m.parameters(), 1e9)  # no-op clip
                opt.step()
            return m.module.weight.detach().clone()

        assert torch.allclose(run(True), run(False), atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


def test_at_recurses_into_nested_manifold_models():
    inner = wm.manifoldify(nn.Linear(3, 4), wm.Line(), init="independent")
    outer = nn.Sequential(nn.Linear(3, 3), inner)
    plain = wm.at(outer, 0.6)
    assert not any(type(m).__module__.startswith("weightmanifold") for m in plain.modules())
    x = torch.randn(2, 3)
    assert torch.allclose(plain(x), inner(outer[0](x), s=0.6), atol=1e-6)


# -- bad input -----------------------------------------------------------------------------------
def test_conditioning_for_another_manifold_or_batch_is_refused():
    model = wm.manifoldify(nn.Sequential(nn.Linear(3, 2)), wm.Ellipse())
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"lives on Ellipse\(\).*built for Line\(\)"):
        model(x, s=wm.condition(wm.Line(), torch.rand(4)))
    with pytest.raises(ValueError, match=r"ManifoldLinear: s holds 5 conditions.*4 examples"):
        model(x, s=wm.condition(model, torch.rand(5)))
    layer = wm.ManifoldLinear(wm.Line(), 3, 2)
    with pytest.raises(ValueError, match=r"ManifoldLinear lives on Line\(\).*Ellipse\(\)"):
        layer(x, wm.condition(wm.Ellipse(), torch.rand(4)))
    with pytest.raises(TypeError, match="conditioned\\(\\) takes a Conditioning"):
        with wm.conditioned(torch.rand(4)):
            pass
    with pytest.raises(ValueError, match="grouped=True"):
        layer.path = "shared"
        layer(x, torch.rand(4))


def test_ambient_conditioning_for_code_that_owns_the_call():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model = wm.manifoldify(net, wm.Line(), init="independent")
    x, s = torch.randn(4, 3), torch.rand(4)
    with wm.conditioned(model.condition(s)):
        y = model.module(x)
    assert torch.allclose(y, model(x, s=s))
    with pytest.raises(ValueError, match="without conditions"):
        model.module(x)


def test_float64_model_with_python_float_s_computes_float64_coefficients():
    model = wm.manifoldify(nn.Linear(3, 2).double(), wm.Ellipse(), init="independent")
    x = torch.randn(4, 3, dtype=torch.float64)
    assert model.condition(0.3).coefficients.dtype == torch.float64
    assert torch.allclose(model(x, s=0.3), wm.at(model, 0.3)(x), atol=1e-14, rtol=0)


def test_a_returned_leaf_gets_no_hooks_and_a_failed_backward_leaves_nothing_ambient():
    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.log_std = nn.Parameter(torch.zeros(2))

        def forward(self, x):
            return self.lin(x), self.log_std

    model = wm.manifoldify(Head(), wm.Line())
    for _ in range(3):
        _mean, log_std = model(torch.randn(4, 3), s=torch.rand(4))
    assert not log_std._backward_hooks
    from weightmanifold.layers import context

    def boom(grad):
        raise RuntimeError("boom")

    y = model(torch.randn(4, 3), s=torch.rand(4))[0]
    y.register_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        y.sum().backward()
    assert wm.layers.active() is None  # outside any backward, nothing is ambient
    layer = model.module.lin
    with pytest.raises(ValueError, match="without conditions"):
        layer(torch.randn(4, 3))
    assert len(context._reentered) <= context._MAX_TASKS


def test_excluded_or_skipped_modules_keep_their_children():
    net = nn.Sequential(nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 8))
    model = wm.manifoldify(net, wm.Line(), exclude=[nn.MultiheadAttention])
    assert model.converted == ["1"]
    assert isinstance(model.module[0].out_proj, nn.Linear)
    x = torch.randn(2, 3, 8)
    model.module[0](x, x, x)  # the attention still runs


def test_compile_batch_dim_1_attention_without_graph_breaks():
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)  # sequence-first
    model = wm.manifoldify(nn.TransformerEncoder(layer, 1, enable_nested_tensor=False),
                           wm.Ellipse(), init="independent", batch_dim=1)
    x, s = torch.randn(5, 3, 8), torch.rand(3)
    explained = torch._dynamo.explain(model)(x, s=s)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert torch.allclose(torch.compile(model, fullgraph=True)(x, s=s), model(x, s=s),
                          atol=1e-5)


def test_preconditioned_survives_pickling():
    import pickle

    model = wm.manifoldify(nn.Linear(3, 2), wm.Ellipse(), init="independent")
    opt = wm.Preconditioned(torch.optim.SGD(model.parameters(), lr=0.1), model)
    again = pickle.loads(pickle.dumps((model, opt)))
    m2, o2 = again
    m2(torch.randn(4, 3), s=torch.rand(4)).sum().backward()
    o2.precondition()
    raw = m2.module.weight.grad.clone()
    m2(torch.randn(4, 3), s=torch.rand(4)).sum().backward()  # accumulates: fresh again
    o2.step()
    assert not torch.equal(raw, m2.module.weight.grad)


def test_state_dicts_of_the_previous_format_still_load():
    model = wm.manifoldify(nn.Sequential(nn.Linear(3, 2)), wm.Ellipse(), init="independent")
    old = dict(model.state_dict())
    old["module.0._extra_state"] = {"manifold": "Ellipse()", "config": wm.Ellipse()._config()}
    again = wm.manifoldify(nn.Sequential(nn.Linear(3, 2)), wm.Ellipse())
    again.load_state_dict(old)
    assert torch.equal(again.module[0].weight, model.module[0].weight)
    old["module.0._extra_state"] = {"manifold": "Line()", "config": wm.Line()._config()}
    with pytest.raises(RuntimeError, match=r"saved from a model on Line\(\)"):
        again.load_state_dict(old)


def test_condition_rejects_what_it_cannot_condition():
    with pytest.raises(TypeError, match="takes a Manifold"):
        wm.condition("ellipse", torch.rand(3))
    with pytest.raises(ValueError, match="no manifold layer"):
        wm.condition(nn.Linear(2, 2), torch.rand(3))
    with pytest.raises(ValueError, match="holds 2 manifolds"):
        _ = wm.condition([wm.Line(), wm.Ellipse()], torch.rand(3)).coefficients
    with pytest.raises(TypeError, match="floating-point"):
        wm.condition(wm.Line(), torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="cannot be traced"):
        torch.compile(lambda s: wm.condition(wm.Line(), s, grouped=True).groups,
                      fullgraph=True)(torch.rand(3))


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(2, 9), distinct=st.integers(1, 9), single=st.booleans())
def test_grouped_and_basis_paths_agree(batch, distinct, single):
    torch.manual_seed(batch * 10 + distinct)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.GroupNorm(1, 3), nn.Flatten(), nn.Linear(12, 2))
    model = wm.manifoldify(net, wm.BSpline(4, degree=1, periodic=True), init="independent")
    x = torch.randn(batch, 2, 4, 4)
    s = torch.rand(1) if single else torch.rand(min(distinct, batch)).repeat(batch)[:batch]
    basis = model(x, s=s)
    grouped = model(x, s=wm.condition(model, s, grouped=True))
    assert torch.allclose(basis, grouped, atol=1e-5)
    assert torch.allclose(basis, per_example(model, net, x, s.expand(batch)), atol=1e-5)


@pytest.mark.parametrize("path", ["auto", "example"])
def test_compiled_model_compiles_once_not_again_on_its_second_call(path):
    """The ambient-conditioning stack exists from a thread's first access: a lazily
    created one made dynamo guard on its absence and compile every model twice. With
    dynamic shapes, one graph serves every batch size, the per-example path's
    ``groups = B`` convolution included; a call from another thread reuses it too."""
    import threading

    from torch._dynamo.testing import CompileCounter

    torch.manual_seed(3)
    model = wm.manifoldify(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                         nn.Conv2d(8, 4, 3)), wm.Ellipse(), init=0.5)
    if path == "example":
        for layer in model.modules():
            if isinstance(layer, wm.ManifoldConv2d):
                layer.path = "example"
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True,
                             dynamic=path == "example")
    sizes = [6, 10, 13, 2] if path == "example" else [6, 6, 6]
    for b in sizes:
        x, s = torch.randn(b, 3, 8, 8), torch.rand(b)
        assert torch.allclose(compiled(x, s=s), model(x, s=s), atol=1e-5)
    out: list[torch.Tensor] = []
    thread = threading.Thread(target=lambda: out.append(compiled(x, s=s)))
    thread.start()
    thread.join()
    assert torch.allclose(out[0], model(x, s=s), atol=1e-5)
    assert counter.frame_count == 1
