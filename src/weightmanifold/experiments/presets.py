"""The paper's experiments as presets, at full (paper) scale and at a CPU scale.

Each preset is a list of *configurations* (one curve point of one method each),
every configuration run once per seed. ``scale="paper"`` follows the paper
(CIFAR-10, the paper CNN, 20 seeds; §3, Appendix D–E). ``scale="cpu"`` is a
budget where the networks have learned, on a 2-core CPU: Fashion-MNIST (the
Debian package), 3 seeds, the full training set less a 5 000-image validation
split, up to 10 epochs with the epoch chosen on validation (``patience = 2``, by
the accuracy at the seen conditions only: no epoch choice reads a condition the
run never trains on), the test set read once with that epoch's weights.
``scale="quick"`` is the first results' budget — a 10 000-image training subset,
a 1 000-image test subset read every epoch, 3 epochs — where every network is
still learning: a smoke test, not evidence (it reproduces the results made
before, with ``init="independent"``).

============================= =========== ================================================
preset                        figure      what varies
============================= =========== ================================================
rotation-sparsity             Fig. 2b     fraction of training angles × method (including
                                          width-matched baselines, experts, no metric, and
                                          the low-rank ellipse at ranks 4, 8, 16)
noise                         Fig. 3      method (accuracy vs noise level from each run)
optimizers                    Fig. 4a     optimiser of the ellipse network
unconditioned                 Fig. 4b–c   ellipse with random s vs point network, CNN/ResNet
preconditioning-ablation      —           ellipse with vs without the metric
preconditioning-tuned         —           the same, each arm at its own learning rate chosen
                                          on a validation split
unconditioned-converged       Fig. 4b–c   ellipse with random s vs point network (and its
                                          width-matched twin), CNN/ResNet, until the curves
                                          flatten
init                          —           the ellipse's initial modulation ε × fraction of
                                          training angles, vs plain and matched baselines
unconditioned-tuned           Fig. 4b–c   ellipse with random s vs point network, CNN/ResNet,
                                          each at its own learning rate chosen on a
                                          validation split
unconditioned-converged-tuned Fig. 4b–c   unconditioned-converged without the twin, each
                                          network at the rate unconditioned-tuned chose
============================= =========== ================================================

The ``init`` study, ``preconditioning-tuned`` and ``unconditioned-converged``
read whole curves: at cpu scale a fixed 10 (15) epochs on the full training set
less a 5 000-image validation split (read every epoch, for the curves and for
choices), the test set read once, at the end of each run. ``unconditioned-tuned``
does the same on 10 000 training images (the subset the ``unconditioned`` ResNet trains
on), 10 epochs; ``unconditioned-converged-tuned`` has ``unconditioned-converged``'s budget.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import RunConfig

__all__ = ["CONVERGED_TUNED_LRS", "PRESETS", "SCALES", "Preset", "PresetRun", "get_preset"]

SCALES = ("cpu", "quick", "paper")

#: the budgets. ``cpu``: where the networks have learned — the full training set less a
#: validation split that chooses each run's epoch (``patience``), the test set read once.
#: ``quick``: the first results' budget (10 000 images, 3 epochs, 1 000 test images read
#: every epoch), where every network is still learning: a smoke test, not evidence.
_SCALE_BASE: dict[str, dict[str, Any]] = {
    "cpu": {"dataset": "fashion-mnist", "train_subset": None, "test_subset": None,
            "validation": 5000, "epochs": 10, "patience": 2, "patience_on": "seen",
            "validate_at": "seen",
            "batch_size": 128},
    "quick": {"dataset": "fashion-mnist", "train_subset": 10000, "test_subset": 1000,
              "epochs": 3, "batch_size": 128},
    "paper": {"dataset": "cifar10", "epochs": 50, "batch_size": 128},
}
_SCALE_SEEDS = {"cpu": [0, 1, 2], "quick": [0, 1, 2], "paper": list(range(20))}

#: the conditioned methods compared in the rotation and noise presets: label → config keys
BASELINES: dict[str, dict[str, Any]] = {
    "plain": {"method": "plain"},
    "concat": {"method": "concat", "features": "raw"},
    "embed": {"method": "embed", "features": "raw"},
    "film": {"method": "film", "features": "raw"},
    "concat-basis": {"method": "concat", "features": "basis"},
}


#: (channels, size) of the scale's data
_SCALE_SHAPE = {"cpu": (1, 28), "quick": (1, 28), "paper": (3, 32)}

#: low-rank ellipse networks (``W0 + Σ a_k U_k V_k``, rank r; about the plain network's size)
LOW_RANK: dict[str, dict[str, Any]] = {
    f"ellipse-r{r}": {"method": "manifold", "manifold": "ellipse", "rank": r}
    for r in (4, 8, 16)}


@functools.cache
def _matched_width(scale: str, manifold: str, options: tuple[tuple[str, Any], ...],
                   method: str, arch: str = "cnn", widths: tuple[int, ...] | None = None
                   ) -> tuple[tuple[int, ...], int]:
    """Widths of ``method`` with the parameter count of the manifold network.

    ``arch`` and ``widths`` are both networks' architecture and the manifold
    network's widths (the architecture's defaults when ``None``); see
    :func:`~weightmanifold.experiments.models.match_width`.

    Cached: the bisection builds a dozen or so networks, and every listing of the
    rotation, noise and unconditioned presets asks for it.
    """
    import weightmanifold as wm

    from .models import build_model, count_parameters, match_width

    topology = wm.topology.make_manifold(manifold, **dict(options))
    channels, size = _SCALE_SHAPE[scale]
    target = count_parameters(build_model(arch, "manifold", topology, in_channels=channels,
                                          image_size=size, widths=widths))
    matched, hidden = match_width(target, arch=arch, method=method, manifold=topology,
                                  in_channels=channels, image_size=size, widths=widths)
    return tuple(matched), hidden


def matched_baselines(scale: str, manifold: str, options: dict[str, Any] | None = None,
                      *, expert_edges: Sequence[float] | None = None
                      ) -> dict[str, dict[str, Any]]:
    """Capacity-matched comparisons for a manifold network on ``manifold``.

    * ``plain-wide``, ``concat-wide``, ``embed-wide``: the baselines widened (all
      CNN widths scaled by one factor) to within ±5 % of the manifold network's
      parameter count;
    * ``experts``: ``n`` independent networks, each owning one bin of ``s``, with
      the manifold's ``n``: the same parameter count, the per-example cost of
      one network. The bins are equal (a degree-0 B-spline) unless
      ``expert_edges`` gives the ``n - 1`` interior breakpoints
      (:class:`~weightmanifold.topology.Bins`), e.g. to split training
      conditions that cover only part of ``[0, 1]`` into equal shares;
    * ``no-metric``: the same manifold trained with plain gradients.

    Raises:
        ValueError: if ``expert_edges`` does not hold ``n - 1`` breakpoints.
    """
    import weightmanifold as wm

    topology = wm.topology.make_manifold(manifold, **(options or {}))
    out: dict[str, dict[str, Any]] = {}
    for label, method in (("plain-wide", "plain"), ("concat-wide", "concat"),
                          ("embed-wide", "embed")):
        widths, hidden = _matched_width(scale, manifold, tuple(sorted((options or {}).items())),
                                        method)
        out[label] = {"method": method, "features": "raw", "widths": list(widths),
                      "hidden": hidden}
    # experts are independent networks: each bin starts from its own draw
    if expert_edges is None:
        out["experts"] = {"method": "manifold", "manifold": "bspline", "init": "independent",
                          "manifold_options": {"n": topology.n, "degree": 0,
                                               "periodic": bool(topology.periodic[0])}}
    else:
        if len(expert_edges) != topology.n - 1:
            raise ValueError(f"expert_edges must hold n - 1 = {topology.n - 1} breakpoints "
                             f"for {manifold!r}, got {list(expert_edges)}")
        out["experts"] = {"method": "manifold", "manifold": "bins", "init": "independent",
                          "manifold_options": {"edges": [float(e) for e in expert_edges]}}
    out["no-metric"] = {"method": "manifold", "precondition": False}
    return out


@dataclass(frozen=True)
class PresetRun:
    """One configuration of a preset: a method at one point of the swept variable."""

    label: str
    x: float | str | None
    config: RunConfig
    #: the value of the preset's tuned key (:attr:`Preset.tune`) in this run, if any
    tuned: Any = None

    @property
    def folder(self) -> str:
        """The run's folder under the sweep's root (what ``--plan`` and the sweep log print)."""
        return self.config.name.split("/")[-1]


@dataclass(frozen=True)
class Preset:
    """A paper experiment: the configurations to run and how to read them.

    Attributes:
        name: the preset's name.
        description: one line for ``--help``.
        figure: the paper figure it reproduces.
        x_name: the swept variable drawn on the figure's x axis (``None``: the
            runs' evaluation conditions are the x axis).
        metric: the summary metric compared across configurations.
        reference: the label every other method is compared with (paired by seed).
        reference_side: ``"left"``: differences are reference minus method;
            ``"right"``: method minus reference (a baseline as the reference).
        tune: ``(key, grid)``: every configuration runs at each value of the
            configuration key ``key`` in ``grid``, and the sweep keeps, per method
            and x, the value with the best validation metric (mean over seeds;
            the configurations need a ``validation`` split). Results list every
            value; differences compare the chosen ones.
        tune_seeds: with ``tune``, how many of the sweep's seeds (the first ones)
            run the whole grid; the chosen value then runs on every seed
            (``None``: every seed runs the whole grid).
    """

    name: str
    description: str
    figure: str
    x_name: str | None
    metric: str
    build: Any = field(repr=False)
    reference: str = "ellipse"
    reference_side: str = "left"
    tune: tuple[str, tuple[Any, ...]] | None = None
    tune_seeds: int | None = None

    def runs(self, scale: str = "cpu", *, init: str | float | None = None) -> list[PresetRun]:
        """The configurations at ``scale`` ("cpu", "quick" or "paper").

        Args:
            scale: ``"cpu"``, ``"quick"`` or ``"paper"``.
            init: the manifold initialisation of every configuration that does
                not set its own (the init study's rows and the experts set
                theirs); ``None``: :class:`RunConfig`'s default, ``"constant"``.
                ``"independent"`` was the presets' start before the init study
                chose ``"constant"``: the archived runs under ``docs/results/``
                that predate it continue with it.

        Raises:
            ValueError: for an unknown scale.
            ConfigError: for an invalid ``init``.
        """
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
        base = dict(_SCALE_BASE[scale])
        if init is not None:
            base["init"] = init
        built = self.build(scale)
        if self.tune is None:
            return [PresetRun(label, x, RunConfig.from_dict({**base, **keys,
                                                             "name": f"{self.name}/{name}"}))
                    for name, label, x, keys in built]
        key, grid = self.tune
        return [PresetRun(label, x, RunConfig.from_dict({
                    **base, **keys, key: value, "name": f"{self.name}/{name}-{key}{value:g}"}),
                          tuned=value)
                for name, label, x, keys in built for value in grid]

    def seeds(self, scale: str = "cpu") -> list[int]:
        return list(_SCALE_SEEDS[scale])

    def grid_seeds(self, seeds: Sequence[int]) -> list[int]:
        """The seeds a tuned grid runs on: the first ``tune_seeds`` of ``seeds``.

        The chosen values then run on every seed; an untuned preset runs all of them.
        """
        if self.tune is None or self.tune_seeds is None:
            return list(seeds)
        return list(seeds[:self.tune_seeds])


def _rotation_sparsity(scale: str) -> list[tuple[str, str, Any, dict[str, Any]]]:
    # at cpu scale the two sparse fractions, where there are unseen angles to generalise to
    fractions = {"cpu": [0.1, 0.25], "quick": [0.1, 0.25, 1.0]}.get(
        scale, [0.05, 0.1, 0.25, 0.5, 0.75, 1.0])
    methods = {"ellipse": {"method": "manifold", "manifold": "ellipse"}, **BASELINES,
               **matched_baselines(scale, "ellipse"), **LOW_RANK}
    out = []
    for f in fractions:
        for label, keys in methods.items():
            out.append((f"{label}-f{f}", label, f,
                        {"manifold": "ellipse", **keys, "task": "rotation",
                         "task_options": {"train_fraction": f, "mode": "subset", "bins": 36}}))
    return out


def _noise(scale: str) -> list[tuple[str, str, Any, dict[str, Any]]]:
    l2 = 1e-4
    # Training noise up to S = 0.6; evaluation at 0, 0.1, ..., 0.9, so 0.7-0.9 are unseen
    # (noisier than anything in training; at 1.0 the image would be pure noise).
    max_noise = 0.6
    task = {"task": "noise",
            "task_options": {"max_noise": max_noise, "eval_levels": 10, "eval_max": 0.9},
            "manifold": "line", "l2": l2}
    # two experts splitting the training levels U(0, S) into halves; the second
    # also serves the unseen levels above S
    methods = {"line": {"method": "manifold"},
               **{k: v for k, v in BASELINES.items() if k != "concat-basis"},
               **matched_baselines(scale, "line", expert_edges=[max_noise / 2])}
    return [(label, label, None, {**task, **keys}) for label, keys in methods.items()]


def _optimizers(scale: str) -> list[tuple[str, str, Any, dict[str, Any]]]:
    rot = {"task": "rotation", "task_options": {"train_fraction": 0.25, "mode": "subset"},
           "method": "manifold", "manifold": "ellipse"}
    # AdamW with torch's default decoupled weight decay (0.01); with none it *is* Adam.
    extra: dict[str, dict[str, Any]] = {"sgd": {}, "adam": {}, "adamw": {"weight_decay": 0.01}}
    return [(name, name, name, {**rot, "optimizer": name, **extra[name]})
            for name in ("sgd", "adam", "adamw")]


#: the ResNet's widths on one-channel 28-pixel images (cpu and quick scales) in every
#: unconditioned preset; at paper scale the ResNet keeps the paper's widths
_CPU_RESNET_WIDTHS = (16, 32, 64, 128)
#: the two networks every unconditioned preset compares: the ellipse with a random s per
#: example and the point network (one network, no conditioning)
_UNCONDITIONED_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("ellipse", {"method": "manifold", "manifold": "ellipse"}),
    ("point", {"method": "plain"}))


def _unconditioned_archs(scale: str) -> tuple[str, str]:
    """The unconditioned presets' networks: the paper CNN and the ResNet-18-LN.

    At CPU scale (one-channel Fashion-MNIST) the ResNet normalises over (C, H, W): with
    the paper's per-pixel LayerNorm most seeds stayed at chance for the whole 2-epoch
    quick budget where this was measured (see weightmanifold.experiments.models)."""
    return ("cnn", "resnet18ln" if scale == "paper" else "resnet18ln-chw")


def _resnet_widths(arch: str) -> dict[str, Any]:
    """The ``widths`` key of an unconditioned preset's ``arch``: the CPU ResNet's, none for
    the CNN or the paper's ResNet (their default widths)."""
    return {"widths": list(_CPU_RESNET_WIDTHS)} if arch == "resnet18ln-chw" else {}


