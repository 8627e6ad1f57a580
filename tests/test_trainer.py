"""The trainer: determinism, resume after SIGKILL, safe checkpoints, divergence, seeds, DDP."""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import weightmanifold as wm
from weightmanifold.experiments.checkpoint import CheckpointError, load_checkpoint
from weightmanifold.experiments.config import ConfigError, RunConfig
from weightmanifold.experiments.evaluation import evaluate_checkpoint
from weightmanifold.experiments.trainer import (
    Trainer,
    TrainingDivergedError,
    aggregate_seeds,
    load_run_data,
    noise_seed,
    run_seeds,
    train,
)

TINY = {"dataset": "synthetic", "widths": [4, 8, 8], "hidden": 16, "batch_size": 32,
        "epochs": 2, "lr": 0.05, "threads": 1, "checkpoint_every": 3,
        "task_options": {"train_fraction": 0.25, "bins": 8}}


def tiny(**changes) -> RunConfig:
    return RunConfig.from_dict({**TINY, **changes})


def read(path: Path) -> str:
    return path.read_text()


@pytest.fixture(scope="module")
def data():
    return load_run_data(tiny())


def quiet(**kw):
    return {"progress": False, "log": lambda msg: None, **kw}


def test_same_seed_same_metrics(tmp_path, data):
    a = train(tiny(), tmp_path / "a", data=data, **quiet())
    b = train(tiny(), tmp_path / "b", data=data, **quiet())
    assert a["final"] == b["final"]
    assert read(tmp_path / "a" / "metrics.csv") == read(tmp_path / "b" / "metrics.csv")
    c = train(tiny(seed=1), tmp_path / "c", data=data, **quiet())
    assert c["final"] != a["final"]


def test_run_directory_files(tmp_path, data):
    summary = train(tiny(), tmp_path / "r", data=data, **quiet())
    out = tmp_path / "r"
    assert json.loads(read(out / "config.json"))["method"] == "manifold"
    lines = read(out / "metrics.csv").splitlines()
    assert lines[0].startswith("epoch,step,train_loss,test_accuracy")
    assert len(lines) == 1 + 2  # two epochs
    by_cond = read(out / "metrics_by_condition.csv").splitlines()
    assert len(by_cond) == 1 + 2 * 8  # 8 rotation bins per evaluation
    saved = json.loads(read(out / "summary.json"))
    assert saved["status"] == "completed" and saved["final"] == summary["final"]
    assert summary["final"]["unseen_accuracy"] is not None
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and state["global_step"] == summary["steps"]
    assert not list(out.rglob("*.tmp"))
    from weightmanifold.experiments.provenance import software

    assert saved["software"] == software()  # the code that trained it


def test_software_names_the_git_commit_of_the_source_or_none_outside_a_checkout(tmp_path):
    import subprocess
    from pathlib import Path

    import torch

    import weightmanifold
    from weightmanifold.experiments.provenance import _git, software

    sw = software()
    assert sw["torch"] == torch.__version__ and sw["weightmanifold"] == weightmanifold.__version__
    source = Path(weightmanifold.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"],
                              capture_output=True, text=True)
    except OSError:  # no git on this machine
        head = None
    if head is not None and head.returncode == 0:
        assert sw["git_commit"] == head.stdout.strip() and isinstance(sw["dirty"], bool)
    else:
        assert sw["git_commit"] is None and sw["dirty"] is None
    assert _git(tmp_path) == (None, None)  # not a checkout


def test_completed_run_is_not_retrained(tmp_path, data):
    first = train(tiny(), tmp_path / "r", data=data, **quiet())
    mtime = (tmp_path / "r" / "checkpoints" / "last.pt").stat().st_mtime_ns
    again = train(tiny(), tmp_path / "r", data=data, **quiet())
    assert again["final"] == first["final"]
    assert (tmp_path / "r" / "checkpoints" / "last.pt").stat().st_mtime_ns == mtime


def test_resume_in_process_mid_epoch_equals_uninterrupted(tmp_path, data):
    full = train(tiny(), tmp_path / "full", data=data, **quiet())
    part = train(tiny(max_steps=4), tmp_path / "part", data=data, **quiet())
    assert part["steps"] == 4
    rest = train(tiny(), tmp_path / "part", data=data, **quiet())
    assert rest["final"] == full["final"]
    assert read(tmp_path / "part" / "metrics.csv").splitlines()[-1] == \
        read(tmp_path / "full" / "metrics.csv").splitlines()[-1]


