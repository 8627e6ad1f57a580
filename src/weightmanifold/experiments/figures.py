"""Figures of runs and presets: PNGs with the exact numbers behind them as CSVs.

Every function writes one PNG and, next to it (same stem, ``.csv``), the numbers
it draws, so that a figure can be checked or re-plotted without the runs. Both
files are written atomically. Drawing uses :class:`matplotlib.figure.Figure`
with the Agg canvas directly: no ``pyplot``, no global backend state, safe in
headless processes and threads.

====================================  ===============================================
function                              what it draws
====================================  ===============================================
:func:`plot_training_curves`          train/test loss and test accuracy vs epoch
:func:`plot_accuracy_by_condition`    accuracy vs condition per method (polar when
                                      periodic; Fig. 3 style when not)
:func:`plot_sweep`                    metric vs swept variable per method (Fig. 2b,
                                      Fig. 4); bars for categorical values
:func:`plot_curves_over_seeds`        a metric vs epoch per method, mean ± std over
                                      seeds (Fig. 4 a-c)
:func:`plot_manifold_projection`      a 1-D weight manifold in its top two principal
                                      components over training (Fig. 1c)
:func:`plot_run`                      all of the above that apply to a run directory
                                      or a multi-seed root
====================================  ===============================================
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from ..topology import Manifold
from .archive import load_summary
from .checkpoint import atomic_write_bytes, atomic_write_csv

__all__ = [
    "plot_accuracy_by_condition",
    "plot_curves_over_seeds",
    "plot_manifold_projection",
    "plot_run",
    "plot_sweep",
    "plot_training_curves",
]

DPI = 120
_SEEN_COLOR = "0.88"
_CURVE_COLUMNS = ("train_loss", "test_loss", "val_loss", "test_accuracy", "seen_accuracy",
                  "unseen_accuracy", "val_accuracy", "val_seen_accuracy", "val_unseen_accuracy")


# -- helpers ---------------------------------------------------------------------------------
def _png_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"figure path {path} must end in .png (its numbers go to "
                         f"{path.with_suffix('.csv').name})")
    return path


def _save(fig: Figure, path: Path, rows: Sequence[Mapping[str, Any]],
          columns: list[str]) -> Path:
    """Write the CSV of the plotted numbers, then the PNG, both atomically."""
    atomic_write_csv(path.with_suffix(".csv"), rows, columns)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _number(value: Any, what: str) -> float | None:
    """``value`` as a float; ``None`` (or an empty CSV cell) stays ``None``."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what}: expected a number, got {value!r}") from err