def _unconditioned(scale: str) -> list[tuple[str, str, Any, dict[str, Any]]]:
    out = []
    for arch in _unconditioned_archs(scale):
        extra: dict[str, Any] = {}
        if arch == "resnet18ln-chw":
            # at cpu scale it trains on the quick scale's 10 000 images, up to 10 epochs
            # chosen on validation: about 8 min a seed for the ellipse and 4 for the point
            # (2 cores, validation included, measured while the point network was still
            # evaluated at every point of the ellipse); 10 full-set epochs would take about
            # 37 and 14 (unconditioned-converged's 15 took 56 and 22)
            extra = {**_resnet_widths(arch),
                     **({"epochs": 2} if scale == "quick" else {"train_subset": 10000})}
        methods = list(_UNCONDITIONED_METHODS)
        if arch == "cnn":
            # the point network widened to the ellipse's parameter count (±5 %)
            widths, hidden = _matched_width(scale, "ellipse", (), "plain")
            methods.append(("point-wide", {"method": "plain", "widths": list(widths),
                                           "hidden": hidden}))
        for label, keys in methods:
            out.append((f"{arch}-{label}", label, arch,
                        {"task": "unconditioned", "arch": arch, **keys, **extra}))
    return out


#: the modulation scales of the initialisation study (``init = eps``; 0 is "constant")
INIT_SCALES = (0.0, 0.03, 0.1, 0.3, 1.0)
#: the initialisation study's budget: the full training set less a validation split, read
#: every epoch for the curves; the test set is read once, at the end of each run
#: (a fixed number of epochs, not ``patience``: the study reads the whole curve)
_INIT_BASE: dict[str, dict[str, Any]] = {
    "cpu": {"train_subset": None, "test_subset": None, "validation": 5000, "epochs": 10,
            "patience": None, "patience_on": None, "validate_at": None},
    "quick": {"validation": 1000, "epochs": 3},
    "paper": {"validation": 5000},
}


