"""``weightmanifold compare``: paired differences between two runs from their summaries."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightmanifold.cli import main
from weightmanifold.experiments.compare import compare_runs, format_comparison, load_finals

_DATA = {"dataset": "fashion-mnist", "train_subset": None, "validation": 5000,
         "batch_size": 128, "task": "rotation",
         "task_options": {"train_fraction": 0.1, "mode": "subset", "bins": 36}}


def _write(root: Path, seed: int, final: dict[str, Any], status: str = "completed",
           **config: Any) -> None:
    d = root / f"seed_{seed}"
    d.mkdir(parents=True, exist_ok=True)
    summary = {"status": status, "seed": seed, "final": final,
               "config": {**_DATA, "seed": seed, **config}}
    (d / "summary.json").write_text(json.dumps(summary))


def _run(root: Path, unseen: list[float], seen: list[float] | None = None,
         **config: Any) -> Path:
    for seed, u in enumerate(unseen):
        final = {"epoch": 10, "unseen_accuracy": u, "val_unseen_accuracy": None,
                 "test_loss": 1.0 - u}
        if seen is not None:
            final["seen_accuracy"] = seen[seed]
        _write(root, seed, final, **config)
    return root


def _reference_t_interval(d: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t interval, with exact t quantiles (2-4 degrees of freedom)."""
    t975 = {2: 4.302652729911275, 3: 3.182446305284263, 4: 2.7764451051977987}
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = t975[n - 1] * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def test_paired_difference_against_a_hand_computation(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", [0.43, 0.44, 0.42], seen=[0.88, 0.87, 0.88])
    b = _run(tmp_path / "b", [0.35, 0.355, 0.35], seen=[0.866, 0.86, 0.87])
    rows = {r["metric"]: r for r in compare_runs(a, b)}
    # bookkeeping (epoch) and metrics missing on a seed (val_unseen_accuracy = None) drop out
    assert list(rows) == ["unseen_accuracy", "test_loss", "seen_accuracy"]
    u = rows["unseen_accuracy"]
    d = [100 * (x - y) for x, y in zip([0.43, 0.44, 0.42], [0.35, 0.355, 0.35], strict=True)]
    assert u["per_seed"] == pytest.approx(d)
    mean, lo, hi = _reference_t_interval(d)
    # the library's t quantiles have 3 decimals (4.303 for 2 degrees of freedom)
    assert (u["mean"], u["ci_low"], u["ci_high"]) == pytest.approx((mean, lo, hi), rel=1e-4)
    assert u["seeds"] == [0, 1, 2] and u["n"] == 3 and u["scale"] == 100.0
    # a loss stays in its own units
    assert rows["test_loss"]["scale"] == 1.0
    assert rows["test_loss"]["mean"] == pytest.approx(-sum(d) / 300)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=5))
def test_swapping_the_runs_negates_the_difference(tmp_path_factory: pytest.TempPathFactory,
                                                  pairs: list[tuple[float, float]]) -> None:
    root = tmp_path_factory.mktemp("swap")
    a = _run(root / "a", [p[0] for p in pairs])
    b = _run(root / "b", [p[1] for p in pairs])
    ab = compare_runs(a, b, ["unseen_accuracy"])[0]
    ba = compare_runs(b, a, ["unseen_accuracy"])[0]
    assert ab["mean"] == pytest.approx(-ba["mean"], abs=1e-9)
    if len(pairs) == 1:
        assert ab["ci_low"] is None and ab["ci_high"] is None
    else:
        assert ab["ci_low"] == pytest.approx(-ba["ci_high"], abs=1e-9)
        assert ab["ci_low"] <= ab["mean"] <= ab["ci_high"]


def test_pairs_only_seeds_both_completed(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", [0.5, 0.6, 0.7])
    b = _run(tmp_path / "b", [0.4, 0.4])
    _write(tmp_path / "b", 2, {"unseen_accuracy": 0.1}, status="diverged")
    (row,) = compare_runs(a, b, ["unseen_accuracy"])
    assert row["seeds"] == [0, 1]
    assert row["per_seed"] == pytest.approx([10.0, 20.0])


def test_a_single_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "one"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(
        {"status": "completed", "final": {"test_accuracy": 0.8}, "config": {"seed": 4}}))
    assert load_finals(run) == ({4: {"test_accuracy": 0.8}}, {"seed": 4})


