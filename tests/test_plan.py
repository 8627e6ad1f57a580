"""``weightmanifold sweep --plan``: what a sweep would do, read from the run files alone."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from weightmanifold.experiments.plan import STATES, format_plan, sweep_plan
from weightmanifold.experiments.presets import get_preset
from weightmanifold.experiments.sweep import run_sweep, select_runs

TINY = {"dataset": "synthetic", "train_subset": None, "test_subset": None,
        "validation": None, "patience": None, "patience_on": None, "validate_at": None,
        "epochs": 1, "widths": [4, 8, 8], "hidden": 16, "batch_size": 32, "threads": 1,
        "lr": 0.05}


def files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


def write_run(root: Path, config, seed: int, *, status: str | None = "completed",
              wall: float = 60.0, checkpoint: bool = False, extra: dict | None = None,
              run_time: float | None = None, **changes) -> None:
    """The files a run of ``config`` at ``seed`` leaves (``status=None``: no summary yet);
    ``extra``: keys its configuration recorded that the current one does not have;
    ``run_time``: the whole run's seconds (``None``: a run from before they were kept)."""
    mine = config.replace(seed=seed, name=f"{config.name}/seed_{seed}", **changes).to_dict()
    mine.update(extra or {})
    run = root / config.name.split("/")[-1] / f"seed_{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(mine))
    if status is not None:
        (run / "summary.json").write_text(json.dumps({
            "status": status, "config": mine, "wall_time_s": wall,
            **({} if run_time is None else {"run_time_s": run_time}),
            "final": {"test_accuracy": 0.5} if status == "completed" else None}))
    if checkpoint:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.pt").write_bytes(b"")


def test_plan_reads_each_seeds_state_and_estimates_from_finished_runs(tmp_path):
    preset = get_preset("init")
    runs = {r.config.name.split("/")[-1]: r.config
            for r in select_runs(preset, xs=["0.25"])}
    write_run(tmp_path, runs["plain-f0.25"], 0, wall=300.0)
    write_run(tmp_path, runs["plain-f0.25"], 1, wall=240.0)
    write_run(tmp_path, runs["plain-f0.25"], 2, status=None, checkpoint=True)  # started
    write_run(tmp_path, runs["ellipse-eps0-f0.25"], 0, wall=420.0)
    write_run(tmp_path, runs["ellipse-eps0-f0.25"], 1, status="diverged")  # trains again
    write_run(tmp_path, runs["ellipse-eps0-f0.25"], 2, status=None)  # no checkpoint yet
    write_run(tmp_path, runs["plain-wide-f0.25"], 0, lr=0.02)  # another configuration
    before = files(tmp_path)
    rows = {r["name"]: r for r in sweep_plan(preset, tmp_path, xs=["0.25"])}
    assert files(tmp_path) == before  # nothing written
    assert set(rows) == set(runs)

    def states(name):
        return tuple(rows[name][s] for s in STATES)

    assert states("plain-f0.25") == ([0, 1], [], [2], [], [])
    assert rows["plain-f0.25"]["wall_s"] == 270.0
    assert rows["plain-f0.25"]["estimate_s"] == 270.0  # the one to resume, in full
    assert states("ellipse-eps0-f0.25") == ([0], [], [], [1, 2], [])
    assert rows["ellipse-eps0-f0.25"]["estimate_s"] == 840.0
    # another start of the same network costs what the finished one did
    assert states("ellipse-eps0.3-f0.25") == ([], [], [], [0, 1, 2], [])
    assert rows["ellipse-eps0.3-f0.25"]["estimate_s"] == 3 * 420.0
    assert states("plain-wide-f0.25") == ([], [], [], [1, 2], [0])
    assert "lr: saved 0.02, now None" in rows["plain-wide-f0.25"]["refused_because"][0]
    assert rows["plain-wide-f0.25"]["estimate_s"] is None  # nothing like it has finished
    text = format_plan(list(rows.values()))
    assert ("refused: plain-wide-f0.25/seed_0 holds a finished run of another configuration "
            "(lr: saved 0.02") in text
    # plain: 1 to resume (270 s); ellipse ε = 0: 2 (420 s); ε = 0.03 ... 1 and independent
    # draws, the same network: 5 × 3 × 420 s; plain-wide 2 and experts 3, with nothing to go by
    assert rows["ellipse-independent-f0.25"]["estimate_s"] == 3 * 420.0
    assert text.splitlines()[-1] == (
        "23 run(s) to train or resume: about 124 min for the configurations with a finished "
        "run to go by, 2 without one")