def test_a_point_network_on_the_unconditioned_task_is_evaluated_once(tmp_path, monkeypatch):
    """A plain network ignores s and the unconditioned task leaves the images alone: the
    trainer classifies each split once, not once per evaluation point, with the metrics a
    pass per point gives (the manifold, which depends on s, is still evaluated at every
    point)."""
    from weightmanifold.experiments import tasks as tasks_module
    from weightmanifold.experiments import trainer as trainer_module

    evaluate = tasks_module.evaluate_by_condition
    asked: list[bool] = []
    passes = [0]

    def spy(force: bool | None):
        def run(predict, *args, ignores_s: bool = False, **kw):
            asked.append(ignores_s)

            def counted(x, s):
                passes[0] += 1
                return predict(x, s)

            return evaluate(counted, *args, **kw,
                            ignores_s=ignores_s if force is None else force)
        return run

    base = {"task": "unconditioned", "task_options": {"eval_points": 4}, "validation": 16,
            "eval_batch_size": 1000}
    data = load_run_data(tiny(**base))
    monkeypatch.setattr(trainer_module, "evaluate_by_condition", spy(False))
    every = train(tiny(**base, method="plain"), tmp_path / "every", data=data, **quiet())
    every_passes, passes[0] = passes[0], 0
    monkeypatch.setattr(trainer_module, "evaluate_by_condition", spy(None))
    once = train(tiny(**base, method="plain"), tmp_path / "once", data=data, **quiet())
    assert asked and all(asked)
    # 2 epochs: validation each, the test set at the end; one batch per split
    assert (every_passes, passes[0]) == (4 * 3, 3)
    assert once["final"] == every["final"]
    assert read(tmp_path / "once" / "metrics.csv") == read(tmp_path / "every" / "metrics.csv")
    asked.clear()
    train(tiny(**base, method="manifold"), tmp_path / "manifold", data=data, **quiet())
    assert asked and not any(asked)


def test_run_time_counts_the_evaluations_across_resumes(tmp_path, data, monkeypatch):
    """``wall_time_s`` counts training steps only; ``run_time_s`` the whole run, each
    evaluation included, summed over the sessions of a resumed run, and ``None`` once
    resumed from a checkpoint that predates it (its total is unknown)."""
    import types

    from weightmanifold.experiments import trainer as trainer_module
    from weightmanifold.experiments.checkpoint import save_checkpoint

    now = [0.0]

    def clock() -> float:
        now[0] += 1.0  # every reading one second later
        return now[0]

    evaluate = Trainer._evaluate

    def slow_evaluate(self) -> None:
        now[0] += 100.0  # an evaluation takes 100 s of the fake clock
        evaluate(self)

    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(Trainer, "_evaluate", slow_evaluate)
    full = train(tiny(), tmp_path / "full", data=data, **quiet())
    assert full["epochs_completed"] == 2
    assert full["run_time_s"] >= full["wall_time_s"] + 2 * 100  # two evaluations
    assert full["wall_time_s"] < 100  # the steps only
    part = train(tiny(max_steps=4), tmp_path / "part", data=data, **quiet())
    assert part["run_time_s"] >= part["wall_time_s"] + 100
    rest = train(tiny(), tmp_path / "part", data=data, **quiet())
    # the first session's time, then the two epochs' evaluations of the second
    assert rest["run_time_s"] >= part["run_time_s"] + 2 * 100
    assert json.loads(read(tmp_path / "part" / "summary.json"))["run_time_s"] == \
        rest["run_time_s"]
    # a checkpoint written before run_time was kept: the total is unknown, not a part
    train(tiny(max_steps=4), tmp_path / "old", data=data, **quiet())
    ckpt = tmp_path / "old" / "checkpoints" / "last.pt"
    state = load_checkpoint(ckpt)
    del state["run_time"]
    save_checkpoint(ckpt, state)
    old = train(tiny(), tmp_path / "old", data=data, **quiet())
    assert old["run_time_s"] is None and old["wall_time_s"] > 0
    assert old["final"] == full["final"]


