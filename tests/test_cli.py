"""The command line: help for every option, every subcommand end to end, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import weightmanifold as wm
from weightmanifold.cli import main, parse_seeds
from weightmanifold.experiments.config import RunConfig
from weightmanifold.experiments.presets import PRESETS, get_preset
from weightmanifold.experiments.sweep import run_sweep

TINY = ["--dataset", "synthetic", "--widths", "4", "8", "8", "--hidden", "16",
        "--batch-size", "32", "--epochs", "1", "--lr", "0.05", "--threads", "1",
        "--no-progress", "--task-options", "train_fraction=0.25", "bins=8"]
TINY_OVERRIDES = {"dataset": "synthetic", "train_subset": None, "test_subset": None,
                  "validation": None, "patience": None, "patience_on": None,
                  "validate_at": None,
                  "epochs": 1, "widths": [4, 8, 8], "hidden": 16, "batch_size": 32,
                  "threads": 1, "lr": 0.05}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "weightmanifold", *args], capture_output=True,
                          text=True, timeout=300)


def test_help_documents_every_option():
    text = run_cli("train", "--help").stdout
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        assert RunConfig.help(f.name).split()[0] in text
    for command in ("sweep", "evaluate", "plot", "demo"):
        out = run_cli(command, "--help")
        assert out.returncode == 0 and "usage: weightmanifold " + command in out.stdout
    assert all(name in run_cli("sweep", "--help").stdout for name in PRESETS)


def test_help_states_each_default_once():
    """``(default: None)`` used to follow every option whose help already gave its default
    (``--epochs … [5] (default: None)``, ``--progress … (default: only on a terminal)
    (default: None)``)."""
    for command in ("train", "sweep", "evaluate", "plot", "demo", "archive", "compare"):
        text = " ".join(run_cli(command, "--help").stdout.split())
        assert "(default: None)" not in text, command
    train = " ".join(run_cli("train", "--help").stdout.split())
    assert "--runs-dir RUNS_DIR where run directories go (default: runs)" in train
    assert "progress bars (default: only on a terminal) --malloc" in train
    assert "[cnn] --method" in train


def test_parse_seeds():
    assert parse_seeds("0..3") == [0, 1, 2, 3]
    assert parse_seeds("0,5,7") == [0, 5, 7]
    assert parse_seeds("2") == [2]
    for bad in ("a", "0..", "1,1", "-1"):
        with pytest.raises(Exception, match="seeds"):
            parse_seeds(bad)


def test_unknown_preset_option_and_names(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "nonsense"])
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--learning-rate", "0.1"])
    assert "unrecognized arguments: --learning-rate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", *TINY, "--manifold", "blob"])
    assert "unknown manifold 'blob'; valid: point, line, ellipse" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", *TINY, "--method", "magic"])
    assert "unknown method 'magic'; valid: plain, manifold" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown preset 'x'; valid: rotation-sparsity"):
        get_preset("x")


def test_config_file_errors_name_the_key(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("epochz = 3\n")
    with pytest.raises(SystemExit):
        main(["train", "--config", str(path)])
    assert "unknown config key(s) ['epochz']" in capsys.readouterr().err
    path.write_text("epochs = 'three'\n")
    with pytest.raises(SystemExit):
        main(["train", "--config", str(path)])
    assert "config key 'epochs' must be int" in capsys.readouterr().err


def test_missing_data_says_what_was_looked_for(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path),
              "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and "dataset-fashion-mnist" in err


def test_train_writes_resolved_config_and_resumes(tmp_path):
    out = run_cli("train", "--runs-dir", str(tmp_path), "--name", "a", *TINY)
    assert out.returncode == 0, out.stderr
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["widths"] == [4, 8, 8] and saved["task_options"]["bins"] == 8
    assert saved == RunConfig.from_dict(saved).to_dict()  # full, resolved config
    again = run_cli("train", "--runs-dir", str(tmp_path), "--name", "a", *TINY)
    assert again.returncode == 0 and "is complete" in again.stdout  # not retrained
    other = run_cli("train", "--runs-dir", str(tmp_path), "--name", "a", *TINY, "--seed", "4")
    assert other.returncode == 2 and "another configuration" in other.stderr


def test_config_file_and_override(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('method = "concat"\nfeatures = "basis"\n')
    out = run_cli("train", "--config", str(path), "--runs-dir", str(tmp_path), "--name", "c",
                  *TINY)
    assert out.returncode == 0, out.stderr
    saved = json.loads((tmp_path / "c" / "config.json").read_text())
    assert saved["method"] == "concat" and saved["features"] == "basis"


def test_evaluate_and_plot(tmp_path):
    assert run_cli("train", "--runs-dir", str(tmp_path), "--name", "e", *TINY).returncode == 0
    out = run_cli("evaluate", str(tmp_path / "e"), "--s", "0", "0.125", "0.3")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(open(tmp_path / "e" / "evaluation.csv")))
    assert [float(r["s"]) for r in rows] == [0.0, 0.125, 0.3]
    assert rows[0]["seen"] in ("True", "False")
    plotted = run_cli("plot", str(tmp_path / "e"))
    assert plotted.returncode == 0, plotted.stderr
    assert (tmp_path / "e" / "curves.png").exists()
    bad = run_cli("evaluate", str(tmp_path / "nothing"), "--s", "0")
    assert bad.returncode == 2 and "not a run directory" in bad.stderr


def test_preset_configurations_are_valid():
    for preset in PRESETS.values():
        for scale in ("cpu", "paper"):
            if (preset.name, scale) == ("unconditioned-converged-tuned", "paper"):
                continue  # no rates chosen at paper scale: see its own test
            runs = preset.runs(scale)
            assert runs and len({r.config.name for r in runs}) == len(runs)
            assert preset.seeds(scale)
    assert len(get_preset("rotation-sparsity").seeds("paper")) == 20
    with pytest.raises(ValueError, match="unknown scale"):
        get_preset("noise").runs("gpu")


def test_sweep_runs_aggregates_and_plots(tmp_path):
    preset = get_preset("rotation-sparsity")
    rows = run_sweep(preset, tmp_path, scale="quick", seeds=[0, 1],
                     labels=["ellipse", "concat"], overrides=TINY_OVERRIDES,
                     log=lambda m: None, progress=False)
    assert {r["label"] for r in rows} == {"ellipse", "concat"}
    assert len(rows) == 2 * 3  # two methods at three training fractions
    assert all(r["n"] == 2 and r["test_accuracy_std"] is not None for r in rows)
    for name in ("results.csv", "results.json", "sweep.png", "sweep.csv", "by_condition.png",
                 "differences.csv", "curves.png", "curves.csv", "tables.md"):
        assert (tmp_path / name).exists(), name
    assert all(r["parameters"] > 0 and r["train_flops_per_example"] > 0 for r in rows)
    diffs = list(csv.DictReader(open(tmp_path / "differences.csv")))
    # unseen and seen accuracy where some angles are unseen; all-angle accuracy at 100 %
    assert [(d["x"], d["label"], d["metric"]) for d in diffs] == [
        ("0.1", "concat", "unseen_accuracy"), ("0.1", "concat", "seen_accuracy"),
        ("0.25", "concat", "unseen_accuracy"), ("0.25", "concat", "seen_accuracy"),
        ("1.0", "concat", "test_accuracy")]
    first = diffs[0]
    ref = [json.loads((tmp_path / "ellipse-f0.1" / f"seed_{k}" / "summary.json").read_text())
           for k in (0, 1)]
    other = [json.loads((tmp_path / "concat-f0.1" / f"seed_{k}" / "summary.json").read_text())
             for k in (0, 1)]
    expected = sum(r["final"]["unseen_accuracy"] - o["final"]["unseen_accuracy"]
                   for r, o in zip(ref, other)) / 2
    assert float(first["difference"]) == pytest.approx(expected)
    assert first["metric"] == "unseen_accuracy" and float(first["ci_low"]) <= expected
    tables = (tmp_path / "tables.md").read_text()
    assert f"{100 * expected:+.1f}".replace("-", "−") in tables
    assert tables.count("| ellipse − concat |") == 5
    seen = diffs[1]
    expected_seen = sum(r["final"]["seen_accuracy"] - o["final"]["seen_accuracy"]
                        for r, o in zip(ref, other)) / 2
    assert float(seen["difference"]) == pytest.approx(expected_seen)
    with pytest.raises(ValueError, match="unknown label"):
        run_sweep(preset, tmp_path, labels=["nope"], overrides=TINY_OVERRIDES)
    with pytest.raises(ValueError, match=r"unknown value\(s\) \['0.3'\] of train_fraction"):
        run_sweep(preset, tmp_path, xs=["0.3"], overrides=TINY_OVERRIDES)
    # a sweep of part of the preset trains that part and tabulates the whole preset: its
    # tables do not shrink to the last part run (nothing trains again: all finished)
    before = (tmp_path / "results.csv").read_text()
    logs: list[str] = []
    one = run_sweep(preset, tmp_path, scale="quick", seeds=[1], labels=["concat"], xs=["0.1"],
                    overrides=TINY_OVERRIDES, log=logs.append, progress=False)
    assert [m for m in logs if m.startswith("[")] == [
        "[1/1] rotation-sparsity/concat-f0.1 (concat, x=0.1), seeds [1]"]
    assert [(r["label"], r["x"], r["seeds"]) for r in one] == [
        (r["label"], r["x"], "0 1") for r in rows]
    assert (tmp_path / "results.csv").read_text() == before


def test_sweep_whose_variable_is_the_method_pairs_across_values(tmp_path):
    # In the ablation preset each x ("with"/"without") holds one method; the
    # reference is then compared with the runs at the other values.
    preset = get_preset("preconditioning-ablation")
    run_sweep(preset, tmp_path, seeds=[0, 1], overrides=TINY_OVERRIDES, log=lambda m: None,
              progress=False)
    diffs = list(csv.DictReader(open(tmp_path / "differences.csv")))
    assert [(d["reference"], d["label"], d["x"], d["metric"]) for d in diffs] == [
        ("metric", "no-metric", "without", "unseen_accuracy"),
        ("metric", "no-metric", "without", "seen_accuracy")]
    # both methods are drawn by condition and over training
    for name in ("by_condition.csv", "curves.csv"):
        drawn = {r["label"] for r in csv.DictReader(open(tmp_path / name))}
        assert drawn == {"metric", "no-metric"}, name
    summaries = {name: [json.loads((tmp_path / name / f"seed_{k}" / "summary.json").read_text())
                        for k in (0, 1)] for name in ("metric", "no-metric")}
    metric = diffs[0]["metric"]
    expected = sum(r["final"][metric] - o["final"][metric]
                   for r, o in zip(summaries["metric"], summaries["no-metric"])) / 2
    assert float(diffs[0]["difference"]) == pytest.approx(expected)


def test_sweep_reports_the_gap_and_draws_seen_and_gap_curves(tmp_path):
    """results.csv carries the gap (seen minus unseen accuracy, per seed, then mean ± std)
    on the test set and the validation split; with a validation split the seen accuracy
    and the gap are drawn over training beside the unseen accuracy."""
    preset = get_preset("preconditioning-ablation")
    run_sweep(preset, tmp_path, seeds=[0, 1], log=lambda m: None, progress=False,
              overrides={**TINY_OVERRIDES, "validation": 64, "epochs": 2})
    rows = {r["label"]: r for r in csv.DictReader(open(tmp_path / "results.csv"))}
    for label in ("metric", "no-metric"):
        finals = [json.loads((tmp_path / label / f"seed_{k}" / "summary.json").read_text())
                  ["final"] for k in (0, 1)]
        for prefix in ("", "val_"):
            gaps = [f[f"{prefix}seen_accuracy"] - f[f"{prefix}unseen_accuracy"] for f in finals]
            assert float(rows[label][f"{prefix}gap_mean"]) == pytest.approx(sum(gaps) / 2)
            assert float(rows[label][f"{prefix}gap_std"]) == pytest.approx(
                abs(gaps[0] - gaps[1]) / 2 ** 0.5)
        per_epoch = {}
        for k in (0, 1):
            for m in csv.DictReader(open(tmp_path / label / f"seed_{k}" / "metrics.csv")):
                if m["val_seen_accuracy"]:
                    per_epoch.setdefault(int(m["epoch"]), []).append(
                        float(m["val_seen_accuracy"]) - float(m["val_unseen_accuracy"]))
        drawn = {int(r["epoch"]): float(r["val_gap_mean"])
                 for r in csv.DictReader(open(tmp_path / "curves_gap.csv"))
                 if r["label"] == label}
        assert drawn == pytest.approx({e: sum(v) / len(v) for e, v in per_epoch.items()})
    assert (tmp_path / "curves_gap.png").exists() and (tmp_path / "curves_seen.png").exists()
    assert "| unseen | gap |" in (tmp_path / "tables.md").read_text()
    # every angle seen (fraction 1): no gap to draw for that configuration, no crash
    rot = get_preset("rotation-sparsity")
    run_sweep(rot, tmp_path / "rot", scale="quick", seeds=[0], labels=["plain"],
              xs=["0.25", "1.0"],
              log=lambda m: None, progress=False,
              overrides={**TINY_OVERRIDES, "validation": 64})
    drawn = {r["label"] for r in csv.DictReader(open(tmp_path / "rot" / "curves_gap.csv"))}
    assert drawn == {"plain-f0.25"}


def test_tabulate_trains_nothing_and_uses_the_seeds_each_run_finished(tmp_path, monkeypatch):
    """--tabulate: each configuration over the seeds it finished, each paired difference
    over the seeds both runs finished, nothing trained; clear errors otherwise."""
    import weightmanifold.experiments.sweep as sweep_module

    preset = get_preset("preconditioning-ablation")
    quiet = {"log": lambda m: None, "progress": False, "overrides": TINY_OVERRIDES}
    run_sweep(preset, tmp_path, seeds=[0, 1], **quiet)
    run_sweep(preset, tmp_path, seeds=[2], labels=["metric"], **quiet)
    monkeypatch.setattr(sweep_module, "run_seeds",
                        lambda *a, **k: pytest.fail("--tabulate trained a run"))
    rows = {r["label"]: r for r in run_sweep(preset, tmp_path, seeds=[0, 1, 2, 3],
                                             train=False, **quiet)}
    assert (rows["metric"]["n"], rows["metric"]["seeds"]) == (3, "0 1 2")
    assert (rows["no-metric"]["n"], rows["no-metric"]["seeds"]) == (2, "0 1")
    finals = {name: [json.loads((tmp_path / name / f"seed_{k}" / "summary.json").read_text())
                     ["final"] for k in (0, 1, 2) if name == "metric" or k < 2]
              for name in ("metric", "no-metric")}
    assert rows["metric"]["unseen_accuracy_mean"] == pytest.approx(
        sum(f["unseen_accuracy"] for f in finals["metric"]) / 3)
    diffs = list(csv.DictReader(open(tmp_path / "differences.csv")))
    assert diffs[0]["metric"] == "unseen_accuracy" and diffs[0]["n"] == "2"
    assert float(diffs[0]["difference"]) == pytest.approx(sum(
        a["unseen_accuracy"] - b["unseen_accuracy"]
        for a, b in zip(finals["metric"][:2], finals["no-metric"])) / 2)
    with pytest.raises(ValueError, match="no finished run"):
        run_sweep(preset, tmp_path / "empty", seeds=[0], train=False, **quiet)
    with pytest.raises(ValueError, match=r"grid have not finished under .*without --tabulate"):
        run_sweep(get_preset("preconditioning-tuned"), tmp_path / "tuned", train=False,
                  log=lambda m: None, overrides={k: v for k, v in TINY_OVERRIDES.items()
                                                 if k != "lr"})
    cli = run_cli("sweep", "diffusion", "--tabulate", "--runs-dir", str(tmp_path))
    assert cli.returncode == 2 and "--tabulate does not apply" in cli.stderr
    assert "--tabulate" in run_cli("sweep", "--help").stdout


def test_runs_of_the_old_default_init_are_kept_apart_and_continued_with_init(tmp_path):
    """Runs made when the presets started 'independent': tabulating or sweeping them under
    the new default does not mix or overwrite them; ``init="independent"`` continues them."""
    from weightmanifold.experiments.checkpoint import CheckpointError

    preset, root = get_preset("preconditioning-ablation"), tmp_path / "sweep"
    logs: list[str] = []
    quiet = {"log": logs.append, "progress": False, "overrides": TINY_OVERRIDES}
    old = run_sweep(preset, root, seeds=[0], init="independent", **quiet)
    with pytest.raises(ValueError, match="no finished run"):
        run_sweep(preset, root, seeds=[0], train=False, **quiet)
    assert any("another configuration" in m and "init: saved 'independent', now 'constant'"
               in m for m in logs)
    again = run_sweep(preset, root, seeds=[0], init="independent", train=False, **quiet)
    assert [r["unseen_accuracy_mean"] for r in again] == \
        [r["unseen_accuracy_mean"] for r in old]
    saved = json.loads((root / "results.json").read_text())
    assert (saved["scale"], saved["init"]) == ("cpu", "independent")  # the tables say it
    with pytest.raises(CheckpointError, match="--init independent"):
        run_sweep(preset, root, seeds=[0], **quiet)  # resuming: its checkpoint differs
    assert main(["archive", str(root), str(tmp_path / "archived")]) == 0
    with pytest.raises(CheckpointError, match="no checkpoint to continue it from"):
        run_sweep(preset, tmp_path / "archived", seeds=[0], **quiet)
    cli = run_cli("sweep", "noise", "--init", "random")
    assert cli.returncode == 2 and "init must be constant, independent or a number" in cli.stderr
    assert "--init" in run_cli("sweep", "--help").stdout
    assert main(["sweep", "diffusion", "--init", "independent"]) == 2


OLD_PRESETS = ("rotation-sparsity", "noise", "optimizers", "unconditioned",
               "preconditioning-ablation")


def test_cpu_scale_trains_where_networks_learn_and_chooses_epochs_on_validation():
    """--scale cpu: the full training set less a validation split, the epoch chosen on it,
    the test set read once; the whole-curve studies keep their fixed epochs."""
    for name in OLD_PRESETS:
        for r in get_preset(name).runs("cpu"):
            c = r.config
            subset = 10000 if c.arch == "resnet18ln-chw" else None  # 11 min a full epoch
            assert (c.train_subset, c.test_subset, c.validation) == (subset, None, 5000), name
            # the epoch is chosen by the seen conditions: no choice reads an unseen one
            assert (c.epochs, c.patience, c.patience_on) == (10, 2, "seen"), (name, r.label)
            # and only those are validated: a tenth of the angles costs a tenth of the pass
            assert c.validate_at == "seen", (name, r.label)
    assert {r.x for r in get_preset("rotation-sparsity").runs("cpu")} == {0.1, 0.25}
    # the whole-curve studies validate at every angle: their curves and choices read them
    for name, epochs in (("init", 10), ("preconditioning-tuned", 10),
                         ("unconditioned-converged", 15), ("unconditioned-converged-tuned", 15)):
        assert {(r.config.epochs, r.config.patience, r.config.patience_on,
                 r.config.validate_at, r.config.train_subset)
                for r in get_preset(name).runs("cpu")} == {(epochs, None, None, None, None)}, \
            name


def test_quick_scale_is_the_first_results_budget():
    """--scale quick reproduces the configurations of the results made before the cpu
    budget changed (with --init independent): the same keys, field by field."""
    for name in OLD_PRESETS:
        for r in get_preset(name).runs("quick", init="independent"):
            c = r.config
            assert (c.train_subset, c.test_subset, c.validation, c.patience,
                    c.patience_on, c.validate_at) == (10000, 1000, None, None, None, None), name
            expected = 2 if c.arch == "resnet18ln-chw" else 3
            assert c.epochs == expected and c.init == "independent", (name, r.label)
    assert {r.x for r in get_preset("rotation-sparsity").runs("quick")} == {0.1, 0.25, 1.0}
    resnet = [r.config for r in get_preset("unconditioned").runs("quick") if r.x != "cnn"]
    assert {tuple(c.widths) for c in resnet} == {(16, 32, 64, 128)}
    for name in ("init", "unconditioned-converged", "preconditioning-tuned",
                 "unconditioned-tuned", "unconditioned-converged-tuned"):
        assert all(r.config.validation == 1000 and r.config.epochs == 3
                   for r in get_preset(name).runs("quick"))
    assert main(["sweep", "diffusion", "--scale", "quick"]) == 2
    text = run_cli("sweep", "--help").stdout
    assert "quick" in text and "patience" in text


def test_optimizers_preset_gives_adamw_weight_decay():
    configs = {r.label: r.config for r in get_preset("optimizers").runs("cpu")}
    assert configs["adamw"].weight_decay > 0
    assert configs["adam"].weight_decay == 0 and configs["sgd"].weight_decay == 0


def test_init_option_takes_a_number_or_a_name_and_rank_an_integer():
    from weightmanifold.cli import build_parser, config_from_args

    parser = build_parser()
    args = parser.parse_args(["train", "--init", "0.1", "--rank", "8", "--validation", "500"])
    config = config_from_args(args)
    assert config.init == 0.1 and config.rank == 8 and config.validation == 500
    assert config_from_args(parser.parse_args(["train", "--init", "constant"])).init == \
        "constant"
    with pytest.raises(ValueError, match="init"):
        config_from_args(parser.parse_args(["train", "--init", "wide"]))


def test_validate_at_option():
    from weightmanifold.cli import build_parser, config_from_args

    parser = build_parser()
    base = ["train", "--validation", "500", "--validate-at"]
    assert config_from_args(parser.parse_args([*base, "seen"])).validate_at == "seen"
    assert config_from_args(parser.parse_args([*base, "all"])).validate_at is None
    with pytest.raises(ValueError, match="'validate_at': unknown 'unseen'"):
        config_from_args(parser.parse_args([*base, "unseen"]))


def test_patience_on_option():
    from weightmanifold.cli import build_parser, config_from_args

    parser = build_parser()
    base = ["train", "--validation", "500", "--patience", "2", "--patience-on"]
    assert config_from_args(parser.parse_args([*base, "seen"])).patience_on == "seen"
    assert config_from_args(parser.parse_args([*base, "all"])).patience_on is None
    with pytest.raises(ValueError, match="'patience_on': unknown 'unseen'"):
        config_from_args(parser.parse_args([*base, "unseen"]))


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "-1", "-0.01", "", "Constant", "1e400"])
def test_sweep_init_refuses_what_is_not_a_start(text):
    """--init of a sweep: a name or a finite eps >= 0; nan compares false with everything and
    must not slip through the range check."""
    import argparse

    from weightmanifold.cli import _parse_init

    with pytest.raises(argparse.ArgumentTypeError, match="init must be constant, independent"):
        _parse_init(text)


@pytest.mark.parametrize(("text", "value"), [("0", 0.0), ("0.03", 0.03), ("1e-3", 1e-3),
                                             ("constant", "constant"),
                                             ("independent", "independent")])
def test_sweep_init_takes_names_and_finite_eps(text, value):
    from weightmanifold.cli import _parse_init

    assert _parse_init(text) == value


def test_tuned_preset_chooses_each_arms_learning_rate_on_validation(tmp_path, monkeypatch):
    """preconditioning-tuned: every arm at every learning rate of its grid on the first
    seed; that seed's validation split alone chooses one rate per arm, which then runs on
    every seed, and the differences compare the chosen runs."""
    import weightmanifold.experiments.sweep as sweep_module
    from weightmanifold.experiments.presets import ABLATION_LRS

    preset = get_preset("preconditioning-tuned")
    runs = preset.runs("cpu")
    assert sorted((r.label, r.tuned) for r in runs) == sorted(
        (label, lr) for label in ("metric", "no-metric") for lr in ABLATION_LRS)
    assert all(r.config.lr == r.tuned and r.config.validation == 5000 for r in runs)
    assert len({r.config.name for r in runs}) == len(runs)
    tiny = {k: v for k, v in TINY_OVERRIDES.items() if k != "lr"}
    with pytest.raises(ValueError, match="tunes lr"):
        run_sweep(preset, tmp_path, overrides={**tiny, "lr": 0.1})
    rows = run_sweep(preset, tmp_path, seeds=[0, 1], overrides={**tiny, "validation": 64},
                     log=lambda m: None, progress=False, figures=False)
    assert len(rows) == 2 * len(ABLATION_LRS)
    assert sorted(r["tuned_value"] for r in rows) == sorted(2 * list(ABLATION_LRS))
    assert all(r["tuned_key"] == "lr" for r in rows)

    def final(name, seed):
        path = tmp_path / name / f"seed_{seed}" / "summary.json"
        return json.loads(path.read_text())["final"]

    chosen = {}
    for label in ("metric", "no-metric"):
        mine = [r for r in rows if r["label"] == label]
        assert sum(r["chosen"] for r in mine) == 1
        val = {r["name"]: final(r["name"], 0)["val_unseen_accuracy"] for r in mine}
        pick = next(r for r in mine if r["chosen"])
        assert val[pick["name"]] == max(val.values())
        chosen[label] = pick["name"]
        for r in mine:  # the grid on seed 0 only; the chosen rate on both seeds
            assert r["n"] == (2 if r["chosen"] else 1)
            assert (tmp_path / r["name"] / "seed_1").exists() is r["chosen"]
    diffs = list(csv.DictReader(open(tmp_path / "differences.csv")))
    assert [(d["label"], d["metric"]) for d in diffs] == [
        ("no-metric", "unseen_accuracy"), ("no-metric", "seen_accuracy")]
    expected = sum(final(chosen["metric"], k)["unseen_accuracy"]
                   - final(chosen["no-metric"], k)["unseen_accuracy"] for k in (0, 1)) / 2
    assert float(diffs[0]["difference"]) == pytest.approx(expected)
    saved = json.loads((tmp_path / "results.json").read_text())["tuning"]
    assert saved["chosen_by"] == "val_unseen_accuracy" and saved["tuned_on_seeds"] == [0]
    assert sorted(saved["chosen"]) == sorted(chosen.values())
    assert "chosen by validation" in (tmp_path / "tables.md").read_text()
    # --tabulate: the same choice and tables from the runs as recorded, nothing trained
    tables = (tmp_path / "tables.md").read_text()
    with monkeypatch.context() as m:
        m.setattr(sweep_module, "run_seeds",
                  lambda *a, **k: pytest.fail("--tabulate trained a run"))
        again = run_sweep(preset, tmp_path, seeds=[0, 1], overrides={**tiny, "validation": 64},
                          log=lambda m: None, progress=False, figures=False, train=False)
    assert again == rows and (tmp_path / "tables.md").read_text() == tables
    assert json.loads((tmp_path / "results.json").read_text())["tuning"] == saved
    # a chosen rate that diverges on a later seed stops the sweep with a clear error
    path = tmp_path / chosen["metric"] / "seed_1" / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": "diverged"}))
    with pytest.raises(RuntimeError, match="chosen on seeds \\[0\\] diverged on a later"):
        run_sweep(preset, tmp_path, seeds=[0, 1], overrides={**tiny, "validation": 64},
                  log=lambda m: None, progress=False, figures=False)
    # a grid run missing on the seed it tunes on: no choice from part of the grid
    unchosen = next(r["name"] for r in rows if not r["chosen"])
    (tmp_path / unchosen / "seed_0" / "summary.json").unlink()
    with pytest.raises(ValueError, match=f"{unchosen}: seeds \\[0\\] of .* not finished"):
        run_sweep(preset, tmp_path, seeds=[0, 1], overrides={**tiny, "validation": 64},
                  log=lambda m: None, progress=False, figures=False, train=False)


def test_sweep_validated_at_the_seen_conditions_draws_the_seen_accuracy(tmp_path):
    """validate_at = "seen" (the cpu-scale presets): the curves are the validation accuracy
    at the seen conditions, named so; nothing over every condition or at unseen ones is
    drawn or tabulated as if it had been measured."""
    preset = get_preset("preconditioning-ablation")
    run_sweep(preset, tmp_path, seeds=[0], log=lambda m: None, progress=False,
              overrides={**TINY_OVERRIDES, "validation": 64, "epochs": 2,
                         "validate_at": "seen"})
    drawn = list(csv.DictReader(open(tmp_path / "curves.csv")))
    for label in ("metric", "no-metric"):
        metrics = list(csv.DictReader(open(tmp_path / label / "seed_0" / "metrics.csv")))
        assert {(m["val_accuracy"], m["val_loss"], m["val_unseen_accuracy"])
                for m in metrics} == {("", "", "")}
        assert [float(r["val_seen_accuracy_mean"]) for r in drawn if r["label"] == label] \
            == [float(m["val_seen_accuracy"]) for m in metrics]
    assert not (tmp_path / "curves_gap.png").exists()
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert {(r["val_accuracy_mean"], r["val_unseen_accuracy_mean"]) for r in rows} == {("", "")}


def test_tuning_needs_a_validation_split():
    from weightmanifold.experiments.sweep import select_tuned

    run = get_preset("preconditioning-tuned").runs("cpu")[0]
    with pytest.raises(ValueError, match="needs validation > 0"):
        select_tuned([run], [{"metrics": {"unseen_accuracy": {"mean": 0.5}}}],
                     "unseen_accuracy")


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_unconditioned_converged_preset(scale):
    """The CNN and the ResNet, each as ellipse, point and the point widened to the
    ellipse's parameters, on the full training set for 15 epochs at cpu scale."""
    runs = get_preset("unconditioned-converged").runs(scale)
    resnet = "resnet18ln" if scale == "paper" else "resnet18ln-chw"
    assert [(r.folder, r.label, r.x) for r in runs] == [
        # the CNN's folders keep their names: its runs archived before the ResNet joined
        ("ellipse", "ellipse", "cnn"), ("point", "point", "cnn"),
        ("point-wide", "point-wide", "cnn"),
        (f"{resnet}-ellipse", "ellipse", resnet), (f"{resnet}-point", "point", resnet),
        (f"{resnet}-point-wide", "point-wide", resnet)]
    for r in runs:
        c = r.config
        assert c.task == "unconditioned" and c.arch == r.x
        if scale == "cpu":
            assert c.train_subset is None and c.validation == 5000 and c.epochs == 15
    from weightmanifold.experiments.models import build_model, count_parameters

    channels, size = (3, 32) if scale == "paper" else (1, 28)

    def params(c):
        manifold = wm.topology.make_manifold("ellipse")
        return count_parameters(build_model(c.arch, c.method, manifold, in_channels=channels,
                                            image_size=size, widths=c.widths, hidden=c.hidden))

    for arch in ("cnn", resnet):
        by_label = {r.label: r.config for r in runs if r.x == arch}
        ratio = params(by_label["point-wide"]) / params(by_label["ellipse"])
        assert abs(ratio - 1) < 0.05, arch
        assert params(by_label["point"]) < params(by_label["ellipse"]) / 2, arch
    # the ResNet's budget apart from the training set is the unconditioned preset's
    small = {r.label: r.config for r in get_preset("unconditioned").runs(scale) if r.x == resnet}
    assert by_label["ellipse"].widths == small["ellipse"].widths
    assert by_label["point"].widths == small["point"].widths


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_unconditioned_tuned_preset_runs_each_network_at_every_rate_of_its_grid(scale):
    """unconditioned-tuned: the CNN and the ResNet, ellipse and point, each at every rate of
    the grid; at cpu scale both on 10 000 images (the unconditioned ResNet's subset) for a
    fixed 10 epochs, validated every epoch, the networks the unconditioned preset's own."""
    from weightmanifold.experiments.presets import UNCONDITIONED_LRS

    preset = get_preset("unconditioned-tuned")
    # the grid the README and --help name, around the paper's 0.01 the other presets run at
    assert UNCONDITIONED_LRS == (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16)
    assert "lr 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, on the first seed" in \
        preset.description
    assert preset.tune == ("lr", UNCONDITIONED_LRS) and preset.grid_seeds([0, 1, 2]) == [0]
    runs = preset.runs(scale)
    resnet = "resnet18ln" if scale == "paper" else "resnet18ln-chw"
    assert sorted((r.x, r.label, r.tuned) for r in runs) == sorted(
        (arch, label, lr) for arch in ("cnn", resnet) for label in ("ellipse", "point")
        for lr in UNCONDITIONED_LRS)
    assert len({r.folder for r in runs}) == len(runs)
    if scale == "cpu":
        assert "resnet18ln-chw-ellipse-lr0.02" in {r.folder for r in runs}
    small = {(r.x, r.label): r.config for r in get_preset("unconditioned").runs(scale)}
    for r in runs:
        c = r.config
        assert c.task == "unconditioned" and c.arch == r.x and c.lr == r.tuned
        assert c.method == ("manifold" if r.label == "ellipse" else "plain")
        # the networks of the unconditioned preset, apart from the rate
        assert (c.widths, c.hidden, c.manifold, c.init, c.optimizer, c.momentum) == (
            small[r.x, r.label].widths, small[r.x, r.label].hidden, small[r.x, r.label].manifold,
            small[r.x, r.label].init, small[r.x, r.label].optimizer,
            small[r.x, r.label].momentum), r.folder
        budget = (c.dataset, c.train_subset, c.test_subset, c.validation, c.epochs,
                  c.patience, c.validate_at)
        assert budget == ({"cpu": ("fashion-mnist", 10000, None, 5000, 10, None, None),
                           "paper": ("cifar10", None, None, 5000, 50, None, None)}[scale]), \
            r.folder
    # the rate is what the preset chooses: a sweep cannot set it
    from weightmanifold.experiments.sweep import select_runs

    with pytest.raises(ValueError, match="tunes lr"):
        select_runs(preset, overrides={"lr": 0.1})