def test_plan_of_a_tuned_preset_counts_the_chosen_values_later_runs_once(tmp_path):
    preset = get_preset("preconditioning-tuned")
    runs = {r.config.name.split("/")[-1]: r.config for r in select_runs(preset)}
    write_run(tmp_path, runs["metric-lr0.01"], 0)
    write_run(tmp_path, runs["metric-lr0.01"], 1)  # chosen, and run on a later seed
    rows = sweep_plan(preset, tmp_path)
    assert all(r["seeds"] == [0] and r["chosen_later"] == [1, 2] for r in rows)
    mine = next(r for r in rows if r["name"] == "metric-lr0.01")
    assert mine["finished"] == [0, 1] and mine["to train"] == []
    # the rest of the grid on seed 0
    assert sum(len(r["to train"]) for r in rows) == 2 * len(preset.tune[1]) - 1
    # two methods, each with seeds 1 and 2 to run once chosen; seed 1 of one is done
    assert format_plan(rows, tuned="lr").splitlines()[-1] == (
        "then, per method, the lr chosen on validation on its other seeds: 3 more run(s)")
    # in a tuned grid a diverged run is a result, kept
    write_run(tmp_path, runs["metric-lr0.04"], 0, status="diverged")
    again = {r["name"]: r for r in sweep_plan(preset, tmp_path)}
    assert again["metric-lr0.04"]["diverged"] == [0] and again["metric-lr0.04"]["to train"] == []
    # a grid tuned on several seeds stops a value at its first diverged seed, as run_seeds
    on_all = dataclasses.replace(preset, tune_seeds=None)
    write_run(tmp_path, runs["metric-lr0.04"], 2, status="diverged")
    stops = {r["name"]: r for r in sweep_plan(on_all, tmp_path)}
    assert stops["metric-lr0.04"]["seeds"] == [0, 1, 2]
    assert stops["metric-lr0.04"]["diverged"] == [0, 2]
    assert stops["metric-lr0.04"]["to train"] == []
    assert stops["metric-lr0.02"]["to train"] == [0, 1, 2]
    # nor a refusal it never meets: seed 1 holds a run of another rate, after seed 0 diverged
    write_run(tmp_path, runs["metric-lr0.04"], 1, lr=0.5)
    stops = {r["name"]: r for r in sweep_plan(on_all, tmp_path)}
    assert stops["metric-lr0.04"]["refused"] == [] == stops["metric-lr0.04"]["to train"]


def test_plan_says_what_the_sweep_then_does(tmp_path):
    preset = get_preset("preconditioning-ablation")
    plan = sweep_plan(preset, tmp_path, seeds=[0], overrides=TINY)
    assert [r["to train"] for r in plan] == [[0], [0]]
    assert format_plan(plan).splitlines()[-1] == (
        "2 run(s) to train or resume: no finished run of these networks here to estimate the "
        "time from")
    run_sweep(preset, tmp_path, seeds=[0], overrides=TINY, log=lambda m: None,
              progress=False, figures=False)
    after = sweep_plan(preset, tmp_path, seeds=[0], overrides=TINY)
    assert [r["finished"] for r in after] == [[0], [0]]
    for r in after:
        summary = json.loads((tmp_path / r["name"] / "seed_0" / "summary.json").read_text())
        # the whole run, evaluations included, not only its training steps
        assert r["wall_s"] == summary["run_time_s"] > summary["wall_time_s"]
        assert r["estimate_s"] == 0.0
    assert format_plan(after).splitlines()[-1].startswith("0 run(s) to train or resume")
    # the same selection as the sweep: its errors too
    with pytest.raises(ValueError, match="unknown label"):
        sweep_plan(preset, tmp_path, labels=["nope"])