def _flag(value: Any, what: str) -> bool | None:
    """A boolean from a Python bool/number or a CSV cell ("True", "false", "1", "")."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float)):
        return bool(value)
    text = str(value).strip().lower()
    if text == "":
        return None
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"{what}: expected a boolean, got {value!r}")


def _nan(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=float)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with open(path) as f:
        return json.load(f)


# -- 1. training curves ----------------------------------------------------------------------
def plot_training_curves(run_dir: str | Path) -> Path:
    """Loss and accuracy over training of one run, from its ``metrics.csv``.

    Left panel: train loss (and test loss); right panel: test accuracy, plus
    the accuracy on seen and unseen conditions where the run has them. The x
    axis is the epoch; when the epochs are not strictly increasing (a run
    stopped by ``max_steps`` mid-epoch evaluates twice at one epoch) it is the
    optimisation step instead.

    Writes ``run_dir/curves.png`` and ``run_dir/curves.csv`` (columns ``epoch``,
    ``step`` and every plotted metric; empty cells are metrics the run does
    not have at that evaluation).

    Args:
        run_dir: a run directory written by the trainer.

    Returns:
        The path of the PNG.

    Raises:
        FileNotFoundError: if ``run_dir/metrics.csv`` does not exist.
        ValueError: if it has no rows (no evaluation yet), lacks a required
            column or holds a non-number.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "metrics.csv").write_text(
        ...     "epoch,step,train_loss,test_accuracy,test_loss,seen_accuracy,unseen_accuracy\\n"
        ...     "1,10,1.5,0.4,1.4,,\\n2,20,1.1,0.6,1.2,,\\n")
        >>> plot_training_curves(d).name
        'curves.png'
        >>> (d / "curves.csv").read_text().splitlines()[0]
        'epoch,step,train_loss,test_loss,test_accuracy'
    """
    run_dir = Path(run_dir)
    path = run_dir / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a run directory "
                                "(or the run has not evaluated yet)")
    raw = _read_csv(path)
    if not raw:
        raise ValueError(f"{path} has no rows: the run has not finished an evaluation yet")
    missing = [c for c in ("epoch", "step", "train_loss", "test_accuracy") if c not in raw[0]]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}; "
                         f"it has {', '.join(raw[0])}")
    rows: list[dict[str, Any]] = []
    for i, r in enumerate(raw):
        where = f"{path} row {i + 1}"
        row: dict[str, Any] = {}
        for key in ("epoch", "step"):
            v = _number(r[key], f"{where} {key}")
            if v is None:
                raise ValueError(f"{where}: {key} is empty")
            row[key] = int(v) if v.is_integer() else v
        for key in _CURVE_COLUMNS:
            row[key] = _number(r.get(key), f"{where} {key}")
        rows.append(row)
    present = [k for k in _CURVE_COLUMNS if any(r[k] is not None for r in rows)]
    epochs = [r["epoch"] for r in rows]
    by_epoch = all(b > a for a, b in itertools.pairwise(epochs))
    x = np.array(epochs if by_epoch else [r["step"] for r in rows], dtype=float)
    xlabel = "epoch" if by_epoch else "step"

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    styles = {"train_loss": ("train", "-"), "test_loss": ("test", "--"),
              "test_accuracy": ("test (all conditions)", "-"),
              "seen_accuracy": ("seen conditions", "--"),
              "unseen_accuracy": ("unseen conditions", ":"),
              "val_loss": ("validation", "-."), "val_accuracy": ("validation (all)", "-."),
              "val_seen_accuracy": ("validation, seen", "-."),
              "val_unseen_accuracy": ("validation, unseen", (0, (1, 3)))}
    for key in present:
        ax = ax_loss if key.endswith("_loss") else ax_acc
        label, ls = styles[key]
        ax.plot(x, _nan([r[key] for r in rows]), linestyle=ls, marker="o", markersize=3,
                label=label)
    ax_loss.set(xlabel=xlabel, ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel=xlabel, ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(run_dir.name)
    return _save(fig, run_dir / "curves.png", rows, ["epoch", "step", *present])


# -- 2. accuracy by condition ----------------------------------------------------------------
def _condition_rows(label: str, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if not rows:
        raise ValueError(f"series {label!r} has no rows")
    out = []
    for i, r in enumerate(rows):
        where = f"series {label!r} row {i}"
        if not isinstance(r, Mapping):
            raise TypeError(f"{where}: expected a mapping, got {type(r).__name__}")
        if "s" not in r:
            raise ValueError(f"{where} has no 's' (keys: {', '.join(map(str, r))})")
        key = "accuracy_mean" if "accuracy_mean" in r else "accuracy"
        if key not in r:
            raise ValueError(f"{where} has neither 'accuracy_mean' nor 'accuracy' "
                             f"(keys: {', '.join(map(str, r))})")
        s = _number(r["s"], f"{where} s")
        acc = _number(r[key], f"{where} {key}")
        if s is None or acc is None:
            raise ValueError(f"{where}: s and accuracy must not be empty")
        out.append({"s": s, "accuracy": acc,
                    "accuracy_std": _number(r.get("accuracy_std"), f"{where} accuracy_std"),
                    "seen": _flag(r.get("seen"), f"{where} seen")})
    out.sort(key=lambda r: r["s"])
    for prev, cur in itertools.pairwise(out):
        if prev["s"] == cur["s"]:
            raise ValueError(f"series {label!r} has two rows at s = {cur['s']!r}; pass the "
                             "rows of one evaluation (e.g. the last epoch's)")
    return out


def plot_accuracy_by_condition(series: Mapping[str, Sequence[Mapping[str, Any]]],
                               path: str | Path, *, periodic: bool,
                               title: str | None = None) -> Path:
    """Accuracy as a function of the condition ``s``, one line per method.

    Periodic conditions (rotation angles, the unconditioned circle) are drawn
    on a polar plot at angle :math:`2\\pi s` with accuracy as the radius, the
    curve closed; bounded ones (noise level) on a Cartesian plot with ``s`` on
    x. Where a row has ``accuracy_std`` a band of mean ± std (clipped to
    ``[0, 1]``) is drawn. When some conditions were not seen in training the
    seen ones are shaded (the union over methods) and each line marks seen
    conditions with filled markers and unseen ones with hollow markers.

    The CSV has one row per plotted point (the closing segment of a polar curve
    repeats the first point and is not a row): ``label, s, angle`` (radians,
    periodic only) ``, accuracy, accuracy_std, lower, upper, seen``, where
    ``lower``/``upper`` are the drawn band (empty without a std).

    Args:
        series: method label → rows, each a mapping with ``s``, ``accuracy_mean``
            or ``accuracy`` (fractions), optionally ``accuracy_std`` and ``seen``
            (a bool or a CSV cell such as ``"True"``). Rows of
            ``metrics_by_condition.csv`` and of ``aggregate.json``'s
            ``by_condition`` fit as they are.
        path: the PNG to write (must end in ``.png``).
        periodic: whether ``s`` wraps (polar plot).
        title: a title for the figure.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: for an empty ``series``, a method without rows, a row
            without ``s`` or accuracy, two rows of one method at the same ``s``
            (e.g. several epochs' rows), a non-number, or a path not ending in
            ``.png``.
        TypeError: if a row is not a mapping.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> rows = [{"s": k / 4, "accuracy": 0.9 - 0.1 * k, "seen": k == 0} for k in range(4)]
        >>> plot_accuracy_by_condition({"ellipse": rows}, d / "acc.png", periodic=True).name
        'acc.png'
    """
    path = _png_path(path)
    if not series:
        raise ValueError("plot_accuracy_by_condition: series is empty (no method to plot)")
    data = {str(label): _condition_rows(str(label), rows) for label, rows in series.items()}
    flags = [r["seen"] for rows in data.values() for r in rows if r["seen"] is not None]
    mark_seen = bool(flags) and not all(flags)

    fig = Figure(figsize=(6.5, 6) if periodic else (7, 4.5), layout="constrained")
    ax = fig.add_subplot(projection="polar" if periodic else None)
    out_rows: list[dict[str, Any]] = []
    upper_max = 1.0
    for k, (label, rows) in enumerate(data.items()):
        color = f"C{k % 10}"
        s = np.array([r["s"] for r in rows])
        acc = np.array([r["accuracy"] for r in rows])
        has_std = any(r["accuracy_std"] is not None for r in rows)
        std = np.array([r["accuracy_std"] or 0.0 for r in rows])
        lo, hi = np.clip(acc - std, 0.0, 1.0), np.clip(acc + std, 0.0, 1.0)
        x = 2 * math.pi * s if periodic else s
        for j, r in enumerate(rows):
            row = {"label": label, "s": r["s"]}
            if periodic:
                row["angle"] = float(x[j])
            row.update({"accuracy": r["accuracy"], "accuracy_std": r["accuracy_std"],
                        "lower": float(lo[j]) if has_std else None,
                        "upper": float(hi[j]) if has_std else None, "seen": r["seen"]})
            out_rows.append(row)
        if periodic:  # close the curve
            xc, acc_c = np.append(x, x[0] + 2 * math.pi), np.append(acc, acc[0])
            lo_c, hi_c = np.append(lo, lo[0]), np.append(hi, hi[0])
        else:
            xc, acc_c, lo_c, hi_c = x, acc, lo, hi
        ax.plot(xc, acc_c, "-", color=color, label=label, linewidth=1.6)
        if has_std:
            ax.fill_between(xc, lo_c, hi_c, color=color, alpha=0.2, linewidth=0)
            upper_max = max(upper_max, float(hi.max()))
        if mark_seen:
            seen = np.array([r["seen"] is True for r in rows])
            ax.plot(x[seen], acc[seen], "o", color=color, markersize=5)
            ax.plot(x[~seen], acc[~seen], "o", markerfacecolor="white", color=color,
                    markersize=5)
        else:
            ax.plot(x, acc, "o", color=color, markersize=3)
    if mark_seen:
        seen_s = sorted({r["s"] for rows in data.values() for r in rows if r["seen"]})
        all_s = sorted({r["s"] for rows in data.values() for r in rows})
        gaps = np.diff(all_s)
        width = float(np.median(gaps)) if len(gaps) else (1.0 if periodic else 0.1)
        if periodic:
            ax.bar(2 * math.pi * np.array(seen_s), upper_max, width=2 * math.pi * width,
                   bottom=0.0, color=_SEEN_COLOR, zorder=0, linewidth=0)
        else:
            for sv in seen_s:
                ax.axvspan(sv - width / 2, sv + width / 2, color=_SEEN_COLOR, zorder=0,
                           linewidth=0)
    if periodic:
        ax.set_ylim(0.0, upper_max)
        ax.set_title("accuracy vs condition (angle = 2π s)", fontsize="medium")
    else:
        ax.set(xlabel="condition s", ylabel="accuracy")
        ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if mark_seen:
        handles += [Patch(color=_SEEN_COLOR, label="training conditions"),
                    Line2D([], [], marker="o", color="0.3", linestyle="", label="seen"),
                    Line2D([], [], marker="o", color="0.3", markerfacecolor="white",
                           linestyle="", label="unseen")]
    if periodic:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  fontsize="small")
    else:
        ax.legend(handles=handles, fontsize="small")
    if title:
        fig.suptitle(title)
    columns = ["label", "s", *(["angle"] if periodic else []), "accuracy", "accuracy_std",
               "lower", "upper", "seen"]
    return _save(fig, path, out_rows, columns)


# -- 3. sweeps -------------------------------------------------------------------------------
def plot_sweep(rows: Sequence[Mapping[str, Any]], path: str | Path, *, x_name: str,
               metric: str = "test_accuracy", title: str | None = None) -> Path:
    """A metric against a swept variable, one line per method (Fig. 2b, Fig. 4).

    Numeric ``x`` (e.g. the fraction of training angles): one line per label
    through the means, sorted by ``x``, with a band of mean ± std. Categorical
    ``x`` (any ``x`` a string, e.g. optimiser or architecture names): a grouped
    bar chart, one group per ``x`` (in order of first appearance) and one bar
    per label, with std error bars. ``x = None`` for every row (a preset
    without a swept variable) gives one group called ``"all"``.

    Rows whose ``{metric}_mean`` is missing or ``None`` (e.g. unseen accuracy
    of a run that saw every condition) are left out. The CSV holds the plotted
    rows in drawing order: ``label, x, {metric}_mean, {metric}_std, n``.

    Args:
        rows: one mapping per configuration with ``label``, ``x``,
            ``{metric}_mean`` and optionally ``{metric}_std`` and ``n``.
        path: the PNG to write (must end in ``.png``).
        x_name: the swept variable (x-axis label), e.g. ``"train_fraction"``.
        metric: the metric whose ``_mean``/``_std`` columns are drawn.
        title: a title for the figure.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: for no rows, no row with ``{metric}_mean`` (listing the
            metrics the rows have), a row without ``label``/``x``, mixed ``None``
            and non-``None`` x, two rows of the same label and x, or a path not
            ending in ``.png``.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> rows = [{"label": "ellipse", "x": f, "test_accuracy_mean": 0.8,
        ...          "test_accuracy_std": 0.01, "n": 3} for f in (0.1, 0.5, 1.0)]
        >>> plot_sweep(rows, d / "sweep.png", x_name="train_fraction").name
        'sweep.png'
    """
    path = _png_path(path)
    if not rows:
        raise ValueError("plot_sweep: no rows to plot")
    mean_key, std_key = f"{metric}_mean", f"{metric}_std"
    if not any(isinstance(r, Mapping) and r.get(mean_key) is not None for r in rows):
        available = sorted({str(k)[:-5] for r in rows if isinstance(r, Mapping) for k in r
                            if str(k).endswith("_mean")})
        raise ValueError(f"plot_sweep: no row has {mean_key!r}; metrics in the rows: "
                         f"{', '.join(available) or 'none'}")
    points: list[dict[str, Any]] = []
    seen_keys: set[tuple[str, Any]] = set()
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise TypeError(f"plot_sweep: row {i} is a {type(r).__name__}, not a mapping")
        for key in ("label", "x"):
            if key not in r:
                raise ValueError(f"plot_sweep: row {i} has no {key!r} "
                                 f"(keys: {', '.join(map(str, r))})")
        mean = _number(r.get(mean_key), f"plot_sweep row {i} {mean_key}")
        if mean is None:
            continue
        std = _number(r.get(std_key), f"plot_sweep row {i} {std_key}")
        n = _number(r.get("n"), f"plot_sweep row {i} n")
        key = (str(r["label"]), r["x"])
        if key in seen_keys:
            raise ValueError(f"plot_sweep: two rows for label {key[0]!r} at x = {key[1]!r}")
        seen_keys.add(key)
        points.append({"label": str(r["label"]), "x": r["x"], "mean": mean, "std": std,
                       "n": None if n is None else int(n)})
    xs = [p["x"] for p in points]
    none_x = [x is None for x in xs]
    if any(none_x) and not all(none_x):
        raise ValueError("plot_sweep: some rows have x = None and others do not")
    categorical = all(none_x) or any(isinstance(x, (str, bool)) for x in xs)
    labels = list(dict.fromkeys(p["label"] for p in points))

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ordered: list[dict[str, Any]] = []
    if categorical:
        for p in points:
            p["x"] = "all" if p["x"] is None else str(p["x"])
        groups = list(dict.fromkeys(p["x"] for p in points))
        # one method per group (the swept variable is the method): centred bars
        single = all(sum(p["x"] == g for p in points) == 1 for g in groups)
        width = 0.6 if single else 0.8 / len(labels)
        for k, label in enumerate(labels):
            mine = {p["x"]: p for p in points if p["label"] == label}
            pos = [g for g, name in enumerate(groups) if name in mine]
            pts = [mine[groups[g]] for g in pos]
            ordered += pts
            offset = 0.0 if single else (k - (len(labels) - 1) / 2) * width
            ax.bar(np.array(pos) + offset,
                   [p["mean"] for p in pts], width=width, color=f"C{k % 10}", label=label,
                   yerr=[p["std"] or 0.0 for p in pts], capsize=3)
        ax.set_xticks(range(len(groups)), groups)
    else:
        for p in points:
            xv = _number(p["x"], f"plot_sweep x of label {p['label']!r}")
            assert xv is not None
            p["x"] = xv
        for k, label in enumerate(labels):
            pts = sorted((p for p in points if p["label"] == label), key=lambda p: p["x"])
            ordered += pts
            color = f"C{k % 10}"
            x = np.array([p["x"] for p in pts])
            mean = np.array([p["mean"] for p in pts])
            ax.plot(x, mean, "-o", color=color, label=label, markersize=4)
            if any(p["std"] is not None for p in pts):
                std = np.array([p["std"] or 0.0 for p in pts])
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2,
                                linewidth=0)
        ax.grid(alpha=0.3)
    ax.set(xlabel=x_name, ylabel=metric.replace("_", " "))
    ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    out = [{"label": p["label"], "x": p["x"], mean_key: p["mean"], std_key: p["std"],
            "n": p["n"]} for p in ordered]
    return _save(fig, path, out, ["label", "x", mean_key, std_key, "n"])


def plot_curves_over_seeds(series: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
                           path: str | Path, *, metric: str = "test_accuracy",
                           title: str | None = None) -> Path:
    """A metric over training per method, mean ± std over seeds (Fig. 4 a–c).

    For each method and epoch the mean over the seeds that reached that epoch
    is drawn, with a band of ± one (sample) standard deviation where two or
    more seeds did. The CSV has one row per drawn point:
    ``label, epoch, {metric}_mean, {metric}_std, n``.

    Args:
        series: method label → one sequence of rows per seed, each row a
            mapping with ``epoch`` and ``metric`` (rows of ``metrics.csv`` fit
            as they are; empty cells are skipped).
        path: the PNG to write (must end in ``.png``).
        metric: the column to draw.
        title: a title for the figure.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: for an empty ``series``, a method without any row holding
            ``metric``, a row without ``epoch``, a non-number, or a path not
            ending in ``.png``.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> seeds = [[{"epoch": e, "test_accuracy": 0.5 + 0.1 * e + 0.01 * k} for e in (1, 2)]
        ...          for k in range(3)]
        >>> plot_curves_over_seeds({"sgd": seeds}, d / "curves.png").name
        'curves.png'
    """
    path = _png_path(path)
    if not series:
        raise ValueError("plot_curves_over_seeds: series is empty (no method to plot)")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    out: list[dict[str, Any]] = []
    for k, (label, seeds) in enumerate(series.items()):
        by_epoch: dict[int, list[float]] = {}
        for j, rows in enumerate(seeds):
            for i, r in enumerate(rows):
                if "epoch" not in r:
                    raise ValueError(f"plot_curves_over_seeds: {label!r} seed {j} row {i} "
                                     "has no 'epoch'")
                epoch = _number(r["epoch"], f"plot_curves_over_seeds {label!r} epoch")
                value = _number(r.get(metric), f"plot_curves_over_seeds {label!r} {metric}")
                if epoch is not None and value is not None:
                    by_epoch.setdefault(int(epoch), []).append(value)
        if not by_epoch:
            raise ValueError(f"plot_curves_over_seeds: method {label!r} has no row with "
                             f"{metric!r}")
        epochs = sorted(by_epoch)
        mean = np.array([np.mean(by_epoch[e]) for e in epochs])
        std = np.array([np.std(by_epoch[e], ddof=1) if len(by_epoch[e]) > 1 else math.nan
                        for e in epochs])
        color = f"C{k % 10}"
        ax.plot(epochs, mean, "-o", color=color, label=str(label), markersize=4)
        ok = ~np.isnan(std)
        if ok.any():
            ax.fill_between(np.array(epochs)[ok], (mean - std)[ok], (mean + std)[ok],
                            color=color, alpha=0.2, linewidth=0)
        out += [{"label": str(label), "epoch": e, f"{metric}_mean": float(m),
                 f"{metric}_std": None if math.isnan(s) else float(s), "n": len(by_epoch[e])}
                for e, m, s in zip(epochs, mean, std)]
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path, out, ["label", "epoch", f"{metric}_mean", f"{metric}_std", "n"])


# -- 4. the manifold in principal components (Fig. 1c) ---------------------------------------
def _svd_flip(vh: Tensor) -> Tensor:
    """Fix each component's sign: its largest-magnitude entry is positive."""
    idx = vh.abs().argmax(dim=1)
    signs = torch.sign(vh[torch.arange(vh.shape[0]), idx])
    signs[signs == 0] = 1.0
    return vh * signs[:, None]


def plot_manifold_projection(snapshots: Sequence[tuple[str, Tensor]], manifold: Manifold,
                             path: str | Path, *, num_points: int = 64) -> Path:
    """A 1-D weight manifold over training, projected on its top two principal components.

    Each snapshot is the basis ``P`` of one layer (the paper uses the first
    convolution) at one moment of training, shape ``[n, ...]``. For each,
    :math:`W(s) = \\sum_k a_k(s) P_k` is evaluated on ``num_points`` values of
    ``s`` (``k / num_points`` for a periodic manifold, evenly spaced over
    ``[0, 1]`` with both ends for a bounded one) and flattened. One PCA is fit
    on the stack of all snapshots' curves (centred by its mean, SVD in
    float64; each component's sign is fixed so that its largest entry is
    positive) and every snapshot's curve is drawn in that plane, coloured by its
    position in ``snapshots`` (training time), closed for periodic manifolds,
    with a marker at ``s = 0``.

    The CSV has one row per evaluated point: ``label, index`` (position in
    ``snapshots``) ``, s, pc1, pc2``. The axis labels give each component's
    share of the variance.

    Args:
        snapshots: ``(label, basis)`` pairs in training order; every basis has
            ``manifold.n`` rows and the same number of entries.
        manifold: the manifold of the layer, with ``dim == 1`` (line, ellipse,
            Fourier, polynomial, B-spline).
        path: the PNG to write (must end in ``.png``).
        num_points: points per curve (>= 3).

    Returns:
        The path of the PNG.

    Raises:
        ValueError: for a manifold with ``dim != 1``, no snapshots, a basis of
            the wrong first size or of another size than the others,
            ``num_points < 3`` or a path not ending in ``.png``.
        TypeError: if a basis is not a tensor.

    Examples:
        >>> import tempfile, pathlib, torch, weightmanifold as wm
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> snaps = [(f"epoch {e}", torch.randn(3, 4, 1, 3, 3)) for e in range(2)]
        >>> plot_manifold_projection(snaps, wm.Ellipse(), d / "pca.png", num_points=16).name
        'pca.png'
    """
    path = _png_path(path)
    if not isinstance(manifold, Manifold):
        raise TypeError(f"manifold must be a weightmanifold Manifold, got "
                        f"{type(manifold).__name__}")
    if manifold.dim != 1:
        raise ValueError(f"plot_manifold_projection draws curves: it needs a manifold with "
                         f"dim == 1, got {manifold!r} with dim == {manifold.dim}")
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 3:
        raise ValueError(f"num_points must be an integer >= 3, got {num_points!r}")
    if not snapshots:
        raise ValueError("plot_manifold_projection: no snapshots")
    periodic = manifold.periodic[0]
    if periodic:
        s = torch.arange(num_points, dtype=torch.float64) / num_points
    else:
        s = torch.linspace(0.0, 1.0, num_points, dtype=torch.float64)
    a = manifold.coefficients(s)  # [num_points, n]
    curves = []
    size = None
    for i, (label, basis) in enumerate(snapshots):
        if not isinstance(basis, Tensor):
            raise TypeError(f"snapshot {i} ({label!r}): the basis must be a tensor, got "
                            f"{type(basis).__name__}")
        if basis.ndim < 1 or basis.shape[0] != manifold.n:
            raise ValueError(f"snapshot {i} ({label!r}): basis of shape {tuple(basis.shape)} "
                             f"does not have {manifold.n} rows (the basis tensors of "
                             f"{manifold!r})")
        flat = basis.detach().to("cpu", torch.float64).reshape(manifold.n, -1)
        if size is None:
            size = flat.shape[1]
        elif flat.shape[1] != size:
            raise ValueError(f"snapshot {i} ({label!r}) has {flat.shape[1]} weights per "
                             f"point, snapshot 0 has {size}: all must be the same layer")
        curves.append(a @ flat)  # [num_points, D]
    stack = torch.cat(curves)
    centred = stack - stack.mean(dim=0, keepdim=True)
    _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
    vh = _svd_flip(vh[:2])
    proj = centred @ vh.T
    if proj.shape[1] < 2:  # a layer with a single weight: no second component
        proj = torch.cat([proj, torch.zeros(len(proj), 2 - proj.shape[1],
                                            dtype=proj.dtype)], dim=1)
    total = float((sv**2).sum())
    ratio = [(float(sv[k] ** 2) / total if total > 0 and k < len(sv) else 0.0)
             for k in range(2)]
    points = proj.reshape(len(snapshots), num_points, 2).numpy()

    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["viridis"]
    count = len(snapshots)
    norm = Normalize(vmin=0, vmax=max(1, count - 1))
    rows: list[dict[str, Any]] = []
    for i, (label, _) in enumerate(snapshots):
        color = cmap(norm(i))
        xy = points[i]
        drawn = np.vstack([xy, xy[:1]]) if periodic else xy
        ax.plot(drawn[:, 0], drawn[:, 1], "-", color=color, linewidth=1.5)
        ax.plot(xy[0, 0], xy[0, 1], "o", color=color, markeredgecolor="black", markersize=6)
        rows += [{"label": label, "index": i, "s": float(s[j]), "pc1": float(xy[j, 0]),
                  "pc2": float(xy[j, 1])} for j in range(num_points)]
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="training time")
    step = max(1, math.ceil(count / 10))
    ticks = list(range(0, count, step))
    bar.set_ticks(ticks, labels=[str(snapshots[t][0]) for t in ticks])
    ax.plot([], [], "o", color="0.5", markeredgecolor="black", label="s = 0")
    ax.legend(fontsize="small")
    ax.set(xlabel=f"PC 1 ({100 * ratio[0]:.1f}% of variance)",
           ylabel=f"PC 2 ({100 * ratio[1]:.1f}% of variance)",
           title=f"{manifold!r} in weight space, top two principal components")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    return _save(fig, path, rows, ["label", "index", "s", "pc1", "pc2"])


