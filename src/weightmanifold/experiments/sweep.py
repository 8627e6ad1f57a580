"""Running a preset (or any list of configurations) over seeds, with a results table and figures.

A sweep directory ``runs/<preset>/`` holds one directory per configuration
(``<config>/seed_<k>/`` plus that configuration's ``aggregate.json``), and::

    results.csv / results.json      one row per configuration: label, x, mean ± std
                                    of every final metric over the seeds
    sweep.png / sweep.csv           the metric vs the swept variable (Fig. 2b style)
    by_condition.png / .csv         accuracy per condition bin of each method

Every run is resumable, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_csv, atomic_write_json
from .presets import Preset, PresetRun
from .trainer import RunData, load_run_data, run_seeds

__all__ = ["METRICS", "run_sweep", "sweep_rows"]

METRICS = ("test_accuracy", "seen_accuracy", "unseen_accuracy", "test_loss", "train_loss")


def sweep_rows(runs: Sequence[PresetRun], aggregates: Sequence[dict[str, Any]]) -> list[dict]:
    """One table row per configuration from its seed aggregate."""
    rows = []
    for run, agg in zip(runs, aggregates, strict=True):
        row: dict[str, Any] = {"label": run.label, "x": run.x,
                               "name": run.config.name.split("/")[-1],
                               "n": len(agg["seeds"])}
        for key in METRICS:
            m = agg["metrics"].get(key)
            row[f"{key}_mean"] = None if m is None else m["mean"]
            row[f"{key}_std"] = None if m is None else m["std"]
        rows.append(row)
    return rows


def run_sweep(preset: Preset, root: str | Path, *, scale: str = "cpu",
              seeds: Sequence[int] | None = None, labels: Sequence[str] | None = None,
              data_dir: str | None = None, overrides: dict[str, Any] | None = None,
              progress: bool | None = None, log: Callable[[str], None] = print,
              figures: bool = True) -> list[dict[str, Any]]:
    """Run every configuration of ``preset`` for every seed, then tabulate and plot.

    Args:
        preset: the experiment.
        root: the sweep directory (``runs/<preset>``).
        scale: ``"cpu"`` or ``"paper"``.
        seeds: seeds to run (default: the preset's for the scale).
        labels: run only the configurations with these labels (methods).
        data_dir: where the data set lives (default: its standard location).
        overrides: run-configuration keys applied to every configuration
            (e.g. ``{"epochs": 1}`` for a quick look).
        progress, log: as :class:`~weightmanifold.experiments.trainer.Trainer`.
        figures: draw the figures at the end.

    Returns:
        The rows of ``results.csv``.

    Raises:
        ValueError: for labels that match no configuration.
    """
    root = Path(root)
    runs = preset.runs(scale)
    if labels:
        unknown = sorted(set(labels) - {r.label for r in runs})
        if unknown:
            raise ValueError(f"unknown label(s) {unknown} for preset {preset.name!r}; valid: "
                             f"{', '.join(sorted({r.label for r in runs}))}")
        runs = [r for r in runs if r.label in labels]
    changes = dict(overrides or {})
    if data_dir is not None:
        changes["data_dir"] = data_dir
    runs = [PresetRun(r.label, r.x, r.config.replace(**changes)) for r in runs]
    seeds = list(seeds) if seeds is not None else preset.seeds(scale)
    cache: dict[tuple, RunData] = {}
    aggregates = []
    for i, run in enumerate(runs):
        c = run.config
        key = (c.dataset, c.data_dir, c.train_subset, c.test_subset)
        if key not in cache:
            cache[key] = load_run_data(c)
        log(f"[{i + 1}/{len(runs)}] {c.name} ({run.label}, x={run.x}), seeds {seeds}")
        aggregates.append(run_seeds(c, seeds, root / c.name.split("/")[-1], data=cache[key],
                                    progress=progress, log=log))
    rows = sweep_rows(runs, aggregates)
    atomic_write_csv(root / "results.csv", rows)
    atomic_write_json(root / "results.json", {"preset": preset.name, "scale": scale,
                                              "seeds": seeds, "rows": rows})
    if figures:
        _figures(preset, runs, aggregates, rows, root)
    return rows


def _figures(preset: Preset, runs: Sequence[PresetRun], aggregates: Sequence[dict],
             rows: Sequence[dict], root: Path) -> None:
    from .figures import plot_accuracy_by_condition, plot_sweep

    if preset.x_name is not None and len({r["x"] for r in rows}) > 1:
        plot_sweep(rows, root / "sweep.png", x_name=preset.x_name, metric=preset.metric,
                   title=f"{preset.name} ({preset.figure})")
    # accuracy by condition of each method at one x (the sparsest swept point, if any)
    xs = [r.x for r in runs]
    numeric = [x for x in xs if isinstance(x, (int, float))]
    pick = min(numeric) if numeric else xs[0]
    series = {run.label + ("" if pick is None or len(set(xs)) == 1 else f" ({run.x})"):
              agg["by_condition"] for run, agg in zip(runs, aggregates) if run.x == pick}
    task = runs[0].config.task
    plot_accuracy_by_condition(series, root / "by_condition.png",
                               periodic=task in ("rotation", "unconditioned"),
                               title=f"{preset.name}: accuracy by condition")
