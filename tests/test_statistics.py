"""Fair comparisons: t intervals, paired differences, width matching, the matched baselines."""

from __future__ import annotations

import math

import pytest
from scipy import stats

import weightmanifold as wm
from weightmanifold.experiments.models import (
    PAPER_HIDDEN,
    PAPER_WIDTHS,
    RESNET_WIDTHS,
    build_model,
    count_parameters,
    match_width,
)
from weightmanifold.experiments.presets import get_preset, matched_baselines
from weightmanifold.experiments.sweep import paired_difference, t_quantile_975


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 19, 29, 30, 31, 50, 200])
def test_t_quantile_matches_scipy(df):
    assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=3e-3)


def test_paired_difference_matches_scipy_interval():
    a = [0.61, 0.58, 0.66, 0.63]
    b = [0.55, 0.57, 0.60, 0.52]
    got = paired_difference(a, b)
    d = [x - y for x, y in zip(a, b)]
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=sum(d) / len(d), scale=stats.sem(d))
    assert got["mean"] == pytest.approx(sum(d) / 4)
    assert got["ci_low"] == pytest.approx(lo, abs=1e-4)
    assert got["ci_high"] == pytest.approx(hi, abs=1e-4)
    assert paired_difference([0.5], [0.4])["ci_low"] is None
    with pytest.raises(ValueError, match="equally many"):
        paired_difference([0.5, 0.6], [0.4])
    with pytest.raises(ValueError, match="degree of freedom"):
        t_quantile_975(0)


@pytest.mark.parametrize("method", ["plain", "concat", "embed", "film"])
def test_width_matched_baselines_within_five_percent(method):
    target = count_parameters(build_model("cnn", "manifold", wm.Ellipse(), in_channels=1,
                                          image_size=28))
    widths, hidden = match_width(target, method=method, manifold=wm.Ellipse(), in_channels=1,
                                 image_size=28)
    n = count_parameters(build_model("cnn", method, wm.Ellipse(), in_channels=1, image_size=28,
                                     widths=widths, hidden=hidden))
    assert abs(n / target - 1) <= 0.05


@pytest.mark.parametrize("arch", ["resnet18ln", "resnet18ln-chw"])
@pytest.mark.parametrize("widths", [None, (16, 32, 64, 128)])
def test_width_matched_resnet_within_five_percent(arch, widths):
    """Every stage of the plain ResNet scaled by one factor to the ellipse ResNet's size."""
    kwargs = {"in_channels": 1, "image_size": 28}
    target = count_parameters(build_model(arch, "manifold", wm.Ellipse(), widths=widths,
                                          **kwargs))
    matched, _ = match_width(target, arch=arch, widths=widths, **kwargs)
    n = count_parameters(build_model(arch, "plain", widths=matched, **kwargs))
    assert abs(n / target - 1) <= 0.05
    base = widths or (64, 128, 256, 512)
    factors = [m / w for m, w in zip(matched, base, strict=True)]
    assert max(factors) - min(factors) < 0.1  # one factor (up to rounding), about sqrt(3)
    assert 1.6 < factors[-1] < 1.9


def _reference_match_width(target, arch, method, widths, **kwargs):
    """The search as first written: 40 bisection steps, every step building its network."""
    resnet = arch.startswith("resnet")
    base = widths or (RESNET_WIDTHS if resnet else PAPER_WIDTHS)

    def build(scale):
        scaled = [max(1, round(w * scale)) for w in base]
        hidden = PAPER_HIDDEN if resnet else max(1, round(PAPER_HIDDEN * scale))
        n = count_parameters(build_model(arch, method, wm.Ellipse(), widths=scaled,
                                         hidden=hidden, **kwargs))
        return scaled, hidden, n

    lo, hi = 0.05, 1.0
    while build(hi)[2] < target:
        hi *= 2
    best = None
    for _ in range(40):
        mid = (lo + hi) / 2
        got = build(mid)
        if best is None or abs(got[2] - target) < abs(best[2] - target):
            best = got
        lo, hi = (mid, hi) if got[2] < target else (lo, mid)
    return best[0], best[1]