def test_unconditioned_tuned_chooses_a_rate_per_architecture_and_method():
    """The labels repeat across the CNN and the ResNet: each (method, architecture) gets the
    rate of its own best validation accuracy, never another architecture's."""
    from weightmanifold.experiments.sweep import select_tuned

    runs = get_preset("unconditioned-tuned").runs("cpu")
    # a different best rate in each of the four groups
    best = {("ellipse", "cnn"): 0.02, ("point", "cnn"): 0.005,
            ("ellipse", "resnet18ln-chw"): 0.08, ("point", "resnet18ln-chw"): 0.01}
    aggregates = [{"metrics": {"val_accuracy": {
        "mean": 0.9 if r.tuned == best[r.label, r.x] else 0.5 + r.tuned}}} for r in runs]
    chosen, key = select_tuned(runs, aggregates, "test_accuracy")
    assert key == "val_accuracy"
    assert sorted((runs[i].label, runs[i].x, runs[i].tuned) for i in chosen) == sorted(
        (label, x, lr) for (label, x), lr in best.items())


def test_unconditioned_tuned_chooses_each_networks_rate_on_validation(tmp_path):
    """Per architecture and method the rate with the best validation accuracy on seed 0 is
    chosen and runs on the later seeds; ellipse − point compares the chosen runs."""
    from weightmanifold.experiments.presets import UNCONDITIONED_LRS

    preset = get_preset("unconditioned-tuned")
    tiny = {**{k: v for k, v in TINY_OVERRIDES.items() if k != "lr"}, "validation": 64}
    rows = run_sweep(preset, tmp_path, seeds=[0, 1], xs=["cnn"], overrides=tiny,
                     log=lambda m: None, progress=False)
    assert len(rows) == 2 * len(UNCONDITIONED_LRS) and {r["x"] for r in rows} == {"cnn"}
    assert (tmp_path / "curves.png").exists() and (tmp_path / "by_condition.png").exists()

    def final(name, seed):
        return json.loads((tmp_path / name / f"seed_{seed}" / "summary.json").read_text())[
            "final"]

    chosen = {}
    for label in ("ellipse", "point"):
        mine = [r for r in rows if r["label"] == label]
        val = {r["name"]: final(r["name"], 0)["val_accuracy"] for r in mine}
        (pick,) = [r["name"] for r in mine if r["chosen"]]
        # the first of the best (ties go to the grid's first value)
        assert pick == max(val, key=lambda n: (val[n], -list(val).index(n)))
        chosen[label] = pick
        assert {r["name"] for r in mine if (tmp_path / r["name"] / "seed_1").exists()} == {pick}
        for r in mine:  # the grid on seed 0 only; the chosen rate on both seeds
            assert r["n"] == (2 if r["chosen"] else 1)
    saved = json.loads((tmp_path / "results.json").read_text())["tuning"]
    assert saved["chosen_by"] == "val_accuracy" and saved["tuned_on_seeds"] == [0]
    assert saved["grid"] == [0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16]
    assert saved["diverged"] == []
    assert sorted(saved["chosen"]) == sorted(chosen.values())
    assert "chosen by validation" in (tmp_path / "tables.md").read_text()
    diffs = list(csv.DictReader(open(tmp_path / "differences.csv")))
    assert [(d["label"], d["x"], d["metric"]) for d in diffs] == [
        ("point", "cnn", "test_accuracy")]
    expected = sum(final(chosen["ellipse"], k)["test_accuracy"]
                   - final(chosen["point"], k)["test_accuracy"] for k in (0, 1)) / 2
    assert float(diffs[0]["difference"]) == pytest.approx(expected)