def _cli(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "weightmanifold", "train", "--runs-dir", str(run_dir),
            "--name", "k", "--dataset", "synthetic", "--widths", "4", "8", "8", "--hidden",
            "16", "--batch-size", "16", "--epochs", "3", "--lr", "0.05", "--threads", "1",
            "--checkpoint-every", "2", "--task-options", "train_fraction=0.25", "bins=8",
            "--no-progress", *extra]


def test_sigkill_then_same_command_ends_with_uninterrupted_metrics(tmp_path):
    ref = subprocess.run(_cli(tmp_path / "ref"), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    ckpt = tmp_path / "kill" / "k" / "checkpoints" / "last.pt"
    proc = subprocess.Popen(_cli(tmp_path / "kill"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(ckpt)
    total = json.loads((tmp_path / "ref" / "k" / "summary.json").read_text())["steps"]
    assert 0 < state["global_step"] < total  # really killed in the middle
    again = subprocess.run(_cli(tmp_path / "kill"), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout
    for name in ("metrics.csv", "metrics_by_condition.csv"):
        assert read(tmp_path / "kill" / "k" / name) == read(tmp_path / "ref" / "k" / name)
    a = json.loads((tmp_path / "kill" / "k" / "summary.json").read_text())
    b = json.loads((tmp_path / "ref" / "k" / "summary.json").read_text())
    assert a["final"] == b["final"] and a["steps"] == b["steps"]


def test_resume_refuses_another_configuration(tmp_path, data):
    train(tiny(max_steps=3), tmp_path / "r", data=data, **quiet())
    with pytest.raises(CheckpointError, match=r"manifold: saved 'ellipse', now 'line'"):
        train(tiny(manifold="line"), tmp_path / "r", data=data, **quiet())
    # more epochs is a continuation, not another configuration
    train(tiny(epochs=3, max_steps=5), tmp_path / "r", data=data, **quiet())


def test_checkpoint_of_another_model_is_refused(tmp_path, data):
    train(tiny(max_steps=3), tmp_path / "r", data=data, **quiet())
    path = tmp_path / "r" / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    other = Trainer(tiny(manifold="line"), tmp_path / "o", data=data, **quiet())
    with pytest.raises(RuntimeError, match=r"Ellipse\(\).*Line\(\)"):
        other.model.load_state_dict(state["model"])


def test_checkpoints_load_without_running_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"version": 1, "x": Evil()}, f)
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.save({"no": "version"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a weightmanifold checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, data):
    cfg = tiny(lr=1e12, checkpoint_every=1, epochs=3)
    with pytest.raises(TrainingDivergedError, match="last good checkpoint"):
        train(cfg, tmp_path / "d", data=data, **quiet())
    summary = json.loads(read(tmp_path / "d" / "summary.json"))
    assert summary["status"] == "diverged" and "loss became" in summary["message"]
    state = load_checkpoint(tmp_path / "d" / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values()
               if isinstance(v, torch.Tensor) and v.is_floating_point())


def test_s_weighted_l2_penalty_matches_eq14(tmp_path, data):
    cfg = tiny(task="noise", task_options={"max_noise": 0.8}, manifold="line", l2=0.1)
    trainer = Trainer(cfg, tmp_path / "l2", data=data, **quiet())
    x, y = data.train_x[:8], data.train_y[:8]
    s = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8])
    got = trainer._loss(x, y, s)
    ce = torch.nn.functional.cross_entropy(trainer.model(x, s), y)
    manifold_model = trainer.model.net
    norms = torch.stack([sum(p.pow(2).sum() for p in wm.at(manifold_model, float(si)).parameters())
                         for si in s])
    assert torch.allclose(got, ce + (s * 0.1 * norms).mean(), rtol=1e-5)


@pytest.mark.parametrize("method", ["plain", "concat", "embed", "film"])
def test_baselines_train(tmp_path, data, method):
    summary = train(tiny(method=method, max_steps=3), tmp_path / method, data=data, **quiet())
    assert summary["status"] == "completed"


@pytest.mark.parametrize("opt", ["adam", "adamw"])
def test_optimizers_and_preconditioning_switch(tmp_path, data, opt):
    on = Trainer(tiny(optimizer=opt), tmp_path / "on", data=data, **quiet())
    off = Trainer(tiny(optimizer=opt, precondition=False), tmp_path / "off", data=data, **quiet())
    assert isinstance(on.optimizer, wm.Preconditioned)
    assert not isinstance(off.optimizer, wm.Preconditioned)
    assert on.optimizer.param_groups[0]["lr"] == 0.05


def test_seeds_aggregate_mean_and_std(tmp_path, data):
    agg = run_seeds(tiny(max_steps=2), [0, 1, 2], tmp_path / "s", data=data, **quiet())
    finals = [json.loads(read(tmp_path / "s" / f"seed_{k}" / "summary.json"))["final"]
              for k in range(3)]
    accs = torch.tensor([f["test_accuracy"] for f in finals], dtype=torch.float64)
    assert agg["metrics"]["test_accuracy"]["mean"] == pytest.approx(float(accs.mean()))
    assert agg["metrics"]["test_accuracy"]["std"] == pytest.approx(float(accs.std()))
    assert len(agg["by_condition"]) == 8
    assert (tmp_path / "s" / "aggregate_by_condition.csv").exists()
    assert aggregate_seeds(tmp_path / "s", [0, 1, 2]) == agg


@pytest.mark.parametrize(("content", "error", "match"), [
    (None, FileNotFoundError, r"seed_0: no summary.json"),
    ("{not json", ValueError, r"seed_0: a summary.json that cannot be read"),
    ("[1, 2]", ValueError, r"seed_0: a summary.json that is not a JSON object"),
    ('{"status": "stopped", "final": null}', RuntimeError, r"the run of seed 0 is stopped"),
    ('{"final": null}', RuntimeError, r"seed_0: the run of seed 0 has no status"),
])
def test_aggregate_seeds_names_the_seed_it_cannot_count(tmp_path, content, error, match):
    run = tmp_path / "seed_0"
    run.mkdir()
    if content is not None:
        (run / "summary.json").write_text(content)
    with pytest.raises(error, match=match):
        aggregate_seeds(tmp_path, [0])


def test_config_errors():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['lrr'\]"):
        RunConfig.from_dict({"lrr": 0.1})
    with pytest.raises(ConfigError, match="'epochs' must be"):
        RunConfig(epochs="3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'optimizer': unknown 'rmsprop'"):
        RunConfig(optimizer="rmsprop")
    assert RunConfig(lr=1).lr == 1.0  # TOML's integer for a float


def test_config_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('method = "concat"\nepochs = 2\n[task_options]\ntrain_fraction = 0.5\n')
    cfg = RunConfig.from_toml(path, seed=3)
    assert cfg.method == "concat" and cfg.task_options == {"train_fraction": 0.5}
    assert cfg.seed == 3
    path.write_text("epochs = 'two'\n")
    with pytest.raises(ConfigError, match=r"c.toml: config key 'epochs'"):
        RunConfig.from_toml(path)


def train_single_and_ddp(tmp_path: Path, port: int, *options: str) -> None:
    """Train the tiny synthetic run into tmp_path/one (one process) and tmp_path/two (two
    processes under torch.distributed.run), with the shared options and ``options``."""
    common = ["--runs-dir", str(tmp_path), "--dataset", "synthetic", "--widths", "4", "8", "8",
              "--hidden", "16", "--batch-size", "32", "--threads", "1", "--no-progress",
              "--task-options", "train_fraction=0.25", "bins=8", *options]
    single = subprocess.run([sys.executable, "-m", "weightmanifold", "train", "--name", "one",
                             *common], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(port), "-m", "weightmanifold", "train", "--name",
                          "two", *common], capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]