def _init_study(scale: str) -> list[tuple[str, str, Any, dict[str, Any]]]:
    methods: dict[str, dict[str, Any]] = {
        **{f"ellipse-eps{eps:g}": {"method": "manifold", "init": eps} for eps in INIT_SCALES},
        "ellipse-independent": {"method": "manifold", "init": "independent"},
        "plain": {"method": "plain"}}
    matched = matched_baselines(scale, "ellipse")
    methods["plain-wide"] = matched["plain-wide"]
    methods["experts"] = matched["experts"]
    # (the low-rank ellipses are compared in rotation-sparsity: 18 more runs here, about
    # 3 h on a 2-core machine, would not change which start the full ellipse gets)
    out = []
    for f in (0.1, 0.25):
        for label, keys in methods.items():
            out.append((f"{label}-f{f}", label, f,
                        {"manifold": "ellipse", **keys, **_INIT_BASE[scale], "task": "rotation",
                         "task_options": {"train_fraction": f, "mode": "subset", "bins": 36}}))
    return out


#: the learning rates (SGD, momentum 0.9) of the tuned ablation: factors of 2 around 0.01;
#: 0.0025 since both arms chose 0.005, the grid's edge, on the first four values
ABLATION_LRS = (0.0025, 0.005, 0.01, 0.02, 0.04)