@pytest.mark.parametrize("scale", ["cpu", "quick"])
def test_unconditioned_converged_tuned_is_converged_at_each_networks_chosen_rate(scale):
    """unconditioned-converged-tuned: unconditioned-converged's ellipse and point network,
    budget and all, each at the rate unconditioned-tuned chose for it; the folder says the
    rate, so no run of the untuned preset is mistaken for one of these."""
    from weightmanifold.experiments.presets import CONVERGED_TUNED_LRS

    lrs = CONVERGED_TUNED_LRS["cpu"]  # the quick scale, a smoke test, reuses them
    runs = get_preset("unconditioned-converged-tuned").runs(scale)
    converged = {(r.x, r.label): r.config for r in get_preset("unconditioned-converged").runs(
        scale)}
    assert sorted((r.x, r.label) for r in runs) == sorted(lrs)
    for r in runs:
        c, twin = r.config.to_dict(), converged[r.x, r.label].to_dict()
        assert c["lr"] == lrs[r.x, r.label] != 0.01
        assert converged[r.x, r.label].learning_rate == 0.01
        assert r.folder == f"{r.x}-{r.label}-lr{c['lr']:g}"
        assert {k: v for k, v in c.items() if k not in ("lr", "name")} == \
            {k: v for k, v in twin.items() if k not in ("lr", "name")}, r.folder
    if scale == "cpu":
        assert {r.folder for r in runs} == {
            "cnn-ellipse-lr0.04", "cnn-point-lr0.08", "resnet18ln-chw-ellipse-lr0.005",
            "resnet18ln-chw-point-lr0.005"}