def test_ddp_two_processes_match_single_process(tmp_path):
    train_single_and_ddp(tmp_path, 29517, "--epochs", "1", "--lr", "0.05")
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["model"]
    for k, v in a.items():
        if isinstance(v, torch.Tensor):
            assert torch.allclose(v, b[k], rtol=1e-4, atol=1e-6), k
    fa = json.loads(read(tmp_path / "one" / "summary.json"))["final"]
    fb = json.loads(read(tmp_path / "two" / "summary.json"))["final"]
    assert fa["test_accuracy"] == pytest.approx(fb["test_accuracy"], abs=0.01)
    assert fa["train_loss"] == pytest.approx(fb["train_loss"], rel=1e-4)


def test_result_files_are_readable_by_others(tmp_path):
    from weightmanifold.experiments.checkpoint import atomic_write_json

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_summary_reports_parameters_and_counted_flops(tmp_path, data):
    every = {"train_fraction": 1.0, "bins": 8}
    plain = train(tiny(method="plain", max_steps=1, task_options=every), tmp_path / "p",
                  data=data, **quiet())
    ellipse = train(tiny(max_steps=1, task_options=every), tmp_path / "e", data=data,
                    **quiet())
    # three basis points: three times the parameters and the matmul/conv work
    assert ellipse["parameters"] == 3 * plain["parameters"]
    ratio = ellipse["train_flops_per_example"] / plain["train_flops_per_example"]
    assert ratio == pytest.approx(3.0, rel=0.01)
    # with two training angles a batch has fewer distinct conditions than basis points:
    # the shared path materialises W(s) per angle and costs about one plain network
    two = train(tiny(max_steps=1), tmp_path / "two", data=data, **quiet())
    assert two["train_flops_per_example"] < 1.1 * plain["train_flops_per_example"]