def test_refuses_runs_that_see_different_data(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", [0.5, 0.6])
    b = _run(tmp_path / "b", [0.4, 0.4],
             task_options={"train_fraction": 0.25, "mode": "subset", "bins": 36})
    with pytest.raises(ValueError, match=r"cannot be paired by seed.*task_options"):
        compare_runs(a, b)
    # keys that do not change the data (optimiser, learning rate, method) pair fine
    c = _run(tmp_path / "c", [0.4, 0.4], lr=0.005, method="plain")
    assert compare_runs(a, c, ["unseen_accuracy"])[0]["n"] == 2


@pytest.mark.parametrize("case, message", [
    ("missing", "no run directory"),
    ("empty", "holds no completed run"),
    ("broken", r"b/seed_1: a summary.json that cannot be read"),
    ("list", r"b/seed_1: a summary.json that is not a JSON object"),
    ("disjoint", "share no completed seed"),
    ("metric", "not a number in every paired run.*val_unseen_accuracy"),
    ("unknown", "not a number in every paired run.*nonsense; measured: unseen_accuracy"),
])
def test_bad_inputs_name_the_problem(tmp_path: Path, case: str, message: str) -> None:
    a = _run(tmp_path / "a", [0.5, 0.6])
    b: Path = tmp_path / "b"
    metrics = None
    if case == "missing":
        b = tmp_path / "nowhere"
    elif case == "empty":
        _write(b, 0, {"unseen_accuracy": 0.5}, status="stopped")
    elif case == "disjoint":
        _write(b, 7, {"unseen_accuracy": 0.5})
    elif case in ("broken", "list"):  # one readable seed, one that is not
        _write(b, 0, {"unseen_accuracy": 0.5})
        (b / "seed_1").mkdir()
        (b / "seed_1" / "summary.json").write_text("{not json" if case == "broken" else "[]")
    else:
        _run(b, [0.4, 0.4])
        metrics = ["val_unseen_accuracy"] if case == "metric" else ["nonsense"]
    err = FileNotFoundError if case == "missing" else ValueError
    with pytest.raises(err, match=message):
        compare_runs(a, b, metrics)


def test_cli_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _run(tmp_path / "a", [0.43, 0.44, 0.42])
    b = _run(tmp_path / "b", [0.35, 0.355, 0.35])
    assert main(["compare", str(a), str(b), "--metric", "unseen_accuracy"]) == 0
    out = capsys.readouterr().out
    row = compare_runs(a, b, ["unseen_accuracy"])[0]
    assert out == format_comparison([row], str(a), str(b)) + "\n"
    assert "+8.00 +8.50 +7.00" in out and f"{row['mean']:+.2f}" in out
    assert main(["compare", str(a), str(b), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["metric"] for r in data["rows"]] == ["unseen_accuracy", "test_loss"]
    assert data["rows"][0]["mean"] == pytest.approx(row["mean"])


def test_cli_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(tmp_path / "x"), str(tmp_path / "y")])
    assert exit_info.value.code == 2
    assert "weightmanifold: error: no run directory" in capsys.readouterr().err


def test_on_an_archived_sweep() -> None:
    """The committed init study: constant start minus independent draws at 25 % of angles."""
    root = Path(__file__).resolve().parents[1] / "docs" / "results" / "init"
    a, b = root / "ellipse-eps0-f0.25", root / "ellipse-independent-f0.25"
    if not (a.exists() and b.exists()):
        pytest.skip("archived init study not present")
    (row,) = compare_runs(a, b, ["unseen_accuracy"])
    assert row["seeds"] == [0, 1, 2]
    # the numbers docs/results.md quotes: +0.8 [-4.2, +5.7]
    assert (round(row["mean"], 1), round(row["ci_low"], 1), round(row["ci_high"], 1)) == \
        (0.8, -4.2, 5.7)