def _tuned_ablation(scale: str) -> list[tuple[str, str, Any, dict[str, Any]]]:
    # the init study's budget: full training set less a validation split that chooses lr
    rot = {"task": "rotation", "task_options": {"train_fraction": 0.25, "mode": "subset",
                                                "bins": 36},
           "method": "manifold", "manifold": "ellipse", **_INIT_BASE[scale]}
    return [("metric", "metric", "with", {**rot, "precondition": True}),
            ("no-metric", "no-metric", "without", {**rot, "precondition": False})]


def _unconditioned_converged(scale: str) -> list[tuple[str, str, Any, dict[str, Any]]]:
    out = []
    for arch in _unconditioned_archs(scale):
        base = {"task": "unconditioned", "arch": arch, **_CONVERGED_BASE[scale],
                **_resnet_widths(arch)}
        if arch == "cnn":
            cnn_widths, hidden = _matched_width(scale, "ellipse", (), "plain")
            wide: dict[str, Any] = {"widths": list(cnn_widths), "hidden": hidden}
            # the CNN's folders keep the names they had before the ResNet joined
            prefix = ""
        else:
            # the unconditioned preset's ResNet, here on the full training set
            # (a ResNet has no dense width: hidden stays the default)
            widths = tuple(base["widths"]) if "widths" in base else None
            wide = {"widths": list(_matched_width(scale, "ellipse", (), "plain", arch,
                                                  widths)[0])}
            prefix = f"{arch}-"
        for label, keys in (*_UNCONDITIONED_METHODS,
                            ("point-wide", {"method": "plain", **wide})):
            out.append((prefix + label, label, arch, {**base, **keys}))
    return out


