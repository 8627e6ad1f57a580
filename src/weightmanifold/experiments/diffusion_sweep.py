"""The ``diffusion`` preset: denoisers conditioned on the timestep, compared over seeds.

Methods (``methods(scale)``; labels as in ``results.csv``):

================== ==========================================================================
label              the denoiser
================== ==========================================================================
embedding          the UNet's own sinusoidal timestep embedding (the convention)
embedding-wide     the same, widened to the parameter count of the n = 4 manifolds
line               weights on a line over s = t / T (n = 2); timestep input held at 0
quadratic          a quadratic Bernstein polynomial (n = 3)
bspline4           a clamped cubic B-spline, n = 4 (on [0, 1] this is the cubic Bernstein
                   basis)
bspline8           a clamped cubic B-spline, n = 8 (4 of 8 basis tensors at any t)
experts            piecewise experts: ``wm.Bins`` with 4 equal ranges of t
both               the embedding and the bspline4 manifold together
bspline4-r8        the bspline4 manifold at rank 8 (``W0 + Σ a_k U_k V_k``)
================== ==========================================================================

Every method runs seed 0 first. Then the best manifold-only method *by seed 0's
validation loss* (held-out training images, never the test set), the
embedding and the width-matched twin run the remaining seeds, so those three
have mean ± std and paired intervals.

A sweep directory ``runs/diffusion/`` holds ``<label>/seed_<k>/`` per run, the
cached feature classifier ``classifier.pt``, and

    results.csv / results.json    one row per method: the held-out ε-MSE (mean over t
                                  and per t-bucket), Fréchet distance in the
                                  classifier's feature space, class balance, mean ±
                                  std over seeds, parameters, counted FLOPs, wall
                                  time (training) and run time (the whole run)
    differences.csv               each method minus the embedding, paired by seed
    loss_by_t.png / .csv          held-out loss against t, and its difference to the
                                  embedding
    samples.png                   DDIM samples of every method from the same noise
    tables.md                     the tables as Markdown
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .archive import load_summary
from .checkpoint import atomic_write_bytes, atomic_write_csv, atomic_write_json, load_checkpoint
from .diffusion import DiffusionConfig, build_denoiser, load_diffusion_data, train_denoiser

__all__ = ["CANDIDATES", "REFERENCE", "REPLICATED", "SEEDS", "best_manifold", "methods",
           "run_diffusion_sweep", "scale_config", "select_methods"]

REFERENCE = "embedding"
_BASE: dict[str, dict[str, Any]] = {
    # 16 × 16 Fashion-MNIST, a UNet of widths 16/32/32: ~0.1 s per plain step on 2 cores
    "cpu": {"dataset": "fashion-mnist", "image_size": 16, "widths": [16, 32, 32],
            "steps": 1500, "batch_size": 64, "val_every": 300, "checkpoint_every": 150,
            "eval_images": 2000, "samples": 1000, "sample_steps": 50},
    "paper": {"dataset": "cifar10", "image_size": None, "widths": [64, 128, 256, 256],
              "steps": 200_000, "batch_size": 128, "lr": 2e-4, "warmup": 5000,
              "ema_decay": 0.9999, "val_every": 5000, "checkpoint_every": 2000,
              "eval_images": 10000, "samples": 10000, "sample_steps": 100,
              "validation": 2000},
}
#: the seeds of the replicated methods at each scale
SEEDS = {"cpu": [0, 1, 2], "paper": [0, 1, 2]}
_SPLINE4 = {"manifold": "bspline", "manifold_options": {"n": 4}}
_MANIFOLDS: dict[str, dict[str, Any]] = {
    "line": {"manifold": "line"},
    "quadratic": {"manifold": "polynomial", "manifold_options": {"degree": 2}},
    "bspline4": _SPLINE4,
    "bspline8": {"manifold": "bspline", "manifold_options": {"n": 8}},
    "experts": {"manifold": "bins", "manifold_options": {"edges": [0.25, 0.5, 0.75]}},
    "bspline4-r8": {**_SPLINE4, "rank": 8},
}
#: the manifold-only methods among which seed 0's validation loss picks the one to replicate
CANDIDATES = ("line", "quadratic", "bspline4", "bspline8", "experts", "bspline4-r8")
#: the methods that run every seed, beside the chosen manifold
REPLICATED = (REFERENCE, "embedding-wide")


def scale_config(scale: str) -> dict[str, Any]:
    """The budget of a scale (``"cpu"`` or ``"paper"``) as configuration keys.

    Raises:
        ValueError: for an unknown scale.
    """
    if scale not in _BASE:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(_BASE)}")
    return dict(_BASE[scale])


@functools.cache
def _wide_widths(scale: str) -> tuple[int, ...]:
    """Widths (multiples of 8, one factor for all) with the bspline4 network's parameters."""
    base = scale_config(scale)
    channels = 1 if base["dataset"] == "fashion-mnist" else 3
    size = base["image_size"] or 32
    count = _parameters(DiffusionConfig(method="manifold", **base, **_SPLINE4), channels, size)
    best: tuple[float, tuple[int, ...]] | None = None
    for step in range(8, 8 * 33):
        widths = tuple(max(8, round(w * step / 8 / 8) * 8) for w in base["widths"])
        n = _parameters(DiffusionConfig(**{**base, "widths": list(widths)}), channels, size)
        if best is None or abs(n - count) < best[0]:
            best = (abs(n - count), widths)
        if n > count:
            break
    assert best is not None
    return best[1]