# -- 5. everything for a run -----------------------------------------------------------------
def _task_of(run_dir: Path) -> tuple[str, dict[str, Any]]:
    """The task name and the configuration of a run, from summary.json or config.json."""
    for name in ("summary.json", "config.json"):
        path = run_dir / name
        if path.is_file():
            if name == "summary.json":
                summary = load_summary(run_dir)
                config = summary.get("config", {}) if summary is not None else {}
            else:
                config = _read_json(path)
            if isinstance(config, dict) and "task" in config:
                return str(config["task"]), config
    raise FileNotFoundError(f"{run_dir} has neither summary.json nor config.json with the "
                            "run's task: cannot tell whether its conditions are periodic")


def _periodic(task: str, where: Path) -> bool:
    from .tasks import TASKS

    if task not in TASKS:
        raise ValueError(f"{where}: unknown task {task!r}; known: {', '.join(TASKS)}")
    return bool(TASKS[task].periodic)


def _plot_run_dir(run_dir: Path) -> list[Path]:
    paths = [plot_training_curves(run_dir)]
    task, config = _task_of(run_dir)
    periodic = _periodic(task, run_dir)
    raw = _read_csv(run_dir / "metrics_by_condition.csv")
    if raw:
        last = (raw[-1]["epoch"], raw[-1]["step"])
        rows = [r for r in raw if (r["epoch"], r["step"]) == last
                and r.get("split", "test") == "test"]
        label = str(config.get("name") or run_dir.name)
        chosen = rows[0].get("weights_epoch") if rows else None
        when = (f"epoch {chosen}'s weights, chosen on validation; trained to epoch {last[0]}"
                if chosen not in (None, "") else f"epoch {last[0]}, step {last[1]}")
        paths.append(plot_accuracy_by_condition(
            {label: rows}, run_dir / "by_condition.png", periodic=periodic,
            title=f"{label}: accuracy by condition ({when})"))
    snapshots = run_dir / "snapshots.pt"
    if snapshots.is_file():  # written by the trainer for manifold networks
        from ..topology import make_manifold
        from .checkpoint import load_checkpoint

        snap = load_checkpoint(snapshots)
        manifold = make_manifold(snap["manifold"], **snap["manifold_options"])
        if manifold.dim == 1 and len(snap["bases"]) > 0:
            paths.append(plot_manifold_projection(
                list(zip(snap["labels"], snap["bases"])), manifold, run_dir / "manifold.png"))
    return paths