#: the learning rates (SGD, momentum 0.9) of the tuned unconditioned comparison: factors of
#: 2 around the paper's 0.01, more of them above it, since at 0.01 the ResNet ellipse ends
#: ``unconditioned-converged`` with 2.2 times the point network's train loss; 0.16 since
#: the CNN point network chose 0.08, the grid's edge, on the first five values; 0.0025
#: since the ResNet ellipse's validation accuracy fell from 0.005, the edge below, to 0.04
#: (83.8, 83.2, 82.3, 81.6 on seed 0)
UNCONDITIONED_LRS = (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16)
#: its budget: at cpu scale 10 000 training images for both networks, the subset the
#: ``unconditioned`` preset's ResNet trains on (a full-set grid of the ResNet would take about
#: 5 h a seed here: 6 rates × about 37 + 14 min), a fixed 10 epochs so that every rate is read
#: at the same point of its curve, the validation split read every epoch and choosing the rate
_UNCONDITIONED_TUNED_BASE: dict[str, dict[str, Any]] = {
    "cpu": {"train_subset": 10000, "test_subset": None, "validation": 5000, "epochs": 10,
            "patience": None, "patience_on": None, "validate_at": None},
    "quick": {"validation": 1000, "epochs": 3},
    "paper": {"validation": 5000},
}


