"""Paired differences between two finished runs of several seeds (``weightmanifold compare``).

A sweep's ``differences.csv`` has every method against the preset's reference.
Any other pair — two initialisations, the full-rank against the low-rank
ellipse, a run of one preset against one of another — is compared here, from
the runs' ``summary.json`` files alone (an archived sweep under
``docs/results/`` is enough; no checkpoint is read).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .archive import load_summary
from .sweep import paired_difference

__all__ = ["DATA_KEYS", "compare_runs", "format_comparison", "load_finals"]

#: configuration keys that fix which examples, conditions and batches a seed sees: two
#: runs are paired by seed only where these agree
DATA_KEYS = ("dataset", "train_subset", "test_subset", "validation", "batch_size", "task",
             "task_options", "image_size")

#: bookkeeping entries of a summary's ``final``, not measurements
_NOT_METRICS = frozenset({"epoch", "step", "selected_epoch"})


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def load_finals(run_dir: str | Path) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """The completed seeds' final measurements of a run, and its configuration.

    ``run_dir`` is a run of several seeds (``seed_<k>/summary.json`` under it) or a
    single run (``summary.json`` in it). Seeds whose run did not complete (still
    training, stopped or diverged) are left out.

    Args:
        run_dir: the run directory.

    Returns:
        ``({seed: final}, config)``: ``final`` is the summary's ``final`` entry,
        ``config`` the configuration of the first completed seed.

    Raises:
        FileNotFoundError: if ``run_dir`` does not exist.
        ValueError: if it holds no completed run, or a ``summary.json`` that cannot be
            read (:func:`~.archive.load_summary`).

    Examples:
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "seed_3").mkdir()
        >>> _ = (root / "seed_3" / "summary.json").write_text(json.dumps(
        ...     {"status": "completed", "final": {"test_accuracy": 0.9}, "config": {"seed": 3}}))
        >>> load_finals(root)
        ({3: {'test_accuracy': 0.9}}, {'seed': 3})
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no run directory {root}")
    paths = [root / "summary.json"] if (root / "summary.json").exists() else \
        sorted(root.glob("seed_*/summary.json"))
    finals: dict[int, dict[str, Any]] = {}
    config: dict[str, Any] = {}
    for path in paths:
        summary = load_summary(path.parent)
        assert summary is not None  # the glob found its summary.json
        if summary.get("status") != "completed" or not isinstance(summary.get("final"), dict):
            continue
        cfg = summary.get("config") if isinstance(summary.get("config"), dict) else {}
        seed = summary.get("seed", cfg.get("seed"))
        if seed is None and path.parent.name.startswith("seed_"):
            seed = int(path.parent.name.removeprefix("seed_"))
        if not isinstance(seed, int):
            raise ValueError(f"{path}: the summary names no seed")
        finals[seed] = summary["final"]
        config = config or cfg
    if not finals:
        raise ValueError(f"{root} holds no completed run (looked for summary.json and "
                         f"seed_*/summary.json with status 'completed')")
    return finals, config


def compare_runs(a: str | Path, b: str | Path,
                 metrics: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """``a`` minus ``b``, paired by seed, with a 95 % Student-t interval per metric.

    .. math:: \\bar d \\pm t_{0.975,\\, n-1}\\, s_d / \\sqrt n, \\qquad
              d_i = m_a(\\text{seed}_i) - m_b(\\text{seed}_i)

    A seed pairs the two runs' initial weights, data order and training
    conditions, so the runs must agree on every key of :data:`DATA_KEYS` that both
    configurations have. Accuracies are reported in percentage points, other
    metrics (losses, Fréchet distances) in their own units.

    Args:
        a: the first run directory (see :func:`load_finals`).
        b: the second.
        metrics: names in the summaries' ``final`` (e.g. ``unseen_accuracy``);
            ``None``: every number both runs measured on every paired seed.

    Returns:
        One row per metric: ``metric``, ``scale`` (100 for accuracies, else 1),
        ``seeds``, ``per_seed`` (scaled differences), ``mean``, ``ci_low``,
        ``ci_high`` (scaled; the interval ``None`` with one seed) and ``n``.

    Raises:
        FileNotFoundError: if a directory does not exist.
        ValueError: if a directory holds no completed run, the runs share no
            completed seed, their data keys differ, or a requested metric is not
            a number in every paired run.
    """
    finals_a, config_a = load_finals(a)
    finals_b, config_b = load_finals(b)
    differ = [f"{key}: {config_a[key]!r} vs {config_b[key]!r}" for key in DATA_KEYS
              if key in config_a and key in config_b and config_a[key] != config_b[key]]
    if differ:
        raise ValueError(f"{a} and {b} do not see the same data at a seed, so they cannot "
                         f"be paired by seed ({'; '.join(differ)})")
    seeds = sorted(set(finals_a) & set(finals_b))
    if not seeds:
        raise ValueError(f"{a} (seeds {sorted(finals_a)}) and {b} (seeds {sorted(finals_b)}) "
                         f"share no completed seed")
    runs = [finals_a[s] for s in seeds] + [finals_b[s] for s in seeds]
    common = [k for k in finals_a[seeds[0]] if k not in _NOT_METRICS
              and all(_number(r.get(k)) for r in runs)]
    if metrics is None:
        chosen = common
        if not chosen:
            raise ValueError(f"{a} and {b} have no number measured on every seed "
                             f"{seeds} of both")
    else:
        chosen = list(metrics)
        missing = [m for m in chosen if m not in common]
        if missing:
            raise ValueError(f"not a number in every paired run (seeds {seeds}): "
                             f"{', '.join(missing)}; measured: {', '.join(common) or 'none'}")
    rows = []
    for metric in chosen:
        scale = 100.0 if metric.endswith("accuracy") else 1.0
        va = [scale * finals_a[s][metric] for s in seeds]
        vb = [scale * finals_b[s][metric] for s in seeds]
        d = paired_difference(va, vb)
        rows.append({"metric": metric, "scale": scale, "seeds": seeds,
                     "per_seed": [x - y for x, y in zip(va, vb, strict=True)], **d})
    return rows


def format_comparison(rows: Sequence[dict[str, Any]], a: str, b: str) -> str:
    """The rows of :func:`compare_runs` as a plain-text table."""
    seeds = rows[0]["seeds"] if rows else []
    lines = [f"{a} − {b}, paired by seed {' '.join(map(str, seeds))} "
             f"(accuracies in percentage points; 95 % Student-t interval)"]
    cells = []
    for r in rows:
        digits = 2 if r["scale"] == 100.0 else 4
        per = " ".join(f"{x:+.{digits}f}" for x in r["per_seed"])
        ci = "–" if r["ci_low"] is None else \
            f"[{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]"
        cells.append((r["metric"], per, f"{r['mean']:+.{digits}f}", ci))
    header = ("metric", "per seed", "mean", "95 % interval")
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(3)]
    for c in [header, *cells]:
        lines.append(f"{c[0]:<{widths[0]}}  {c[1]:<{widths[1]}}  {c[2]:>{widths[2]}}  {c[3]}")
    return "\n".join(lines)
