"""Figures of the diffusion preset: held-out loss against t, and sample grids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .checkpoint import load_checkpoint
from .figures import _png_path, _save

__all__ = ["plot_loss_by_t", "plot_samples"]


def plot_loss_by_t(rows: Sequence[Mapping[str, Any]], diffs: Sequence[Mapping[str, Any]],
                   path: str | Path, *, buckets: int) -> Path:
    """Held-out ε-MSE per t-bucket of every method (left, log scale) and each method's
    difference to the embedding relative to the embedding's loss (right; bars: 95 %
    intervals where there are several seeds). Writes the numbers to ``path``'s ``.csv``.
    """
    path = _png_path(path)
    centres = (np.arange(buckets) + 0.5) / buckets
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    out, colours = [], {}
    for r in rows:
        mean = np.array([float(r[f"loss_b{k}_mean"]) for k in range(buckets)])
        std = np.array([float(r.get(f"loss_b{k}_std") or 0) for k in range(buckets)])
        line = left.plot(centres, mean, marker="o", ms=3, label=f"{r['label']} (n={r['n']})")
        colours[r["label"]] = line[0].get_color()  # one colour per method in both panels
        left.fill_between(centres, mean - std, mean + std, alpha=0.15,
                          color=colours[r["label"]])
        out += [{"label": r["label"], "t_over_T": c, "loss_mean": m, "loss_std": s}
                for c, m, s in zip(centres, mean, std)]
    by_label: dict[str, dict[int, Mapping[str, Any]]] = {}
    for d in diffs:
        if d["metric"].startswith("loss_b") and d["relative"] is not None:
            by_label.setdefault(d["label"], {})[int(d["metric"][6:])] = d
    for label, per in by_label.items():
        ks = sorted(per)
        rel = np.array([100 * float(per[k]["relative"]) for k in ks])
        scale = np.array([float(per[k]["relative"]) / float(per[k]["difference"])
                          if per[k]["difference"] else 0.0 for k in ks])
        lo = [per[k]["ci_low"] for k in ks]
        if all(v is not None for v in lo):
            err = np.array([[100 * (float(per[k]["difference"]) - float(per[k]["ci_low"])),
                             100 * (float(per[k]["ci_high"]) - float(per[k]["difference"]))]
                            for k in ks]).T * scale
            right.errorbar(centres[ks], rel, yerr=err, marker="o", ms=3, capsize=2,
                           label=label, color=colours.get(label))
        else:
            right.plot(centres[ks], rel, marker="o", ms=3, label=label,
                       color=colours.get(label))
    left.set_yscale("log")
    left.set_xlabel("t / T")
    left.set_ylabel("held-out ε-MSE (test set)")
    left.set_title("denoising loss against t")
    left.legend(fontsize=7)
    right.axhline(0, color="0.5", lw=0.8)
    right.set_xlabel("t / T")
    right.set_ylabel("method − embedding (% of the embedding's loss)")
    right.set_title("relative to the timestep embedding")
    right.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, out, ["label", "t_over_T", "loss_mean", "loss_std"])


def plot_samples(samples: Mapping[str, Path], path: str | Path, per_row: int = 16) -> Path:
    """One row of DDIM samples per method (the first ``per_row`` of each ``samples.pt``;
    the same starting noise in every column). Methods without samples are left out."""
    path = _png_path(path)
    grids = {}
    for label, file in samples.items():
        if Path(file).exists():
            grids[label] = load_checkpoint(file)["samples"][:per_row].float().numpy() / 255
    fig = Figure(figsize=(per_row * 0.6 + 1.6, 0.62 * max(1, len(grids)) + 0.3))
    for i, (label, images) in enumerate(grids.items()):
        for j, image in enumerate(images):
            ax = fig.add_subplot(len(grids), per_row, i * per_row + j + 1)
            ax.imshow(image.transpose(1, 2, 0).squeeze(-1) if image.shape[0] == 1
                      else image.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(left=1.4 / (per_row * 0.6 + 1.6), right=0.99, top=0.98, bottom=0.02,
                        wspace=0.05, hspace=0.05)
    return _save(fig, path, [{"label": k, "samples": len(v)} for k, v in grids.items()],
                 ["label", "samples"])