def test_unconditioned_converged_tuned_rates_are_the_archived_choice():
    """The rates are evidence, not settings: they are what the archived unconditioned-tuned
    sweep chose on validation; rerunning that sweep to another choice fails here."""
    from weightmanifold.experiments.presets import CONVERGED_TUNED_LRS, UNCONDITIONED_LRS

    archive = Path(__file__).resolve().parents[1] / "docs/results/unconditioned-tuned"
    saved = json.loads((archive / "results.json").read_text())
    assert saved["scale"] == "cpu" and saved["tuning"]["chosen_by"] == "val_accuracy"
    # chosen from today's grid, on the first seed, as the preset chooses
    assert saved["tuning"]["grid"] == list(UNCONDITIONED_LRS)
    assert saved["tuning"]["tuned_on_seeds"] == [0]
    chosen = {(r["x"], r["label"]): r["tuned_value"] for r in saved["rows"] if r["chosen"]}
    assert chosen == CONVERGED_TUNED_LRS["cpu"]
    assert list(CONVERGED_TUNED_LRS) == ["cpu"]
    # the description (--help) names the rates the preset runs
    assert "CNN: ellipse 0.04, point 0.08; ResNet: ellipse 0.005, point 0.005" in \
        get_preset("unconditioned-converged-tuned").description