def _parameters(config: DiffusionConfig, channels: int, size: int) -> int:
    return sum(p.numel() for p in build_denoiser(config, channels, size).parameters())


def methods(scale: str) -> dict[str, DiffusionConfig]:
    """Every method of the preset at ``scale`` (seed 0), by label."""
    base = scale_config(scale)
    out = {"embedding": {"method": "embedding"},
           "embedding-wide": {"method": "embedding", "widths": list(_wide_widths(scale))},
           **{k: {"method": "manifold", **v} for k, v in _MANIFOLDS.items()},
           "both": {"method": "both", **_SPLINE4}}
    return {label: DiffusionConfig(name=f"diffusion/{label}", **{**base, **keys})
            for label, keys in out.items()}


def select_methods(scale: str, labels: Sequence[str] | None = None
                   ) -> dict[str, DiffusionConfig]:
    """:func:`methods` at ``scale``, only those of ``labels`` (all for ``None``).

    Raises:
        ValueError: for unknown labels or scale.
    """
    configs = methods(scale)
    if labels:
        unknown = sorted(set(labels) - set(configs))
        if unknown:
            raise ValueError(f"unknown label(s) {unknown} for preset 'diffusion'; valid: "
                             f"{', '.join(configs)}")
        configs = {k: v for k, v in configs.items() if k in labels}
    return configs