def _patience(**changes) -> RunConfig:
    return tiny(validation=64, epochs=6, patience=1, lr=0.2, **changes)


def test_patience_needs_a_validation_split():
    with pytest.raises(ConfigError, match="'patience' chooses the epoch on the validation"):
        tiny(patience=2)
    with pytest.raises(ConfigError, match="'patience' must be >= 1"):
        tiny(validation=64, patience=0)


def test_patience_stops_on_validation_and_tests_the_chosen_epochs_weights(tmp_path):
    """The epoch is chosen on validation; the test set, read once, sees its weights: the
    same numbers as a run trained for exactly that many epochs (the reference)."""
    config = _patience()
    data = load_run_data(config)
    done = train(config, tmp_path / "p", data=data, **quiet())
    rows = (tmp_path / "p" / "metrics.csv").read_text().splitlines()
    head = rows[0].split(",")
    recs = [dict(zip(head, r.split(","), strict=True)) for r in rows[1:]]
    vals = [float(r["val_accuracy"]) for r in recs]
    # the first best, and the stop one epoch after the last improvement
    chosen = 1 + vals.index(max(vals))
    expected_stop = next((e for e in range(1, len(vals) + 1)
                          if e - (1 + vals.index(max(vals[:e]))) >= 1), len(vals))
    assert len(vals) == expected_stop == done["epochs_completed"] < config.epochs  # stopped
    assert [r["test_accuracy"] != "" for r in recs] == [False] * (len(recs) - 1) + [True]
    final = done["final"]
    assert final["selected_epoch"] == chosen
    assert final["val_accuracy"] == pytest.approx(vals[chosen - 1])
    reference = train(config.replace(patience=None, epochs=chosen), tmp_path / "ref",
                      data=data, **quiet())["final"]
    # final is the chosen epoch whole: no train loss or step from the epochs after it
    for key in ("test_accuracy", "test_loss", "seen_accuracy", "unseen_accuracy",
                "val_accuracy", "val_unseen_accuracy", "epoch", "step", "train_loss",
                "val_by_condition", "by_condition"):
        assert final[key] == reference[key], key
    # the checkpoint keeps the last weights (a continuation goes on from them), not the best
    state = load_checkpoint(tmp_path / "p" / "checkpoints" / "last.pt")
    assert state["best"]["epoch"] == chosen and state["epoch"] == expected_stop
    # the per-condition test rows say whose weights they measured
    cond = list(csv.DictReader(open(tmp_path / "p" / "metrics_by_condition.csv")))
    assert {r["weights_epoch"] for r in cond if r["split"] == "test"} == {str(chosen)}
    assert {r["weights_epoch"] for r in cond if r["split"] == "val"} == {""}
    # evaluate reads the weights the summary reports (--last: the last ones)
    rows, _ = evaluate_checkpoint(tmp_path / "p", [0.0, 0.3])
    ref_rows, _ = evaluate_checkpoint(tmp_path / "ref", [0.0, 0.3])
    assert rows == ref_rows and rows[0]["weights_epoch"] == chosen
    assert rows[0]["weights_step"] == reference["step"]
    last_rows, _ = evaluate_checkpoint(tmp_path / "p", [0.0, 0.3], last=True)
    assert last_rows[0]["weights_epoch"] == expected_stop
    assert last_rows[0]["weights_step"] == done["steps"]


