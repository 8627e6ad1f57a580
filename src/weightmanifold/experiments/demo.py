"""The demo: rotated Fashion-MNIST with sparse training angles, ellipse manifold vs baselines."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .archive import PLACEMENT_KEYS
from .checkpoint import CheckpointError, atomic_write_csv
from .config import RunConfig
from .trainer import RESUMABLE_CHANGES, configuration_mismatch, load_run_data, train

__all__ = ["DEMO_METHODS", "demo_configs", "run_demo"]

DEMO_METHODS: dict[str, dict[str, Any]] = {
    "ellipse": {"method": "manifold"},
    "plain": {"method": "plain"},
    "concat": {"method": "concat", "features": "raw"},
    "embed": {"method": "embed", "features": "raw"},
}


def demo_configs(data_dir: str | None = None, quick: bool = False) -> dict[str, RunConfig]:
    """The demo's run configurations, one per method.

    Fashion-MNIST rotated by ``2πs``; training sees a seeded random quarter of
    36 angles (9 of them); evaluation covers all 36. The full demo trains on
    10 000 images for 3 epochs and evaluates on 1 000; ``quick`` on 3 000 images
    for 1 epoch, evaluated on 500.
    """
    base: dict[str, Any] = {
        "dataset": "fashion-mnist", "data_dir": data_dir, "task": "rotation",
        "task_options": {"train_fraction": 0.25, "mode": "subset", "bins": 36},
        "manifold": "ellipse", "train_subset": 3000 if quick else 10000,
        "test_subset": 500 if quick else 1000, "epochs": 1 if quick else 3,
        "checkpoint_every": 100,
    }
    return {label: RunConfig.from_dict({**base, **keys, "name": f"demo/{label}"})
            for label, keys in DEMO_METHODS.items()}


def _refuse_other_demos(root: Path, configs: dict[str, RunConfig]) -> None:
    """Fail before any training when ``root`` holds runs another demo made.

    The demo's runs resume; a directory from an earlier version of the demo (it
    started the ellipse independent, for one) or from ``--quick`` cannot be
    continued, and the remedy is always the same: a fresh directory.
    """
    for label, config in configs.items():
        path = root / label / "config.json"
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            continue  # nothing there (or the trainer reports what is wrong)
        mismatch = configuration_mismatch(saved, config.to_dict(), hint=False,
                                          ignore=PLACEMENT_KEYS | set(RESUMABLE_CHANGES))
        if mismatch:
            raise CheckpointError(
                f"{root / label} holds a run of another demo ({mismatch}), "
                "made by an earlier version of the demo or by the other of --quick and the "
                f"full demo; delete {root} to train the demo afresh")


def run_demo(root: str | Path, *, data_dir: str | None = None, quick: bool = False,
             progress: bool | None = None,
             log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train the demo's four networks into ``root/<method>/``, print a table, draw a plot.

    Returns:
        The table rows (also written to ``root/results.csv``).

    Raises:
        weightmanifold.experiments.datasets.DatasetError: if Fashion-MNIST is missing.
        CheckpointError: if ``root`` holds demo runs of another configuration (an
            earlier version of the demo, or ``quick`` against the full demo).
    """
    root = Path(root)
    configs = demo_configs(data_dir, quick)
    _refuse_other_demos(root, configs)
    data = load_run_data(next(iter(configs.values())))
    rows, series = [], {}
    for label, config in configs.items():
        log(f"training {label} ...")
        summary = train(config, root / label, data=data, progress=progress, log=log)
        final = summary["final"]
        rows.append({"method": label, "parameters": summary["parameters"],
                     "seen_accuracy": final["seen_accuracy"],
                     "unseen_accuracy": final["unseen_accuracy"],
                     "test_accuracy": final["test_accuracy"],
                     "train_seconds": round(summary["wall_time_s"], 1)})
        series[label] = final["by_condition"]
    atomic_write_csv(root / "results.csv", rows)
    log("")
    log("Rotated Fashion-MNIST, 9 of 36 angles seen in training (test accuracy):")
    log(f"{'method':<10}{'params':>10}{'seen angles':>13}{'unseen angles':>15}{'all':>8}"
        f"{'train s':>9}")
    for r in rows:
        log(f"{r['method']:<10}{r['parameters']:>10,}{100 * r['seen_accuracy']:>12.1f}%"
            f"{100 * r['unseen_accuracy']:>14.1f}%{100 * r['test_accuracy']:>7.1f}%"
            f"{r['train_seconds']:>9}")
    try:
        from .figures import plot_accuracy_by_condition

        path = plot_accuracy_by_condition(series, root / "demo.png", periodic=True,
                                          title="accuracy by rotation angle")
        log(f"plot: {path}")
    except ImportError:  # figures need matplotlib
        log("(matplotlib is not installed: no plot)")
    log(f"results: {root / 'results.csv'}")
    return rows