def _summaries(root: Path, label: str, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The ``summary.json`` of each of ``seeds`` of ``label`` that has one (a run writes
    it when it completes; the others are skipped).

    Raises:
        ValueError: a seed's summary cannot be read (:func:`~.archive.load_summary`).
    """
    summaries = (load_summary(root / label / f"seed_{seed}", missing_ok=True) for seed in seeds)
    return [s for s in summaries if s is not None]


def _val_loss(summary: dict[str, Any]) -> float:
    return summary["history"][-1]["val_loss"]


def best_manifold(firsts: dict[str, dict[str, Any] | None]) -> str | None:
    """The manifold-only method (of :data:`CANDIDATES`) with the lowest validation loss
    among the first-seed summaries in ``firsts`` (label → summary, ``None``: not run);
    ``None`` when no candidate has run."""
    ran = [k for k in CANDIDATES if firsts.get(k) is not None]
    return min(ran, key=lambda k: _val_loss(firsts[k])) if ran else None  # type: ignore[arg-type]


def run_diffusion_sweep(root: str | Path, *, scale: str = "cpu",
                        seeds: Sequence[int] | None = None,
                        labels: Sequence[str] | None = None, data_dir: str | None = None,
                        threads: int | None = None, device: str | None = None,
                        progress: bool | None = None, log: Callable[[str], None] = print,
                        figures: bool = True, overrides: dict[str, Any] | None = None,
                        train: bool = True) -> list[dict[str, Any]]:
    """Run the diffusion preset into ``root`` (resuming what is there), then tabulate and plot.

    Args:
        root: the sweep directory (``runs/diffusion``).
        scale: ``"cpu"`` (Fashion-MNIST at 16 × 16) or ``"paper"`` (CIFAR-10, a GPU budget).
        seeds: the seeds of the replicated methods (default: 0, 1, 2); every method
            runs the first.
        labels: run only these methods (the replication step then picks among the
            candidates that ran).
        data_dir, threads, device: as in :class:`DiffusionConfig`.
        overrides: configuration keys applied to every run (tests: tiny budgets).
        train: ``False`` tabulates and plots the runs that have finished, training
            nothing (a partial sweep's tables while it runs).

    Returns:
        The rows of ``results.csv``.

    Raises:
        ValueError: for unknown labels or scale.
        weightmanifold.experiments.sample_quality.ClassifierCacheError: for a cached
            feature classifier of another data set.
    """
    from .sample_quality import load_or_train_classifier

    root = Path(root)
    configs = select_methods(scale, labels)
    changes = dict(overrides or {})
    for key, value in (("data_dir", data_dir), ("threads", threads), ("device", device)):
        if value is not None:
            changes[key] = value
    configs = {k: v.replace(**changes) for k, v in configs.items()}
    seeds = list(seeds) if seeds is not None else list(SEEDS[scale])
    first = next(iter(configs.values()))
    if train:
        train_set, test_set = load_diffusion_data(first)
        judge = load_or_train_classifier(
            root / "classifier.pt", train_set.name, train_set.images, train_set.labels,
            test_set.images.float() / 255, test_set.labels, classes=len(train_set.classes),
            progress=progress, log=log)
        accuracy: float | None = judge.test_accuracy

        def run(label: str, seed: int) -> dict[str, Any] | None:
            c = configs[label].replace(seed=seed)
            log(f"diffusion/{label} seed {seed}")
            return train_denoiser(c, root / label / f"seed_{seed}", train_set.images,
                                  test_set.images, judge=judge, progress=progress, log=log)
    else:  # tabulate what has finished: no data, no classifier training
        cache = root / "classifier.pt"
        accuracy = load_checkpoint(cache)["test_accuracy"] if cache.exists() else None

        def run(label: str, seed: int) -> dict[str, Any] | None:
            done = _summaries(root, label, [seed])
            return done[0] if done else None

    firsts = {label: run(label, seeds[0]) for label in configs}
    best = best_manifold(firsts)
    replicate = [k for k in (*REPLICATED, best) if k in configs]
    if best is not None and train:
        log(f"best manifold by seed {seeds[0]}'s validation loss: {best}; replicated over "
            f"seeds {seeds}")
    for label in replicate if train else ():
        for seed in seeds[1:]:
            run(label, seed)
    rows = _rows(root, configs, seeds)
    diffs = _differences(root, configs, seeds)
    wanted = {k: len(seeds) if k in replicate else 1 for k in configs}
    complete = best is not None and all(len(_summaries(root, k, seeds[:n])) == n
                                        for k, n in wanted.items())
    atomic_write_csv(root / "results.csv", rows)
    atomic_write_csv(root / "differences.csv", diffs)
    atomic_write_json(root / "results.json", {
        "preset": "diffusion", "scale": scale, "seeds": seeds, "complete": complete,
        "best_manifold": best,
        "chosen_by": f"validation loss of seed {seeds[0]}",
        "classifier_test_accuracy": accuracy, "rows": rows, "differences": diffs})
    atomic_write_bytes(root / "tables.md", markdown_tables(rows, diffs, best).encode())
    if figures:
        from .diffusion_figures import plot_loss_by_t, plot_samples

        plot_loss_by_t(rows, diffs, root / "loss_by_t.png", buckets=first.buckets)
        plot_samples({label: root / label / f"seed_{seeds[0]}" / "samples.pt"
                      for label in configs}, root / "samples.png")
    return rows


_METRICS = ("loss", "frechet", "class_balance")


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _rows(root: Path, configs: dict[str, DiffusionConfig], seeds: Sequence[int]
          ) -> list[dict[str, Any]]:
    from .sweep import mean_run_time

    rows = []
    for label, c in configs.items():
        runs = _summaries(root, label, seeds)
        if not runs:
            continue
        row: dict[str, Any] = {"label": label, "method": c.method,
                               "manifold": None if c.method == "embedding" else c.manifold,
                               "n": len(runs), "seeds": " ".join(
                                   str(r["config"]["seed"]) for r in runs)}
        keys = [*_METRICS, *(f"loss_b{k}" for k in range(c.buckets))]
        for key in keys:
            values = [r["final"][key] for r in runs if key in r["final"]]
            if values:
                row[f"{key}_mean"], row[f"{key}_std"] = _mean_std(values)
        row["val_loss_mean"], row["val_loss_std"] = _mean_std([_val_loss(r) for r in runs])
        row["parameters"] = runs[0]["parameters"]
        row["train_flops_per_example"] = runs[0]["train_flops_per_example"]
        row["wall_time_s"] = sum(r["wall_time_s"] for r in runs) / len(runs)
        row["run_time_s"] = mean_run_time(runs)
        rows.append(row)
    return rows


def _differences(root: Path, configs: dict[str, DiffusionConfig], seeds: Sequence[int]
                 ) -> list[dict[str, Any]]:
    from .sweep import paired_difference

    ref = {r["config"]["seed"]: r for r in _summaries(root, REFERENCE, seeds)}
    out = []
    for label, c in configs.items():
        if label == REFERENCE:
            continue
        other = {r["config"]["seed"]: r for r in _summaries(root, label, seeds)}
        common = sorted(set(ref) & set(other))
        if not common:
            continue
        for key in [*_METRICS, *(f"loss_b{k}" for k in range(c.buckets))]:
            if key not in ref[common[0]]["final"]:
                continue
            d = paired_difference([other[s]["final"][key] for s in common],
                                  [ref[s]["final"][key] for s in common])
            base = sum(ref[s]["final"][key] for s in common) / len(common)
            out.append({"label": label, "reference": REFERENCE, "sign": "method - reference",
                        "metric": key, "difference": d["mean"], "ci_low": d["ci_low"],
                        "ci_high": d["ci_high"], "n": d["n"],
                        "relative": d["mean"] / base if base else None})
    return out


def _num(v: Any, digits: int = 4) -> str:
    return "–" if v is None or v == "" else f"{float(v):.{digits}f}"


def markdown_tables(rows: Sequence[dict[str, Any]], diffs: Sequence[dict[str, Any]],
                    best: str | None) -> str:
    """``results.csv`` and the headline rows of ``differences.csv`` as Markdown.

    "wall s" is a run's training steps with the periodic validation, "run s" the
    whole run with the final evaluation (``–`` where a seed's run predates it),
    each the mean over the seeds.
    """
    head = ["method", "seeds", "held-out ε-MSE", "t < 0.1 T", "t ≥ 0.9 T", "Fréchet",
            "class balance", "parameters", "MFLOP / example", "wall s", "run s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        last = max(int(k[6:-5]) for k in r if k.startswith("loss_b") and k.endswith("_mean"))

        def ms(key: str, digits: int = 4, row: dict[str, Any] = r) -> str:
            std = row.get(f"{key}_std")
            return _num(row.get(f"{key}_mean"), digits) + (
                "" if std is None else f" ± {float(std):.{digits}f}")

        lines.append("| " + " | ".join([
            r["label"] + (" (best by validation)" if r["label"] == best else ""),
            str(r["n"]), ms("loss"), ms("loss_b0"), ms(f"loss_b{last}"), ms("frechet", 2),
            ms("class_balance", 3), f"{int(r['parameters']):,}",
            f"{float(r['train_flops_per_example']) / 1e6:,.1f}",
            _num(r.get("wall_time_s"), 0), _num(r.get("run_time_s"), 0)]) + " |")
    if diffs:
        lines += ["", "Each method minus the embedding, paired by seed (negative: lower loss "
                      "or distance than the embedding; 95 % t interval where n > 1):", "",
                  "| comparison | metric | difference | relative | 95 % interval | seeds |",
                  "|---|---|---|---|---|---|"]
        for d in diffs:
            if d["metric"] not in ("loss", "frechet", "loss_b0", "loss_b9"):
                continue
            interval = "–" if d["ci_low"] is None else \
                f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
            rel = "–" if d["relative"] is None else f"{100 * d['relative']:+.1f} %"
            lines.append(f"| {d['label']} − {d['reference']} | {d['metric']} | "
                         f"{d['difference']:+.4f} | {rel} | "
                         f"{interval} | {d['n']} |")
    return "\n".join(lines) + "\n"