@pytest.mark.parametrize("flags", [[], ["--plan"], ["--tabulate"]])
def test_unconditioned_converged_tuned_refuses_the_paper_scale_it_has_no_rates_for(
        flags, tmp_path, capsys):
    """No rate was chosen at paper scale: a clear error naming the command that would choose
    one, from every path of the sweep command, before anything is written."""
    with pytest.raises(ValueError, match=r"no choice at paper scale.*unconditioned-tuned "
                                         r"--scale paper.*CONVERGED_TUNED_LRS\['paper'\]"):
        get_preset("unconditioned-converged-tuned").runs("paper")
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "unconditioned-converged-tuned", "--scale", "paper",
              "--runs-dir", str(tmp_path), *flags])
    assert exit_.value.code == 2
    assert "no choice at paper scale" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_unconditioned_converged_cnn_runs_archived_before_the_resnet_still_count():
    """Adding the ResNet changed no CNN configuration: the archived runs are finished."""
    from weightmanifold.experiments.sweep import finished_seeds

    archive = Path(__file__).resolve().parents[1] / "docs/results/unconditioned-converged"
    cnn = [r for r in get_preset("unconditioned-converged").runs("cpu") if r.x == "cnn"]
    assert [r.folder for r in cnn] == ["ellipse", "point", "point-wide"]
    for r in cnn:
        logged: list[str] = []
        assert finished_seeds(archive / r.folder, [0, 1, 2], r.config, logged.append) == \
            [0, 1, 2], logged


