"""The modulated initialisation family (init = ε) and the validation split of the trainer."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import weightmanifold as wm
from weightmanifold.conversion import modulation_coefficients
from weightmanifold.experiments.config import ConfigError, RunConfig
from weightmanifold.experiments.presets import INIT_SCALES, get_preset
from weightmanifold.experiments.trainer import load_run_data, train

TOPOLOGIES = [wm.Ellipse(), wm.Line(), wm.BSpline(6, degree=3), wm.Polynomial(3),
              wm.Fourier(2), wm.Torus(), wm.Bins([0.3, 0.6])]


@pytest.mark.parametrize("manifold", TOPOLOGIES, ids=repr)
def test_modulation_has_zero_mean_and_unit_mean_variance(manifold):
    """Δ(s) = Σ_k a_k(s) Σ_l M_kl Z_l: ∫Δ = 0 and ∫ E|Δ|² = v for iid Z of variance v."""
    mix = modulation_coefficients(manifold)
    nodes, weights = manifold.quadrature()
    a = manifold.coefficients(nodes)  # [Q, n]
    f = a @ mix  # Δ(s_q) = Σ_l f_ql Z_l
    assert torch.allclose(weights @ f, torch.zeros(manifold.n, dtype=f.dtype), atol=1e-12)
    assert float(weights @ (f ** 2).sum(1)) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("manifold", [wm.Ellipse(), wm.BSpline(5, degree=2)], ids=repr)
@pytest.mark.parametrize("eps", INIT_SCALES)
def test_eps_init_keeps_the_mean_network_and_scales_the_modulation(manifold, eps):
    torch.manual_seed(0)
    net = nn.Linear(300, 200)
    model = wm.manifoldify(net, manifold, init=eps).requires_grad_(False)
    nodes, weights = manifold.quadrature()
    ws = torch.stack([model.module.materialise(a)[0] for a in manifold.coefficients(nodes)])
    mean = torch.einsum("q,q...->...", weights.to(ws.dtype), ws)
    assert torch.allclose(mean, net.weight.detach(), atol=1e-6)
    spread = float(torch.einsum("q,q->", weights.to(ws.dtype),
                                (ws - mean).pow(2).mean(dim=(1, 2))).sqrt())
    default_rms = (1 / 300 / 3) ** 0.5  # uniform(-1/sqrt(in), 1/sqrt(in))
    assert spread / default_rms == pytest.approx(eps, rel=0.05, abs=1e-7)


def test_eps_zero_is_the_constant_start():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    a = wm.manifoldify(net, wm.Ellipse(), init=0.0)
    b = wm.manifoldify(net, wm.Ellipse(), init="constant")
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), na


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "big", True, None])
def test_bad_init(bad):
    with pytest.raises(ValueError, match="init"):
        wm.manifoldify(nn.Linear(2, 2), wm.Line(), init=bad)


def test_config_init_accepts_numbers_and_names():
    assert RunConfig(init=0.1).init == 0.1
    assert RunConfig(init=0).init == 0
    assert RunConfig(init="constant").init == "constant"
    for bad in ("small", -1.0, [1]):
        with pytest.raises(ConfigError, match="init"):
            RunConfig(init=bad)


TINY = {"dataset": "synthetic", "widths": [4, 8, 8], "hidden": 16, "batch_size": 32,
        "epochs": 2, "lr": 0.05, "threads": 1, "checkpoint_every": 0,
        "task_options": {"train_fraction": 0.25, "bins": 8}}


def test_validation_split_is_disjoint_seeded_and_carved_before_the_subset():
    full = load_run_data(RunConfig.from_dict(TINY))
    data = load_run_data(RunConfig.from_dict({**TINY, "validation": 50}))
    again = load_run_data(RunConfig.from_dict({**TINY, "validation": 50, "train_subset": 100}))
    assert data.val_x is not None and len(data.val_x) == 50
    assert len(data.train_x) == len(full.train_x) - 50
    assert torch.equal(data.val_x, again.val_x)  # the same images whatever the subset
    rows = {tuple(x.flatten().tolist()) for x in data.train_x}
    assert not any(tuple(x.flatten().tolist()) in rows for x in data.val_x)
    assert torch.equal(data.test_x, full.test_x)
    with pytest.raises(ValueError, match="leaves nothing to train on"):
        load_run_data(RunConfig.from_dict({**TINY, "validation": len(full.train_x)}))


def test_validation_every_epoch_and_test_read_once(tmp_path):
    summary = train(RunConfig.from_dict({**TINY, "validation": 60}), tmp_path / "r",
                    progress=False, log=lambda msg: None)
    history = json.loads((tmp_path / "r" / "summary.json").read_text())["final"]
    assert history["test_accuracy"] == summary["final"]["test_accuracy"]
    lines = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    head = lines[0].split(",")
    assert "val_unseen_accuracy" in head
    first = dict(zip(head, lines[1].split(","), strict=True))
    last = dict(zip(head, lines[2].split(","), strict=True))
    assert first["test_accuracy"] == "" and first["val_accuracy"] != ""  # test not read yet
    assert last["test_accuracy"] != "" and last["val_unseen_accuracy"] != ""
    by_condition = (tmp_path / "r" / "metrics_by_condition.csv").read_text().splitlines()
    splits = [row.split(",")[2] for row in by_condition[1:]]
    assert splits.count("val") == 2 * 8 and splits.count("test") == 8


def test_init_preset_sweeps_eps_fraction_and_baselines():
    preset = get_preset("init")
    runs = preset.runs("cpu")
    labels = {r.label for r in runs}
    assert {f"ellipse-eps{e:g}" for e in INIT_SCALES} <= labels
    assert {"plain", "plain-wide", "experts", "ellipse-independent"} <= labels
    assert {r.x for r in runs} == {0.1, 0.25}
    assert len(runs) == 2 * (len(INIT_SCALES) + 4)  # no low-rank rows: see the preset
    for r in runs:
        assert r.config.validation == 5000 and r.config.train_subset is None
        assert r.config.test_subset is None and r.config.epochs == 10
    eps = {r.config.init for r in runs if r.label.startswith("ellipse-eps")}
    assert eps == set(INIT_SCALES)


def test_default_init_is_the_constant_start_chosen_by_the_study():
    """The init study (docs/results.md) chose ε = 0: library, runs and presets agree."""
    assert RunConfig().init == "constant"
    import inspect
    assert inspect.signature(wm.manifoldify).parameters["init"].default == "constant"
    for name in ("rotation-sparsity", "noise", "optimizers", "unconditioned",
                 "unconditioned-converged", "preconditioning-tuned", "unconditioned-tuned",
                 "unconditioned-converged-tuned"):
        for r in get_preset(name).runs("cpu"):
            if r.config.method == "manifold" and r.label != "experts":
                assert r.config.init == "constant", (name, r.label)


def test_preset_init_fills_only_configurations_without_their_own():
    """``--init independent`` continues runs made before the default changed."""
    runs = get_preset("rotation-sparsity").runs("cpu", init="independent")
    by_label = {r.label: r.config.init for r in runs}
    assert by_label["ellipse"] == "independent"
    assert by_label["experts"] == "independent"  # n independent networks, always
    study = get_preset("init").runs("cpu", init="independent")
    assert {r.config.init for r in study if r.label == "ellipse-eps0"} == {0.0}
    assert {r.config.init for r in get_preset("init").runs("cpu")
            if r.label == "experts"} == {"independent"}
    with pytest.raises(ConfigError, match="init"):
        get_preset("noise").runs("cpu", init="random")