@pytest.mark.parametrize("changes", [
    {},
    {"method": "plain", "seed": 1},
    # batches of 7 split the noise draws differently from one batch of the 64 images
    {"task": "noise", "task_options": {"max_noise": 0.8}, "manifold": "line", "seed": 1,
     "eval_batch_size": 7},
])
def test_evaluate_at_the_runs_own_conditions_repeats_its_test_numbers(tmp_path, data, changes):
    config = tiny(**changes)
    summary = train(config, tmp_path / "r", data=data, **quiet())
    measured = summary["final"]["by_condition"]
    # by default the trainer's test read: its batch size and its seed for the task's noise
    rows, _ = evaluate_checkpoint(tmp_path / "r", [c["s"] for c in measured])
    assert [{k: r[k] for k in ("s", "accuracy", "loss", "seen")} for r in rows] == measured
    with pytest.raises(ValueError, match=r"each condition s must be a finite number, got "
                                         r"\[0.0, nan\]"):
        evaluate_checkpoint(tmp_path / "r", [0.0, float("nan")])


def test_noise_seeds_of_a_run_differ_by_split_and_are_refused_for_others():
    assert [noise_seed(3, k) for k in ("train", "test", "val")] == [7, 8, 9]
    with pytest.raises(ValueError, match="split must be one of 'train', 'test', 'val', "
                                         "got 'validation'"):
        noise_seed(0, "validation")


def test_patience_runs_resume_exactly(tmp_path):
    config = _patience()
    data = load_run_data(config)
    full = train(config, tmp_path / "full", data=data, **quiet())
    part = train(config.replace(max_steps=7), tmp_path / "part", data=data, **quiet())
    assert part["steps"] == 7
    rest = train(config, tmp_path / "part", data=data, **quiet())
    assert rest["final"] == full["final"] and rest["steps"] == full["steps"]


def test_patience_with_max_steps_inside_the_first_epoch_tests_the_last_weights(tmp_path):
    """No whole epoch yet, so no epoch to choose: the test set is read with the weights
    trained so far (no selected_epoch), and the run continues exactly from there."""
    config = _patience()
    data = load_run_data(config)
    part = train(config.replace(max_steps=2), tmp_path / "p", data=data, **quiet())
    assert part["epochs_completed"] == 0 and part["steps"] == 2
    assert part["final"]["test_accuracy"] is not None and "selected_epoch" not in part["final"]
    rest = train(config, tmp_path / "p", data=data, **quiet())
    full = train(config, tmp_path / "full", data=data, **quiet())
    assert rest["final"] == full["final"] and rest["final"]["selected_epoch"] >= 1


def test_more_epochs_do_not_restart_a_run_patience_stopped(tmp_path):
    """The stop rule still holds: raising epochs trains nothing more; patience itself is part
    of the configuration and cannot change on a continued run."""
    config = _patience()
    data = load_run_data(config)
    done = train(config, tmp_path / "p", data=data, **quiet())
    assert done["epochs_completed"] < config.epochs
    more = train(config.replace(epochs=2 * config.epochs), tmp_path / "p", data=data,
                 **quiet())
    assert more["steps"] == done["steps"] and more["final"] == done["final"]
    with pytest.raises(CheckpointError, match="patience"):
        train(config.replace(patience=3), tmp_path / "p", data=data, **quiet())
    with pytest.raises(CheckpointError, match="patience_on: saved None, now 'seen'"):
        train(config.replace(patience_on="seen"), tmp_path / "p", data=data, **quiet())