def test_tuned_grid_records_a_diverged_value_and_chooses_among_the_rest(tmp_path):
    from weightmanifold.experiments.presets import Preset, _tuned_ablation

    preset = Preset("tuned-test", "", "-", "precondition", "unseen_accuracy", _tuned_ablation,
                    reference="metric", tune=("lr", (0.05, 1e12)))
    tiny = {**{k: v for k, v in TINY_OVERRIDES.items() if k != "lr"}, "validation": 64}
    logged: list[str] = []
    rows = run_sweep(preset, tmp_path, seeds=[0, 1], overrides=tiny, log=logged.append,
                     progress=False, figures=False)
    assert sorted((r["label"], r["tuned_value"], r["chosen"]) for r in rows) == [
        ("metric", 0.05, True), ("no-metric", 0.05, True)]
    tuning = json.loads((tmp_path / "results.json").read_text())["tuning"]
    assert sorted(tuning["diverged"]) == ["metric-lr1e+12", "no-metric-lr1e+12"]
    status = json.loads((tmp_path / "metric-lr1e+12" / "seed_0" / "summary.json").read_text())
    assert status["status"] == "diverged"
    logged.clear()  # run again: the diverged runs are results, not retried
    again = run_sweep(preset, tmp_path, seeds=[0, 1], overrides=tiny, log=logged.append,
                      progress=False, figures=False)
    assert again == rows
    assert sum("not retrained" in m for m in logged) == 4 + 2  # 4 finished, 2 diverged seeds 0