def plan_cli(*args: str) -> list[str]:
    """The lines ``weightmanifold sweep ... --plan`` prints (it must succeed)."""
    out = subprocess.run([sys.executable, "-m", "weightmanifold", "sweep", *args, "--plan"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_cli_plan_trains_and_writes_nothing(tmp_path):
    lines = plan_cli("init", "--x", "0.1", "--only", "plain", "--runs-dir", str(tmp_path))
    assert lines[:2] == [
        f"init at --scale cpu, under {tmp_path / 'init'}:",
        "configuration  finished  diverged  resumes  to train  refused  min/run  min left"]
    assert any("plain-f0.1" in line for line in lines)
    assert lines[-1].startswith("3 run(s) to train or resume")
    assert not any(tmp_path.iterdir())


def test_grid_seeds_are_the_first_tune_seeds_of_a_tuned_preset() -> None:
    from weightmanifold.experiments.presets import get_preset
    assert get_preset("preconditioning-tuned").grid_seeds([3, 4, 5]) == [3]
    assert get_preset("init").grid_seeds([3, 4, 5]) == [3, 4, 5]


def test_a_plan_folder_name_given_as_a_label_says_which_label_and_x_it_is() -> None:
    preset = get_preset("rotation-sparsity")
    with pytest.raises(ValueError, match=r"'ellipse-r4-f0.1' is the folder of --only "
                                         r"ellipse-r4 --x 0.1"):
        select_runs(preset, labels=["ellipse-r4-f0.1"])
    # a plain typo gets the list of labels and no hint
    with pytest.raises(ValueError, match=r"valid: [^(]*$"):
        select_runs(preset, labels=["ellipse-r5"])


# -- the diffusion preset: the same plan, from its own run layout -----------------------------
def write_diffusion_run(root: Path, label: str, seed: int, *, status: str | None = "completed",
                        wall: float = 90.0, checkpoint: bool = False, val_loss: float = 0.05,
                        **changes) -> None:
    """The files a diffusion run leaves: ``<label>/seed_<k>/`` with ``checkpoint.pt``."""
    from weightmanifold.experiments.diffusion_sweep import methods

    mine = methods("cpu")[label].replace(seed=seed, **changes).to_dict()
    run = root / label / f"seed_{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(mine))
    if status is not None:
        (run / "summary.json").write_text(json.dumps({
            "status": status, "config": mine, "wall_time_s": wall, "final": {"loss": 0.04},
            "history": [{"step": 1500, "val_loss": val_loss}]}))
    if checkpoint:
        (run / "checkpoint.pt").write_bytes(b"")


def test_diffusion_plan_reads_each_seeds_state_and_counts_the_chosen_manifolds_seeds(tmp_path):
    pytest.importorskip("diffusers")  # the width-matched twin's widths are found on UNets
    from weightmanifold.experiments.diffusion_sweep import CANDIDATES, REFERENCE, methods
    from weightmanifold.experiments.plan import diffusion_plan

    write_diffusion_run(tmp_path, "embedding", 0, wall=60.0)
    write_diffusion_run(tmp_path, "embedding", 1, status=None, checkpoint=True)
    write_diffusion_run(tmp_path, "line", 0, wall=120.0, threads=1)  # placement: still it
    write_diffusion_run(tmp_path, "line", 1)  # an earlier sweep chose it; this may not
    write_diffusion_run(tmp_path, "quadratic", 0, lr=0.5)  # another configuration
    rows = {r["name"]: r for r in diffusion_plan(tmp_path)}
    assert list(rows) == list(methods("cpu"))
    emb = rows[REFERENCE]
    assert (emb["finished"], emb["resumes"], emb["to train"]) == ([0], [1], [2])
    assert emb["seeds"] == [0, 1, 2] and emb["chosen_later"] == []
    assert emb["estimate_s"] == 120.0  # two seeds left at its own 60 s
    assert rows["embedding-wide"]["to train"] == [0, 1, 2]
    line = rows["line"]
    assert (line["finished"], line["to train"], line["chosen_later"]) == ([0, 1], [], [1, 2])
    assert line["estimate_s"] == 0.0
    assert rows["quadratic"]["refused"] == [0]
    assert "lr: saved 0.5" in rows["quadratic"]["refused_because"][0]
    assert rows["both"]["seeds"] == [0] and rows["both"]["chosen_later"] == []
    assert all(rows[k]["chosen_later"] == [1, 2] for k in CANDIDATES)
    assert not any(r["chosen"] for r in rows.values())  # not every first seed has run
    text = format_plan(list(rows.values()), later="diffusion")
    assert ("refused: quadratic/seed_0 holds a finished run of another configuration "
            "(lr: saved 0.5") in text
    assert text.splitlines()[-1] == ("then the manifold-only method with the lowest validation "
                                     "loss on the first seed, on its other seeds: up to 2 more "
                                     "run(s)")


def test_diffusion_plan_names_the_manifold_once_every_first_seed_has_run(tmp_path):
    pytest.importorskip("diffusers")
    from weightmanifold.experiments.diffusion_sweep import CANDIDATES
    from weightmanifold.experiments.plan import diffusion_plan

    for label in CANDIDATES:
        write_diffusion_run(tmp_path, label, 0, val_loss=0.05 - 0.001 * (label == "bspline8"))
    write_diffusion_run(tmp_path, "line", 1)  # run by an earlier choice: counts for nothing
    rows = {r["name"]: r for r in diffusion_plan(tmp_path)}
    assert rows["bspline8"]["chosen"] and rows["bspline8"]["to train"] == [1, 2]
    assert rows["line"]["finished"] == [0, 1] and rows["line"]["to train"] == []
    assert all(r["chosen_later"] == [] for r in rows.values())
    text = format_plan(list(rows.values()), later="diffusion")
    assert text.splitlines()[-2].startswith("9 run(s) to train or resume")  # 3 + 3 + 2 + both
    assert text.splitlines()[-1] == ("the manifold chosen by the first seed's validation loss: "
                                     "bspline8 (its other seeds are counted above)")
    with pytest.raises(ValueError, match="unknown label"):
        diffusion_plan(tmp_path, labels=["adaln"])
    # with --only, the choice is among the candidates selected
    only = {r["name"]: r for r in diffusion_plan(tmp_path, labels=["embedding", "line"])}
    assert only["line"]["chosen"] and only["line"]["to train"] == [2]


def test_cli_diffusion_plan_trains_and_writes_nothing(tmp_path):
    """It used to start the sweep: the data set, the classifier, every denoiser."""
    pytest.importorskip("diffusers")
    from weightmanifold.cli import main

    empty = tmp_path / "no-data"
    empty.mkdir()
    lines = plan_cli("diffusion", "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(empty))
    assert lines[:2] == [
        f"diffusion at --scale cpu, under {tmp_path / 'runs' / 'diffusion'}:",
        "configuration   finished  diverged  resumes  to train  refused  min/run  min left"]
    assert any(line.startswith("bspline4-r8") for line in lines)
    assert lines[-2].startswith("13 run(s) to train or resume")
    assert lines[-1].endswith("on its other seeds: up to 2 more run(s)")
    assert not (tmp_path / "runs").exists()
    assert main(["sweep", "diffusion", "--plan", "--x", "0.1"]) == 2  # still checked first


def test_plan_decides_each_runs_state_as_the_trainer_does(tmp_path):
    """The plan once judged a run by its recorded configuration alone: it called a run
    directory holding only the ``config.json`` of another configuration refused (the
    trainer trains there), an unreadable ``summary.json`` beside no checkpoint 'to train'
    (the trainer refuses it), a finished run recording a key the configuration has since
    dropped (saved as None) refused (the trainer counts it finished), and a checkpoint
    whose run asked for another number of epochs refused (the trainer resumes it)."""
    from weightmanifold.experiments.checkpoint import CheckpointError
    from weightmanifold.experiments.trainer import train

    preset = get_preset("preconditioning-ablation")
    config = select_runs(preset, overrides=TINY, labels=["metric"])[0].config
    root = tmp_path / config.name.split("/")[-1]

    def plan(seed: int) -> tuple[str, str | None]:
        row = sweep_plan(preset, tmp_path, seeds=[seed], overrides=TINY, labels=["metric"])[0]
        state = next(s for s in STATES if row[s])
        return state, row["refused_because"].get(seed)

    write_run(tmp_path, config, 0, status=None, lr=0.5)  # config.json of another run
    write_run(tmp_path, config, 1, status=None)
    (root / "seed_1" / "summary.json").write_text("{not json")
    write_run(tmp_path, config, 2, extra={"dropped_key": None})  # a key no longer in the config
    write_run(tmp_path, config, 3, status="running", checkpoint=True, epochs=7)
    write_run(tmp_path, config, 4, status="running", checkpoint=True, lr=0.5)
    write_run(tmp_path, config, 5, status="diverged")  # an untuned preset trains it again
    write_run(tmp_path, config, 6)
    summary = json.loads((root / "seed_6" / "summary.json").read_text())
    (root / "seed_6" / "summary.json").write_text(json.dumps({**summary, "final": None}))
    write_run(tmp_path, config, 7, status=None)
    (root / "seed_7" / "summary.json").write_text("[1, 2]")  # JSON, not a summary
    assert plan(0) == ("to train", None)
    state, why = plan(1)
    assert state == "refused" and why.startswith("has a summary.json that cannot be read")
    assert plan(2) == ("finished", None)
    assert plan(3) == ("resumes", None)
    state, why = plan(4)
    assert state == "refused" and "lr: saved 0.5" in why and "cannot be resumed" in why
    assert plan(5) == ("to train", None)
    state, why = plan(6)
    assert state == "refused" and why.startswith("has a completed summary.json without final")
    state, why = plan(7)  # refused by the trainer too: no checkpoint, a file it did not write
    assert state == "refused" and why.startswith("has a summary.json that is not a JSON object")
    text = format_plan(sweep_plan(preset, tmp_path, seeds=[1, 4], overrides=TINY,
                                  labels=["metric"]))
    assert "refused: metric/seed_1 has a summary.json that cannot be read" in text
    assert "refused: metric/seed_4 has a checkpoint of another configuration (lr: saved" in text

    # what the trainer does with the same directories
    def run(seed: int) -> dict:
        mine = config.replace(seed=seed, name=f"{config.name}/seed_{seed}")
        return train(mine, root / f"seed_{seed}", log=lambda m: None, progress=False)

    assert run(0)["status"] == "completed"  # trained over the stray config.json
    assert run(5)["status"] == "completed"  # the diverged run, trained again
    with pytest.raises(CheckpointError, match=r"summary\.json that cannot be read"):
        run(1)
    with pytest.raises(CheckpointError, match=r"summary\.json that is not a JSON object"):
        run(7)
    assert (root / "seed_7" / "summary.json").read_text() == "[1, 2]"
    before = (root / "seed_2" / "summary.json").read_text()
    assert run(2)["final"] == {"test_accuracy": 0.5}  # not retrained
    assert (root / "seed_2" / "summary.json").read_text() == before


def test_plan_estimates_from_whole_runs_where_every_seed_recorded_them(tmp_path):
    """A configuration's cost is its whole runs' (run_time_s, evaluations included) when
    every finished seed recorded one, else its training steps' (wall_time_s), never a mean
    of the two; a configuration with nothing finished goes by similar whole runs first."""
    preset = get_preset("init")
    runs = {r.config.name.split("/")[-1]: r.config
            for r in select_runs(preset, xs=["0.25"])}
    write_run(tmp_path, runs["plain-f0.25"], 0, wall=300.0, run_time=500.0)
    write_run(tmp_path, runs["plain-f0.25"], 1, wall=240.0)  # from before run_time_s
    write_run(tmp_path, runs["ellipse-eps0-f0.25"], 0, wall=420.0, run_time=700.0)
    write_run(tmp_path, runs["ellipse-eps0-f0.25"], 1, wall=400.0, run_time=660.0)
    write_run(tmp_path, runs["ellipse-eps0.1-f0.25"], 0, wall=100.0)
    rows = {r["name"]: r for r in sweep_plan(preset, tmp_path, xs=["0.25"])}
    assert (rows["plain-f0.25"]["wall_s"], rows["plain-f0.25"]["whole"]) == (270.0, False)
    assert (rows["ellipse-eps0-f0.25"]["wall_s"], rows["ellipse-eps0-f0.25"]["whole"]) == \
        (680.0, True)
    assert rows["ellipse-eps0-f0.25"]["estimate_s"] == 680.0  # seed 2
    assert rows["ellipse-eps0.1-f0.25"]["estimate_s"] == 2 * 100.0  # its own, steps only
    # the same network elsewhere: the whole runs, not the training steps of eps 0.1
    assert rows["ellipse-eps0.3-f0.25"]["estimate_s"] == 3 * 680.0


def test_plan_never_times_one_architecture_by_another(tmp_path):
    """The unconditioned-converged labels repeat across the CNN and the ResNet: a ResNet
    run is timed by ResNet runs only, never by the CNN's run of the same label."""
    preset = get_preset("unconditioned-converged")
    runs = {r.folder: r.config for r in select_runs(preset)}
    for folder in ("ellipse", "point", "point-wide"):
        for seed in (0, 1, 2):
            write_run(tmp_path, runs[folder], seed, wall=600.0, run_time=700.0)
    write_run(tmp_path, runs["resnet18ln-chw-ellipse"], 0, wall=2400.0, run_time=2800.0)
    rows = {r["name"]: r for r in sweep_plan(preset, tmp_path)}
    assert rows["ellipse"]["estimate_s"] == 0.0  # finished
    assert rows["resnet18ln-chw-ellipse"]["estimate_s"] == 2 * 2800.0
    # nothing of the ResNet point's network or label has finished: no estimate, not the CNN's
    assert rows["resnet18ln-chw-point"]["estimate_s"] is None
    assert rows["resnet18ln-chw-point-wide"]["estimate_s"] is None