def test_a_divergence_after_the_chosen_epoch_ends_the_run_diverged(tmp_path, monkeypatch):
    """As documented: a NaN loss ends a patience run as diverged, with no test metrics,
    even once an epoch has been chosen; the checkpoint keeps the last good weights and
    the chosen ones."""
    config = _patience().replace(epochs=4, patience=3)
    data = load_run_data(config)
    steps = {"n": 0}
    real = Trainer._global_mean

    def nan_in_epoch_two(self, loss):
        steps["n"] += 1
        return math.nan if steps["n"] > self.steps_per_epoch + 1 else real(self, loss)

    monkeypatch.setattr(Trainer, "_global_mean", nan_in_epoch_two)
    with pytest.raises(TrainingDivergedError, match="loss became nan"):
        train(config, tmp_path / "d", data=data, **quiet())
    summary = json.loads(read(tmp_path / "d" / "summary.json"))
    assert summary["status"] == "diverged" and summary["final"]["epoch"] == 1
    assert summary["final"].get("test_accuracy") is None
    state = load_checkpoint(tmp_path / "d" / "checkpoints" / "last.pt")
    assert state["best"]["epoch"] == 1 and "model" in state["best"]


def test_ddp_patience_stops_every_process_at_the_same_epoch(tmp_path):
    """Only rank 0 validates; the stop is broadcast (a process left training would hang)."""
    train_single_and_ddp(tmp_path, 29519, "--epochs", "6", "--lr", "0.2", "--validation", "64",
                         "--patience", "1")
    a = json.loads(read(tmp_path / "one" / "summary.json"))
    b = json.loads(read(tmp_path / "two" / "summary.json"))
    assert a["epochs_completed"] == b["epochs_completed"] < 6
    assert a["final"]["selected_epoch"] == b["final"]["selected_epoch"]


def test_patience_on_is_checked_and_all_is_the_default():
    with pytest.raises(ConfigError, match="'patience_on': unknown 'unseen'; valid: seen or all"):
        _patience(patience_on="unseen")
    with pytest.raises(ConfigError, match="'patience_on' says what patience chooses the epoch "
                                          "by: set 'patience' too"):
        tiny(validation=64, patience_on="seen")
    # "all" is the default, saved one way, so runs made before the key existed still match
    assert _patience(patience_on="all") == _patience()
    assert _patience(patience_on="all").to_dict()["patience_on"] is None
    assert tiny(patience_on="all").patience_on is None  # the default needs no patience


def test_patience_on_seen_refuses_a_task_evaluated_at_no_seen_condition(tmp_path, monkeypatch):
    from weightmanifold.experiments.tasks import RotationTask

    monkeypatch.setattr(RotationTask, "seen", lambda self, s: torch.zeros(s.shape, dtype=bool))
    config = tiny(validation=64, epochs=2, patience=1, patience_on="seen")
    with pytest.raises(ValueError, match="the task 'rotation' evaluates no seen condition"):
        train(config, tmp_path / "p", data=load_run_data(config), **quiet())


def test_patience_on_seen_chooses_the_epoch_by_the_seen_conditions_only(tmp_path):
    """The epoch with the best validation accuracy at the training angles is chosen (the
    first best), the stop counts from it, and the test set sees that epoch's weights."""
    config = tiny(validation=64, epochs=6, patience=2, lr=0.2, patience_on="seen")
    data = load_run_data(config)
    done = train(config, tmp_path / "p", data=data, **quiet())
    recs = list(csv.DictReader(open(tmp_path / "p" / "metrics.csv")))
    seen = [float(r["val_seen_accuracy"]) for r in recs]
    every = [float(r["val_accuracy"]) for r in recs]
    chosen = 1 + seen.index(max(seen))
    expected_stop = next((e for e in range(1, len(seen) + 1)
                          if e - (1 + seen.index(max(seen[:e]))) >= 2), len(seen))
    assert done["epochs_completed"] == expected_stop
    assert done["final"]["selected_epoch"] == chosen
    # the two rules choose differently here, so the test tells them apart
    assert chosen != 1 + every[:expected_stop].index(max(every[:expected_stop]))
    reference = train(config.replace(patience=None, patience_on=None, epochs=chosen),
                      tmp_path / "ref", data=data, **quiet())["final"]
    assert done["final"]["test_accuracy"] == reference["test_accuracy"]