def _unconditioned_tuned(scale: str) -> list[tuple[str, str, Any, dict[str, Any]]]:
    out = []
    for arch in _unconditioned_archs(scale):
        base = {"task": "unconditioned", "arch": arch, **_UNCONDITIONED_TUNED_BASE[scale],
                **_resnet_widths(arch)}
        for label, keys in _UNCONDITIONED_METHODS:
            out.append((f"{arch}-{label}", label, arch, {**base, **keys}))
    return out


#: the budget of the unconditioned comparison at convergence: the full training set less a
#: validation split read every epoch (the curves show the plateau), the test set once
_CONVERGED_BASE: dict[str, dict[str, Any]] = {
    "cpu": {"train_subset": None, "test_subset": None, "validation": 5000, "epochs": 15,
            "patience": None, "patience_on": None, "validate_at": None},
    "quick": {"validation": 1000, "epochs": 3},
    "paper": {"validation": 5000, "epochs": 100},
}


#: per scale, the learning rate (SGD, momentum 0.9) ``unconditioned-tuned`` chose for each
#: network on seed 0's validation split, keyed by (architecture, label): at cpu scale on
#: 10 000 images, 10 epochs (docs/results/unconditioned-tuned, ``results.json``'s
#: ``tuning``). The quick scale, a smoke test, reuses the cpu scale's; the paper scale has
#: none until that preset has chosen there (CIFAR-10).
CONVERGED_TUNED_LRS: dict[str, dict[tuple[str, str], float]] = {
    "cpu": {("cnn", "ellipse"): 0.04, ("cnn", "point"): 0.08,
            ("resnet18ln-chw", "ellipse"): 0.005, ("resnet18ln-chw", "point"): 0.005}}


def _converged_tuned_lrs(scale: str) -> dict[tuple[str, str], float]:
    """The rates ``unconditioned-converged-tuned`` runs at ``scale``.

    Raises:
        ValueError: at a scale where ``unconditioned-tuned`` has chosen none.
    """
    chosen = CONVERGED_TUNED_LRS.get("cpu" if scale == "quick" else scale)
    if chosen is None:
        raise ValueError(f"unconditioned-converged-tuned runs each network at the learning "
                         f"rate unconditioned-tuned chose for it, and there is no choice at "
                         f"{scale} scale: run 'weightmanifold sweep unconditioned-tuned "
                         f"--scale {scale}' first and add its chosen rates to "
                         f"CONVERGED_TUNED_LRS[{scale!r}] (presets.py)")
    return chosen


def _unconditioned_converged_tuned(scale: str) -> list[tuple[str, str, Any, dict[str, Any]]]:
    # unconditioned-converged's budget and networks, each at the rate unconditioned-tuned
    # chose for it: whether the gap at the paper's 0.01 survives each network's own rate
    # when both train until their curves flatten
    # (derived from that preset's configurations, so nothing but the rate can differ; the
    # width-matched twin, which no rate was chosen for, is left out)
    lrs = _converged_tuned_lrs(scale)
    return [(f"{arch}-{label}-lr{lrs[arch, label]:g}", label, arch,
             {**keys, "lr": lrs[arch, label]})
            for _, label, arch, keys in _unconditioned_converged(scale) if (arch, label) in lrs]


