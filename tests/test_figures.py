"""Figures: valid PNGs, CSVs holding exactly the plotted numbers, PCA of a known circle."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

import weightmanifold as wm
from weightmanifold.experiments.checkpoint import atomic_write_csv, atomic_write_json
from weightmanifold.experiments.figures import (
    plot_accuracy_by_condition,
    plot_curves_over_seeds,
    plot_manifold_projection,
    plot_run,
    plot_sweep,
    plot_training_curves,
)
from weightmanifold.experiments.trainer import aggregate_seeds

METRIC_COLUMNS = ["epoch", "step", "train_loss", "test_accuracy", "test_loss", "seen_accuracy",
                  "unseen_accuracy"]
CONDITION_COLUMNS = ["epoch", "step", "s", "seen", "accuracy", "loss"]


# -- helpers ---------------------------------------------------------------------------------
def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 5000
    with Image.open(io.BytesIO(data)) as img:
        img.verify()
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and min(img.size) > 200


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def history(epochs: int = 3, conditions: int = 8, seen_every: int = 4, offset: float = 0.0,
            unseen: bool = True) -> list[dict]:
    """Trainer-like history: overall metrics and per-condition results per epoch."""
    out = []
    for e in range(1, epochs + 1):
        conds = [{"s": k / conditions, "seen": k % seen_every == 0 if unseen else True,
                  "accuracy": round(0.3 + 0.1 * e + 0.01 * k + offset, 6),
                  "loss": round(2.0 - 0.3 * e + 0.02 * k, 6)} for k in range(conditions)]
        accs = [c["accuracy"] for c in conds]
        seen = [c["accuracy"] for c in conds if c["seen"]]
        rest = [c["accuracy"] for c in conds if not c["seen"]]
        out.append({"epoch": e, "step": 10 * e, "train_loss": 2.2 / e + offset,
                    "test_accuracy": sum(accs) / len(accs), "test_loss": 2.0 / e,
                    "seen_accuracy": sum(seen) / len(seen) if rest else None,
                    "unseen_accuracy": sum(rest) / len(rest) if rest else None,
                    "by_condition": conds})
    return out


def write_run(run_dir: Path, task: str = "rotation", **kwargs) -> list[dict]:
    """A finished run directory in the trainer's formats (written with the trainer's writers)."""
    hist = history(**kwargs)
    rows = [{k: v for k, v in r.items() if k != "by_condition"} for r in hist]
    atomic_write_csv(run_dir / "metrics.csv", rows, METRIC_COLUMNS)
    atomic_write_csv(run_dir / "metrics_by_condition.csv",
                     [{"epoch": r["epoch"], "step": r["step"], **c}
                      for r in hist for c in r["by_condition"]], CONDITION_COLUMNS)
    atomic_write_json(run_dir / "summary.json", {
        "status": "completed", "name": run_dir.name, "final": hist[-1],
        "config": {"name": run_dir.name, "task": task}})
    return hist


# -- 1. training curves ----------------------------------------------------------------------
def test_training_curves_png_and_exact_csv(tmp_path: Path) -> None:
    hist = write_run(tmp_path)
    path = plot_training_curves(tmp_path)
    assert path == tmp_path / "curves.png"
    assert_png(path)
    rows = read_csv(tmp_path / "curves.csv")
    assert list(rows[0]) == ["epoch", "step", "train_loss", "test_loss", "test_accuracy",
                             "seen_accuracy", "unseen_accuracy"]
    assert len(rows) == len(hist)
    for got, want in zip(rows, hist):
        assert int(got["epoch"]) == want["epoch"] and int(got["step"]) == want["step"]
        for key in ("train_loss", "test_loss", "test_accuracy", "seen_accuracy",
                    "unseen_accuracy"):
            assert num(got[key]) == want[key]  # exact: floats round-trip through the CSV


def test_training_curves_without_seen_unseen(tmp_path: Path) -> None:
    write_run(tmp_path, unseen=False)
    plot_training_curves(tmp_path)
    assert list(read_csv(tmp_path / "curves.csv")[0]) == [
        "epoch", "step", "train_loss", "test_loss", "test_accuracy"]


def test_training_curves_validated_at_the_seen_conditions_only(tmp_path: Path) -> None:
    """validate_at = "seen": only the seen validation accuracy is drawn, not an empty
    "validation (all)" or validation loss."""
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train_loss,test_accuracy,test_loss,seen_accuracy,unseen_accuracy,"
        "val_accuracy,val_loss,val_seen_accuracy,val_unseen_accuracy\n"
        "1,10,1.5,,,,,,,0.5,\n2,20,1.1,0.6,1.2,0.7,0.3,,,0.6,\n")
    assert_png(plot_training_curves(tmp_path))
    assert list(read_csv(tmp_path / "curves.csv")[0]) == [
        "epoch", "step", "train_loss", "test_loss", "test_accuracy",
        "seen_accuracy", "unseen_accuracy", "val_seen_accuracy"]


def test_training_curves_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"metrics.csv does not exist"):
        plot_training_curves(tmp_path)
    (tmp_path / "metrics.csv").write_text(",".join(METRIC_COLUMNS) + "\n")
    with pytest.raises(ValueError, match="has no rows"):
        plot_training_curves(tmp_path)
    (tmp_path / "metrics.csv").write_text("epoch,step,test_accuracy\n1,2,0.5\n")
    with pytest.raises(ValueError, match=r"lacks the column.*train_loss"):
        plot_training_curves(tmp_path)


# -- 2. accuracy by condition ----------------------------------------------------------------
def test_accuracy_by_condition_polar(tmp_path: Path) -> None:
    # aggregate-style rows (mean ± std, bool seen), given out of order
    agg = [{"s": s, "seen": s < 0.3, "accuracy_mean": acc, "accuracy_std": std, "n": 3}
           for s, acc, std in [(0.5, 0.6, 0.05), (0.0, 0.95, 0.1), (0.25, 0.8, 0.0),
                               (0.75, 0.02, 0.04)]]
    # trainer-CSV rows (strings, "True"/"False")
    raw = [{"s": str(k / 4), "seen": str(k == 0), "accuracy": str(0.5 + 0.1 * k)}
           for k in range(4)]
    path = plot_accuracy_by_condition({"ellipse": agg, "plain": raw}, tmp_path / "acc.png",
                                      periodic=True, title="rotation")
    assert_png(path)
    rows = read_csv(tmp_path / "acc.csv")
    assert list(rows[0]) == ["label", "s", "angle", "accuracy", "accuracy_std", "lower",
                             "upper", "seen"]
    ellipse = [r for r in rows if r["label"] == "ellipse"]
    assert [float(r["s"]) for r in ellipse] == [0.0, 0.25, 0.5, 0.75]
    assert [float(r["accuracy"]) for r in ellipse] == [0.95, 0.8, 0.6, 0.02]
    assert [float(r["accuracy_std"]) for r in ellipse] == [0.1, 0.0, 0.05, 0.04]
    assert [float(r["angle"]) for r in ellipse] == [2 * math.pi * s for s in (0, .25, .5, .75)]
    # the drawn band is mean ± std clipped to [0, 1]
    assert [float(r["lower"]) for r in ellipse] == pytest.approx([0.85, 0.8, 0.55, 0.0])
    assert [float(r["upper"]) for r in ellipse] == pytest.approx([1.0, 0.8, 0.65, 0.06])
    assert [r["seen"] for r in ellipse] == ["True", "True", "False", "False"]
    plain = [r for r in rows if r["label"] == "plain"]
    assert [float(r["accuracy"]) for r in plain] == [0.5 + 0.1 * k for k in range(4)]
    assert all(r["accuracy_std"] == r["lower"] == r["upper"] == "" for r in plain)


def test_accuracy_by_condition_cartesian(tmp_path: Path) -> None:
    rows_in = [{"s": k / 8, "accuracy": 0.9 - 0.05 * k, "seen": True} for k in range(9)]
    path = plot_accuracy_by_condition({"line": rows_in}, tmp_path / "noise.png",
                                      periodic=False)
    assert_png(path)
    rows = read_csv(tmp_path / "noise.csv")
    assert "angle" not in rows[0]
    assert [(float(r["s"]), float(r["accuracy"])) for r in rows] == [
        (r["s"], r["accuracy"]) for r in rows_in]


def test_accuracy_by_condition_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="series is empty"):
        plot_accuracy_by_condition({}, tmp_path / "a.png", periodic=True)
    with pytest.raises(ValueError, match="'plain' has no rows"):
        plot_accuracy_by_condition({"plain": []}, tmp_path / "a.png", periodic=True)
    with pytest.raises(ValueError, match="neither 'accuracy_mean' nor 'accuracy'"):
        plot_accuracy_by_condition({"plain": [{"s": 0.0, "loss": 1.0}]}, tmp_path / "a.png",
                                   periodic=False)
    with pytest.raises(ValueError, match=r"two rows at s = 0\.5"):
        plot_accuracy_by_condition({"plain": [{"s": 0.5, "accuracy": 1.0}] * 2},
                                   tmp_path / "a.png", periodic=False)
    with pytest.raises(ValueError, match=r"must end in .png"):
        plot_accuracy_by_condition({"plain": [{"s": 0.0, "accuracy": 1.0}]},
                                   tmp_path / "a.pdf", periodic=False)
    assert not list(tmp_path.iterdir())


# -- 3. sweeps -------------------------------------------------------------------------------
def test_sweep_numeric(tmp_path: Path) -> None:
    rows_in = []
    for label, base in (("ellipse", 0.8), ("plain", 0.6)):
        for f in (1.0, 0.1, 0.25):  # unsorted on purpose
            rows_in.append({"label": label, "x": f, "test_accuracy_mean": base + 0.1 * f,
                            "test_accuracy_std": 0.01 * f, "n": 3})
    path = plot_sweep(rows_in, tmp_path / "sweep.png", x_name="train_fraction",
                      title="Fig. 2b")
    assert_png(path)
    rows = read_csv(tmp_path / "sweep.csv")
    assert list(rows[0]) == ["label", "x", "test_accuracy_mean", "test_accuracy_std", "n"]
    want = sorted(rows_in, key=lambda r: (r["label"] != "ellipse", r["x"]))
    assert [(r["label"], float(r["x"]), float(r["test_accuracy_mean"]),
             float(r["test_accuracy_std"]), int(r["n"])) for r in rows] == [
        (r["label"], r["x"], r["test_accuracy_mean"], r["test_accuracy_std"], r["n"])
        for r in want]


def test_sweep_categorical_bars(tmp_path: Path) -> None:
    rows_in = [{"label": "ellipse", "x": opt, "unseen_accuracy_mean": m,
                "unseen_accuracy_std": 0.02, "n": 2}
               for opt, m in (("sgd", 0.7), ("adam", 0.72), ("adamw", 0.71))]
    rows_in.append({"label": "ellipse", "x": "lbfgs", "unseen_accuracy_mean": None})
    path = plot_sweep(rows_in, tmp_path / "opt.png", x_name="optimizer",
                      metric="unseen_accuracy")
    assert_png(path)
    rows = read_csv(tmp_path / "opt.csv")
    assert [(r["x"], float(r["unseen_accuracy_mean"])) for r in rows] == [
        ("sgd", 0.7), ("adam", 0.72), ("adamw", 0.71)]


def test_sweep_bad_inputs(tmp_path: Path) -> None:
    row = {"label": "a", "x": 0.5, "test_accuracy_mean": 0.5, "test_accuracy_std": 0.1}
    with pytest.raises(ValueError, match="no rows"):
        plot_sweep([], tmp_path / "s.png", x_name="f")
    with pytest.raises(ValueError, match=r"no row has 'accuracy_mean'.*test_accuracy"):
        plot_sweep([row], tmp_path / "s.png", x_name="f", metric="accuracy")
    with pytest.raises(ValueError, match="two rows for label 'a'"):
        plot_sweep([row, row], tmp_path / "s.png", x_name="f")
    with pytest.raises(ValueError, match="has no 'x'"):
        plot_sweep([{"label": "a", "test_accuracy_mean": 0.5}], tmp_path / "s.png", x_name="f")


def test_curves_over_seeds_mean_std_and_exact_csv(tmp_path: Path) -> None:
    seeds = []
    for k in range(3):
        rows = history(epochs=3, offset=0.01 * k)
        seeds.append([{key: ("" if v is None else v) for key, v in r.items()
                       if key != "by_condition"} for r in rows])
    seeds[2] = seeds[2][:2]  # a seed that stopped after epoch 2
    path = plot_curves_over_seeds({"sgd": seeds, "adam": seeds[:1]}, tmp_path / "c.png",
                                  metric="train_loss", title="t")
    assert_png(path)
    rows = read_csv(tmp_path / "c.csv")
    assert [(r["label"], int(r["epoch"]), int(r["n"])) for r in rows] == [
        ("sgd", 1, 3), ("sgd", 2, 3), ("sgd", 3, 2), ("adam", 1, 1), ("adam", 2, 1),
        ("adam", 3, 1)]
    for r in rows[:3]:
        e = int(r["epoch"])
        values = [2.2 / e + 0.01 * k for k in range(int(r["n"]))]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        assert float(r["train_loss_mean"]) == pytest.approx(mean, abs=1e-12)
        assert float(r["train_loss_std"]) == pytest.approx(std, abs=1e-12)
    assert rows[3]["train_loss_std"] == ""  # one seed: no spread


def test_curves_over_seeds_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="series is empty"):
        plot_curves_over_seeds({}, tmp_path / "c.png")
    with pytest.raises(ValueError, match="method 'a' has no row with 'test_accuracy'"):
        plot_curves_over_seeds({"a": [[{"epoch": 1, "test_accuracy": ""}]]}, tmp_path / "c.png")
    with pytest.raises(ValueError, match="seed 0 row 0 has no 'epoch'"):
        plot_curves_over_seeds({"a": [[{"test_accuracy": 0.5}]]}, tmp_path / "c.png")
    with pytest.raises(ValueError, match="expected a number"):
        plot_curves_over_seeds({"a": [[{"epoch": 1, "test_accuracy": "x"}]]},
                               tmp_path / "c.png")
    with pytest.raises(ValueError, match=r"\.png"):
        plot_curves_over_seeds({"a": [[{"epoch": 1, "test_accuracy": 0.5}]]},
                               tmp_path / "c.svg")


# -- 4. PCA projection -----------------------------------------------------------------------
def circle_basis(center: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                 radius: float) -> torch.Tensor:
    """Ellipse basis (P1, P2, P3) with W(s) = c + r cos(2πs) u + r sin(2πs) v, shaped as a conv."""
    return torch.stack([center, radius * u, radius * v]).reshape(3, 2, 5, 5)


def test_projection_recovers_circle(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(50, 2, dtype=torch.float64, generator=gen))
    u, v = q[:, 0], q[:, 1]  # P2 ⟂ P3, equal norms after scaling by r
    center = torch.randn(50, dtype=torch.float64, generator=gen)
    radii = [1.5, 3.0, 0.5]
    snaps = [(f"epoch {k}", circle_basis(center, u, v, r)) for k, r in enumerate(radii)]
    path = plot_manifold_projection(snaps, wm.Ellipse(), tmp_path / "pca.png", num_points=24)
    assert_png(path)
    rows = read_csv(tmp_path / "pca.csv")
    assert list(rows[0]) == ["label", "index", "s", "pc1", "pc2"]
    assert len(rows) == 24 * len(radii)
    for k, r in enumerate(radii):
        mine = [row for row in rows if int(row["index"]) == k]
        assert {row["label"] for row in mine} == {f"epoch {k}"}
        assert [float(row["s"]) for row in mine] == [j / 24 for j in range(24)]
        pts = torch.tensor([[float(row["pc1"]), float(row["pc2"])] for row in mine],
                           dtype=torch.float64)
        torch.testing.assert_close(pts.norm(dim=1), torch.full((24,), r, dtype=torch.float64),
                                   rtol=1e-9, atol=1e-9)
        # consecutive points are 2π/24 apart on the circle (rotation/reflection only)
        cos = (pts[1:] * pts[:-1]).sum(1) / r**2
        torch.testing.assert_close(cos, torch.full((23,), math.cos(2 * math.pi / 24),
                                                   dtype=torch.float64), rtol=0, atol=1e-9)


def test_projection_single_snapshot_and_other_manifolds(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(50, 2, dtype=torch.float64, generator=gen))
    snaps = [("end", circle_basis(torch.zeros(50, dtype=torch.float64), q[:, 0], q[:, 1], 2.0))]
    plot_manifold_projection(snaps, wm.Ellipse(), tmp_path / "one.png", num_points=16)
    pts = torch.tensor([[float(r["pc1"]), float(r["pc2"])]
                        for r in read_csv(tmp_path / "one.csv")], dtype=torch.float64)
    torch.testing.assert_close(pts.norm(dim=1), torch.full((16,), 2.0, dtype=torch.float64))

    for name, manifold in (("line", wm.Line()), ("bspline", wm.BSpline(n=5)),
                           ("pbspline", wm.BSpline(n=6, periodic=True))):
        snaps = [(str(t), torch.randn(manifold.n, 4, 1, 3, 3, generator=gen))
                 for t in range(3)]
        path = plot_manifold_projection(snaps, manifold, tmp_path / f"{name}.png",
                                        num_points=10)
        assert_png(path)
        s = [float(r["s"]) for r in read_csv(tmp_path / f"{name}.csv")][:10]
        if manifold.periodic[0]:
            assert s == [j / 10 for j in range(10)]
        else:
            assert s[0] == 0.0 and s[-1] == 1.0


def test_projection_bad_inputs(tmp_path: Path) -> None:
    basis = torch.randn(3, 10)
    with pytest.raises(ValueError, match="dim == 1"):
        plot_manifold_projection([("a", torch.randn(9, 10))], wm.Torus(), tmp_path / "p.png")
    with pytest.raises(ValueError, match="no snapshots"):
        plot_manifold_projection([], wm.Ellipse(), tmp_path / "p.png")
    with pytest.raises(ValueError, match="does not have 3 rows"):
        plot_manifold_projection([("a", torch.randn(2, 10))], wm.Ellipse(), tmp_path / "p.png")
    with pytest.raises(ValueError, match="same layer"):
        plot_manifold_projection([("a", basis), ("b", torch.randn(3, 11))], wm.Ellipse(),
                                 tmp_path / "p.png")
    with pytest.raises(ValueError, match="num_points"):
        plot_manifold_projection([("a", basis)], wm.Ellipse(), tmp_path / "p.png",
                                 num_points=2)


# -- 5. plot_run -----------------------------------------------------------------------------
@pytest.mark.parametrize("task, periodic", [("rotation", True), ("noise", False)])
def test_plot_run_single(tmp_path: Path, task: str, periodic: bool) -> None:
    hist = write_run(tmp_path, task=task)
    paths = plot_run(tmp_path)
    assert paths == [tmp_path / "curves.png", tmp_path / "by_condition.png"]
    for p in paths:
        assert_png(p)
    rows = read_csv(tmp_path / "by_condition.csv")
    assert ("angle" in rows[0]) is periodic
    last = hist[-1]["by_condition"]  # only the last evaluation is drawn
    assert [(float(r["s"]), float(r["accuracy"]), r["seen"]) for r in rows] == [
        (c["s"], c["accuracy"], str(c["seen"])) for c in last]


def test_plot_run_multi_seed(tmp_path: Path) -> None:
    for k in range(3):
        write_run(tmp_path / f"seed_{k}", task="rotation", offset=0.01 * k)
    agg = aggregate_seeds(tmp_path, [0, 1, 2])  # the trainer's own aggregate.json
    paths = plot_run(tmp_path)
    assert paths == [tmp_path / f"seed_{k}" / "curves.png" for k in range(3)] + [
        tmp_path / "by_condition.png"]
    for p in paths:
        assert_png(p)
    rows = read_csv(tmp_path / "by_condition.csv")
    assert [(float(r["s"]), float(r["accuracy"]), float(r["accuracy_std"])) for r in rows] == [
        (c["s"], c["accuracy_mean"], c["accuracy_std"]) for c in agg["by_condition"]]
    assert all(float(r["accuracy_std"]) > 0 for r in rows)


def test_plot_run_sweep_directory(tmp_path: Path) -> None:
    for config in ("ellipse-f0.1", "plain-f0.1"):
        write_run(tmp_path / config / "seed_0", task="rotation")
        aggregate_seeds(tmp_path / config, [0])
    (tmp_path / "notes").mkdir()  # neither a run nor a root: ignored
    assert plot_run(tmp_path) == [tmp_path / c / f for c in ("ellipse-f0.1", "plain-f0.1")
                                  for f in ("seed_0/curves.png", "by_condition.png")]


def test_plot_run_bad_dirs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a run directory"):
        plot_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        plot_run(tmp_path / "nope")
    write_run(tmp_path)
    (tmp_path / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"summary.json nor config.json"):
        plot_run(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"task": "spin"}))
    with pytest.raises(ValueError, match="unknown task 'spin'"):
        plot_run(tmp_path)
    (tmp_path / "summary.json").write_text("[]")  # read before config.json, and named
    with pytest.raises(ValueError, match=f"{tmp_path}: a summary.json that is not a JSON"):
        plot_run(tmp_path)
    (tmp_path / "summary.json").unlink()
    seeds = tmp_path / "seeds"
    write_run(seeds / "seed_0")
    atomic_write_json(seeds / "aggregate.json", {"seeds": [0, 1], "metrics": {},
                                                 "by_condition": []})
    with pytest.raises(FileNotFoundError, match="seed_1"):
        plot_run(seeds)