@pytest.mark.parametrize(("arch", "method", "widths", "factor"), [
    ("cnn", "plain", None, 3.0), ("cnn", "concat", None, 0.4), ("cnn", "film", None, 1.7),
    ("resnet18ln-chw", "plain", (16, 32, 64, 128), 2.9),
])
def test_width_matching_builds_each_width_once_with_the_same_answer(arch, method, widths,
                                                                    factor, monkeypatch):
    """Counting each width's parameters once changes nothing: the first search's answer."""
    from weightmanifold.experiments import models

    kwargs = {"in_channels": 1, "image_size": 28}
    target = round(factor * count_parameters(build_model(arch, "plain", widths=widths,
                                                         **kwargs)))
    expected = _reference_match_width(target, arch, method, widths, **kwargs)
    builds = []
    real_build = models.build_model
    monkeypatch.setattr(models, "build_model",
                        lambda *a, **k: builds.append((tuple(k["widths"]), k["hidden"]))
                        or real_build(*a, **k))
    got = match_width(target, arch=arch, method=method, manifold=wm.Ellipse(), widths=widths,
                      tolerance=0.5, **kwargs)
    assert got == (list(expected[0]), expected[1])
    assert len(builds) == len(set(builds)) < 40  # no network built twice


def test_width_matching_refuses_what_it_cannot_match():
    with pytest.raises(ValueError, match="unknown architecture 'vit'"):
        match_width(1000, arch="vit")
    with pytest.raises(ValueError, match="'plain' only, not 'concat'"):
        match_width(1000, arch="resnet18ln", method="concat")
    # the smallest CNN the search builds has far more than 10 parameters
    with pytest.raises(ValueError, match=r"parameters, not within 5 % of 10$"):
        match_width(10, in_channels=1, image_size=28)


def test_matched_baselines_of_the_presets():
    extra = matched_baselines("cpu", "ellipse")
    assert set(extra) == {"plain-wide", "concat-wide", "embed-wide", "experts", "no-metric"}
    assert extra["experts"]["manifold_options"] == {"n": 3, "degree": 0, "periodic": True}
    assert extra["no-metric"]["precondition"] is False
    labels = {r.label for r in get_preset("rotation-sparsity").runs("cpu")}
    assert {"plain-wide", "experts", "no-metric", "ellipse", "concat-basis"} <= labels
    noise = {r.label: r.config for r in get_preset("noise").runs("cpu")}
    # noise trains on s ~ U(0, 0.6): the two experts split that range into halves
    assert noise["experts"].manifold == "bins"
    assert noise["experts"].manifold_options == {"edges": [0.3]}
    with pytest.raises(ValueError, match="expert_edges must hold n - 1 = 2 breakpoints"):
        matched_baselines("cpu", "ellipse", expert_edges=[0.5])
    assert noise["line"].l2 > 0 and noise["plain-wide"].l2 == noise["line"].l2
    assert math.isclose(count_parameters(build_model(
        "cnn", "plain", in_channels=1, image_size=28, widths=noise["plain-wide"].widths,
        hidden=noise["plain-wide"].hidden)) / count_parameters(build_model(
            "cnn", "manifold", wm.Line(), in_channels=1, image_size=28)), 1, abs_tol=0.05)