def _plot_seed_root(root: Path) -> list[Path]:
    agg = _read_json(root / "aggregate.json")
    if "seeds" in agg:
        seed_dirs = [root / f"seed_{k}" for k in agg["seeds"]]
        missing = [d.name for d in seed_dirs if not d.is_dir()]
        if missing:
            raise FileNotFoundError(f"{root}/aggregate.json lists seeds whose directories "
                                    f"are missing: {', '.join(missing)}")
    else:
        seed_dirs = sorted(d for d in root.glob("seed_*") if d.is_dir())
    if not seed_dirs:
        raise FileNotFoundError(f"{root} has aggregate.json but no seed_* run directories")
    paths = []
    for d in seed_dirs:
        paths.append(plot_training_curves(d))
    task, _ = _task_of(seed_dirs[0])
    by_condition = agg.get("by_condition") or []
    if by_condition:
        n = len(agg.get("seeds", seed_dirs))
        paths.append(plot_accuracy_by_condition(
            {root.name: by_condition}, root / "by_condition.png",
            periodic=_periodic(task, seed_dirs[0]),
            title=f"{root.name}: accuracy by condition, mean ± std over {n} seeds"))
    return paths


def plot_run(run_dir: str | Path) -> list[Path]:
    """Every figure for one run directory or one multi-seed root.

    A run directory (with ``metrics.csv``) gets ``curves.png`` (see
    :func:`plot_training_curves`) and ``by_condition.png``: the accuracy on
    every condition at its last evaluation (see
    :func:`plot_accuracy_by_condition`), polar when the run's task (from
    ``summary.json``, else ``config.json``) is periodic (rotation,
    unconditioned). A multi-seed root (with ``aggregate.json`` and
    ``seed_<k>/`` run directories, as :func:`~weightmanifold.experiments.trainer.run_seeds`
    writes) gets ``curves.png`` in every seed's directory and
    ``by_condition.png`` of the aggregate (mean ± std over seeds) in the root.
    A sweep directory (neither, but with subdirectories that are run
    directories or multi-seed roots, as
    :func:`~weightmanifold.experiments.sweep.run_sweep` writes) gets the
    figures of each such subdirectory, in name order; its own ``sweep.png`` and
    ``by_condition.png`` are drawn by ``run_sweep``, not here.

    Args:
        run_dir: the run directory or multi-seed root.

    Returns:
        The PNG paths written: for each run or root the curves first, the
        by-condition figure last (left out when there are no condition rows).

    Raises:
        FileNotFoundError: if ``run_dir`` is neither a run directory, a
            multi-seed root nor a sweep directory, or lacks a file the figures
            need.
        ValueError: for empty metrics or an unknown task.

    Examples:
        >>> import tempfile, pathlib, json
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "metrics.csv").write_text(
        ...     "epoch,step,train_loss,test_accuracy,test_loss,seen_accuracy,unseen_accuracy\\n"
        ...     "1,10,1.5,0.4,1.4,0.5,0.3\\n")
        >>> _ = (d / "metrics_by_condition.csv").write_text(
        ...     "epoch,step,s,seen,accuracy,loss\\n"
        ...     "1,10,0.0,True,0.5,1.3\\n1,10,0.5,False,0.3,1.5\\n")
        >>> _ = (d / "summary.json").write_text(json.dumps({"config": {"task": "rotation"}}))
        >>> [p.name for p in plot_run(d)]
        ['curves.png', 'by_condition.png']
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a directory")
    if (run_dir / "aggregate.json").is_file():
        return _plot_seed_root(run_dir)
    if (run_dir / "metrics.csv").is_file():
        return _plot_run_dir(run_dir)
    children = sorted(d for d in run_dir.iterdir() if d.is_dir() and (
        (d / "aggregate.json").is_file() or (d / "metrics.csv").is_file()))
    if children:  # a sweep directory: one run or multi-seed root per configuration
        return [p for d in children for p in plot_run(d)]
    raise FileNotFoundError(f"{run_dir} is neither a run directory (no metrics.csv), a "
                            "multi-seed root (no aggregate.json) nor a sweep directory (no "
                            "subdirectory with either)")