def _rates(lrs: dict[tuple[str, str], float]) -> str:
    """``CNN: ellipse 0.04, point 0.08; ResNet: ...`` for a description."""
    names = {"cnn": "CNN", "resnet18ln-chw": "ResNet"}
    archs = dict.fromkeys(arch for arch, _ in lrs)
    return "; ".join(f"{names[a]}: " + ", ".join(f"{label} {lr:g}" for (b, label), lr in
                                                 lrs.items() if b == a) for a in archs)


def _ablation(scale: str) -> list[tuple[str, str, Any, dict[str, Any]]]:
    rot = {"task": "rotation", "task_options": {"train_fraction": 0.25, "mode": "subset"},
           "method": "manifold", "manifold": "ellipse"}
    return [("metric", "metric", "with", {**rot, "precondition": True}),
            ("no-metric", "no-metric", "without", {**rot, "precondition": False})]


PRESETS: dict[str, Preset] = {
    p.name: p for p in (
        Preset("rotation-sparsity", "test accuracy on all angles vs fraction of training "
               "angles: ellipse manifold vs plain, concat, embed, FiLM, concat-of-a(s)",
               "Fig. 2b", "train_fraction", "test_accuracy", _rotation_sparsity),
        Preset("noise", "accuracy vs noise level: line manifold with the s-weighted L2 "
               "penalty (Eq. 14) vs baselines", "Fig. 3", None, "test_accuracy", _noise,
               reference="line"),
        Preset("optimizers", "ellipse manifold on rotated images with SGD, Adam, AdamW",
               "Fig. 4a", "optimizer", "test_accuracy", _optimizers, reference="sgd"),
        Preset("unconditioned", "ellipse with a random s per example vs a point network, "
               "paper CNN and ResNet-18-LN", "Fig. 4b-c", "arch", "test_accuracy",
               _unconditioned),
        Preset("init", "initialisation study: the ellipse's initial modulation eps (0 = "
               "constant ... 1, and independent draws) vs plain and capacity-matched "
               "baselines, seen and unseen angles, validation curves",
               "-", "train_fraction", "unseen_accuracy", _init_study, reference="plain",
               reference_side="right"),
        Preset("preconditioning-ablation", "ellipse manifold with vs without the metric "
               "preconditioning", "-", "precondition", "test_accuracy", _ablation,
               reference="metric"),
        Preset("preconditioning-tuned", "ellipse with vs without the metric, each at its own "
               "learning rate chosen on a validation split (lr "
               + ", ".join(f"{v:g}" for v in ABLATION_LRS) + ", on the first seed; the "
               "chosen rate then runs on every seed): geometry apart from step size", "-",
               "precondition", "unseen_accuracy", _tuned_ablation,
               reference="metric", tune=("lr", ABLATION_LRS), tune_seeds=1),
        Preset("unconditioned-converged", "ellipse with a random s per example vs the point "
               "network and its width-matched twin (paper CNN and ResNet-18-LN), trained "
               "until the validation curves flatten", "Fig. 4b-c", "arch", "test_accuracy",
               _unconditioned_converged, reference="ellipse"),
        Preset("unconditioned-tuned", "ellipse with a random s per example vs the point "
               "network (paper CNN and ResNet-18-LN; at cpu scale 10 000 training images, "
               "10 epochs), each at its own learning rate chosen on a validation split (lr "
               + ", ".join(f"{v:g}" for v in UNCONDITIONED_LRS) + ", on the first seed; "
               "the chosen rate then runs on every seed)", "Fig. 4b-c", "arch",
               "test_accuracy", _unconditioned_tuned, reference="ellipse",
               tune=("lr", UNCONDITIONED_LRS), tune_seeds=1),
        Preset("unconditioned-converged-tuned", "ellipse with a random s per example vs the "
               "point network (paper CNN and ResNet-18-LN) at unconditioned-converged's "
               "budget, each at the learning rate unconditioned-tuned chose for it on "
               f"validation ({_rates(CONVERGED_TUNED_LRS['cpu'])}; cpu and quick scale "
               "only)", "Fig. 4b-c", "arch", "test_accuracy",
               _unconditioned_converged_tuned, reference="ellipse"),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]