def test_markdown_tables_format_results_and_differences():
    from weightmanifold.experiments.sweep import markdown_tables

    rows = [{"label": "line", "x": None, "n": 3, "test_accuracy_mean": 0.5123,
             "test_accuracy_std": 0.0049, "seen_accuracy_mean": 0.6, "seen_accuracy_std": 0.01,
             "unseen_accuracy_mean": 0.2, "unseen_accuracy_std": 0.02, "gap_mean": 0.4,
             "gap_std": 0.015, "parameters": 1376276,
             "train_flops_per_example": 95649792.0, "wall_time_s": 49.6, "run_time_s": 80.4},
            {"label": "plain", "x": None, "n": 3, "test_accuracy_mean": "0.5",
             "test_accuracy_std": "", "seen_accuracy_mean": "", "unseen_accuracy_mean": None,
             "parameters": "688138", "train_flops_per_example": "", "wall_time_s": ""}]
    diffs = [{"x": None, "reference": "line", "label": "plain", "metric": "unseen_accuracy",
              "difference": -0.0345, "ci_low": -0.0612, "ci_high": 0.0021, "n": 3,
              "reference_parameters": 1376276, "parameters": 688138,
              "reference_flops": 95649792.0, "flops": 47824896.0}]
    text = markdown_tables(rows, diffs)
    lines = text.splitlines()
    assert lines[2] == ("| line | 51.2 ± 0.5 | 60.0 ± 1.0 | 20.0 ± 2.0 | 40.0 ± 1.5 | 3 | "
                        "1,376,276 | 96 | 50 | 80 |")
    assert lines[3] == "| plain | 50.0 | – | – | – | 3 | 688,138 | – | – | – |"
    assert lines[-1] == ("| line − plain | unseen accuracy | −3.5 | [−6.1, +0.2] | 3 | "
                         "1,376,276 / 688,138 | 96 / 48 |")
    assert "line minus each method" in text
    # with a swept variable, its column follows the method
    with_x = markdown_tables([{**rows[0], "x": 0.25}], [{**diffs[0], "x": 0.25}],
                             x_name="train_fraction")
    assert "| method | train_fraction |" in with_x and "| line | 0.25 |" in with_x
    assert "| line − plain | 0.25 |" in with_x


def test_resnet_with_sample_layer_norm():
    import torch

    from weightmanifold.experiments.models import resnet18_ln

    net = build_model("resnet18ln-chw", "manifold", wm.Ellipse(), in_channels=1, image_size=28,
                      widths=[4, 4, 8, 8])
    norms = [m for m in net.modules() if isinstance(m, wm.ManifoldGroupNorm)]
    assert len(norms) == 1 + 8 * 2 + 3  # stem, two per block, three shortcuts
    assert all(m.num_groups == 1 for m in norms)
    assert not any(isinstance(m, wm.ManifoldLayerNorm) for m in net.modules())
    x, s = torch.rand(3, 1, 28, 28), torch.tensor([0.0, 0.3, 0.7])
    assert net(x, s).shape == (3, 10)
    # the per-pixel variant keeps LayerNorm; an unknown norm is refused
    plain = build_model("resnet18ln", "plain", in_channels=1, image_size=28, widths=[4, 4, 8, 8])
    assert any(isinstance(m, torch.nn.LayerNorm) for m in plain.modules())
    with pytest.raises(ValueError, match="unknown norm 'batch'; valid: channel, sample"):
        resnet18_ln(1, norm="batch")
    with pytest.raises(ValueError, match="resnet18ln-chw is built as 'plain' or 'manifold'"):
        build_model("resnet18ln-chw", "concat", wm.Ellipse(), in_channels=1, image_size=28)
    cpu = {r.label: r.config.arch for r in get_preset("unconditioned").runs("cpu")
           if r.x != "cnn"}
    assert cpu == {"ellipse": "resnet18ln-chw", "point": "resnet18ln-chw"}
    cnn = {r.label: r.config for r in get_preset("unconditioned").runs("cpu") if r.x == "cnn"}
    assert set(cnn) == {"ellipse", "point", "point-wide"}
    wide = count_parameters(build_model("cnn", "plain", in_channels=1, image_size=28,
                                        widths=cnn["point-wide"].widths,
                                        hidden=cnn["point-wide"].hidden))
    ellipse = count_parameters(build_model("cnn", "manifold", wm.Ellipse(), in_channels=1,
                                           image_size=28))
    assert abs(wide / ellipse - 1) <= 0.05