def test_demo_refuses_runs_of_an_earlier_demo_before_training(tmp_path, capsys):
    """runs/demo from before the constant start (or from --quick): one clear remedy, no
    training and no data needed to say so, and no hint about sweep flags."""
    from weightmanifold.experiments.checkpoint import CheckpointError
    from weightmanifold.experiments.demo import demo_configs, run_demo

    old = {**demo_configs()["ellipse"].to_dict(), "init": "independent"}
    (tmp_path / "demo" / "ellipse").mkdir(parents=True)
    (tmp_path / "demo" / "ellipse" / "config.json").write_text(json.dumps(old))
    with pytest.raises(CheckpointError, match=r"init: saved 'independent', now 'constant'\), "
                                              r"made by an earlier version.*delete .*demo to "
                                              r"train the demo afresh") as err:
        run_demo(tmp_path / "demo", data_dir=str(tmp_path / "no-data"), log=lambda m: None)
    assert "--init" not in str(err.value)
    with pytest.raises(CheckpointError, match="train_subset: saved 10000, now 3000"):
        run_demo(tmp_path / "demo", data_dir=str(tmp_path / "no-data"), quick=True,
                 log=lambda m: None)
    with pytest.raises(SystemExit) as code:
        main(["demo", "--runs-dir", str(tmp_path), "--data-dir", str(tmp_path)])
    assert code.value.code == 2 and "to train the demo afresh" in capsys.readouterr().err