def test_validate_at_is_checked_and_all_is_the_default():
    with pytest.raises(ConfigError, match="'validate_at': unknown 'unseen'; valid: seen or all"):
        tiny(validation=64, validate_at="unseen")
    with pytest.raises(ConfigError, match="'validate_at' says where the validation split is "
                                          "evaluated: set 'validation' too"):
        tiny(validate_at="seen")
    # "all" is the default, saved one way, so runs made before the key existed still match
    assert tiny(validation=64, validate_at="all") == tiny(validation=64)
    assert tiny(validation=64, validate_at="all").to_dict()["validate_at"] is None
    assert tiny(validate_at="all").validate_at is None
    # patience must then choose by the seen accuracy: there is none over every condition
    with pytest.raises(ConfigError, match=r"'validate_at' = 'seen' leaves no accuracy over "
                                          r"every condition .*set patience_on = 'seen'"):
        tiny(validation=64, patience=2, validate_at="seen")
    assert tiny(validation=64, patience=2, patience_on="seen", validate_at="seen")


def test_a_run_saved_before_validate_at_existed_continues(tmp_path):
    """config.json and summary.json written without the key read as validate_at = None:
    the run continues and the sweep counts it finished."""
    from weightmanifold.experiments.sweep import finished_seeds

    config = tiny(validation=64, epochs=2, name="r/seed_0")
    data = load_run_data(config)
    run = tmp_path / "r" / "seed_0"
    done = train(config.replace(epochs=1), run, data=data, **quiet())
    for name in ("config.json", "summary.json"):
        saved = json.loads(read(run / name))
        (saved.get("config", saved)).pop("validate_at")
        (run / name).write_text(json.dumps(saved))
    said: list[str] = []
    assert finished_seeds(tmp_path / "r", [0], config.replace(epochs=1, name="r"),
                          log=said.append) == [0], said
    more = train(config, run, data=data, **quiet())
    assert more["epochs_completed"] == 2 > done["epochs_completed"]


def test_validate_at_seen_refuses_a_task_evaluated_at_no_seen_condition(tmp_path, monkeypatch):
    from weightmanifold.experiments.tasks import RotationTask

    monkeypatch.setattr(RotationTask, "seen", lambda self, s: torch.zeros(s.shape, dtype=bool))
    config = tiny(validation=64, epochs=1, validate_at="seen")
    with pytest.raises(ValueError, match="validate_at = 'seen': the task 'rotation' evaluates "
                                         "no seen condition"):
        train(config, tmp_path / "v", data=load_run_data(config), **quiet())


def test_validate_at_seen_changes_only_what_validation_costs(tmp_path):
    """Validating at the seen angles only chooses the same epoch as patience_on = 'seen' over
    every angle, with the same seen validation accuracy every epoch and the same test metrics
    (read at every angle); the unseen validation accuracy is left empty."""
    config = tiny(validation=64, epochs=6, patience=2, lr=0.2, patience_on="seen")
    data = load_run_data(config)
    every = train(config, tmp_path / "all", data=data, **quiet())
    seen = train(config.replace(validate_at="seen"), tmp_path / "seen", data=data, **quiet())
    assert seen["final"]["selected_epoch"] == every["final"]["selected_epoch"]
    assert seen["epochs_completed"] == every["epochs_completed"]
    for key in ("test_accuracy", "test_loss", "seen_accuracy", "unseen_accuracy",
                "val_seen_accuracy"):
        assert seen["final"][key] == every["final"][key], key
    # nothing over every condition or at the unseen ones is reported as if measured
    for key in ("val_unseen_accuracy", "val_accuracy", "val_loss"):
        assert seen["final"][key] is None, key
    a = list(csv.DictReader(open(tmp_path / "all" / "metrics.csv")))
    b = list(csv.DictReader(open(tmp_path / "seen" / "metrics.csv")))
    assert [r["val_seen_accuracy"] for r in a] == [r["val_seen_accuracy"] for r in b]
    assert {(r["val_unseen_accuracy"], r["val_accuracy"], r["val_loss"]) for r in b} == \
        {("", "", "")}
    # a continued run cannot change where it validates
    with pytest.raises(CheckpointError, match="validate_at: saved 'seen', now None"):
        train(config, tmp_path / "seen", data=data, **quiet())