def test_x_is_the_method_only_where_each_x_holds_its_own_method():
    """The optimizers' x is the method; one method over the architectures is not."""
    from weightmanifold.experiments.sweep import _x_is_method, select_runs

    assert _x_is_method(select_runs(get_preset("optimizers")))
    one_method = select_runs(get_preset("unconditioned-converged"), labels=["ellipse"])
    assert [r.x for r in one_method] == ["cnn", "resnet18ln-chw"]
    assert not _x_is_method(one_method)
    assert not _x_is_method(select_runs(get_preset("rotation-sparsity"), labels=["ellipse"]))
    assert not _x_is_method(select_runs(get_preset("optimizers"), labels=["sgd"]))


def test_tables_show_a_dash_where_a_seed_predates_the_whole_run_time():
    from weightmanifold.experiments.sweep import markdown_tables

    row = {"label": "ellipse", "x": 0.1, "n": 3, "test_accuracy_mean": 0.5,
           "test_accuracy_std": 0.01, "parameters": 10, "wall_time_s": 60.0,
           "run_time_s": None}
    assert markdown_tables([row], []).splitlines()[2].endswith("| 60 | – |")
    assert markdown_tables([{**row, "run_time_s": 95.4}], []).splitlines()[2].endswith(
        "| 60 | 95 |")
