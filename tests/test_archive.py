"""Archived sweeps: finished runs' records survive without checkpoints and are not retrained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from weightmanifold.cli import main
from weightmanifold.experiments.archive import (
    archive_sweep,
    finished_summary,
    load_summary,
    same_run,
)
from weightmanifold.experiments.checkpoint import CheckpointError
from weightmanifold.experiments.config import RunConfig
from weightmanifold.experiments.trainer import load_run_data, train

TINY = {"dataset": "synthetic", "widths": [4, 8, 8], "hidden": 16, "batch_size": 32,
        "epochs": 1, "lr": 0.05, "threads": 1, "checkpoint_every": 3,
        "task_options": {"train_fraction": 0.25, "bins": 8}}


def quiet() -> dict:
    return {"progress": False, "log": lambda msg: None}


def write_summary(run: Path, status: str = "completed", **config) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "summary.json").write_text(json.dumps({"status": status, "config": config,
                                                  "final": {"x": 1}}))


def test_same_run_ignores_only_placement():
    assert same_run({"lr": 0.1, "threads": 2, "data_dir": "/a"},
                    {"lr": 0.1, "threads": None, "data_dir": None})
    assert same_run({"lr": 0.1}, {"lr": 0.1, "threads": 4})
    assert not same_run({"lr": 0.1, "seed": 0}, {"lr": 0.1, "seed": 1})
    assert not same_run({"lr": 0.1}, {"lr": 0.1, "epochs": 3})  # a key on one side only


def test_finished_summary(tmp_path):
    assert finished_summary(tmp_path / "none", {"lr": 0.1}) is None
    write_summary(tmp_path / "a", lr=0.1, threads=2)
    assert finished_summary(tmp_path / "a", {"lr": 0.1, "threads": None})["final"] == {"x": 1}
    assert finished_summary(tmp_path / "a", {"lr": 0.2, "threads": 2}) is None
    write_summary(tmp_path / "b", status="diverged", lr=0.1)
    assert finished_summary(tmp_path / "b", {"lr": 0.1}) is None
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "summary.json").write_text("{not json")
    assert finished_summary(tmp_path / "c", {"lr": 0.1}) is None


def test_archive_copies_records_not_checkpoints(tmp_path):
    src, dest = tmp_path / "runs" / "preset", tmp_path / "docs" / "preset"
    run = src / "ellipse" / "seed_0"
    write_summary(run, lr=0.1)
    (run / "metrics.csv").write_text("epoch\n1\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"x" * 10)
    (run / "snapshots.pt").write_bytes(b"x")
    (src / "diffusion" / "checkpoint.pt").parent.mkdir(parents=True)
    (src / "diffusion" / "checkpoint.pt").write_bytes(b"x")
    (src / "results.csv").write_text("a\n")
    (src / ".results.csv.123.tmp").write_text("partial")
    (src / "big.png").write_bytes(b"x" * 100)
    left_out = archive_sweep(src, dest, max_bytes=90)
    assert left_out == [("big.png", "too large")]
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["ellipse/seed_0/metrics.csv", "ellipse/seed_0/summary.json",
                     "results.csv"]


def test_archive_leaves_out_runs_not_finished(tmp_path, capsys):
    """A run still training (or killed) has records that could neither resume without its
    checkpoint nor count as finished: it is left out whole, and named, until it is done."""
    src, dest = tmp_path / "runs" / "preset", tmp_path / "docs" / "preset"
    for seed, status in ((0, "completed"), (1, "diverged"), (2, "running")):
        run = src / "ellipse" / f"seed_{seed}"
        write_summary(run, status=status)
        (run / "config.json").write_text("{}")
        (run / "metrics.csv").write_text("epoch\n1\n")
    started = src / "ellipse" / "seed_3"  # a diffusion run writes its summary at the end
    started.mkdir()
    (started / "config.json").write_text("{}")
    (src / "ellipse" / "seed_4").mkdir()  # no config.json: not a run
    (src / "ellipse" / "seed_4" / "notes.txt").write_text("kept")
    left_out = archive_sweep(src, dest)
    assert left_out == [("ellipse/seed_2", "not finished"), ("ellipse/seed_3", "not finished")]
    kept = {str(p.relative_to(dest).parent) for p in dest.rglob("*") if p.is_file()}
    assert kept == {"ellipse/seed_0", "ellipse/seed_1", "ellipse/seed_4"}
    assert main(["archive", str(src), str(tmp_path / "again")]) == 0
    assert "left out (a run not finished: archive it once it is): ellipse/seed_2" \
        in capsys.readouterr().err


def test_archive_refuses_bad_places(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a sweep directory"):
        archive_sweep(tmp_path / "missing", tmp_path / "dest")
    (tmp_path / "sweep").mkdir()
    with pytest.raises(ValueError, match="outside the sweep directory"):
        archive_sweep(tmp_path / "sweep", tmp_path / "sweep" / "docs")
    with pytest.raises(ValueError, match="outside the sweep directory"):
        archive_sweep(tmp_path / "sweep", tmp_path / "sweep")


def test_archived_run_is_not_retrained(tmp_path):
    """Train, archive, lose the machine (the sweep directory), restore: nothing retrains."""
    config = RunConfig.from_dict(TINY)
    data = load_run_data(config)
    first = train(config, tmp_path / "runs" / "a" / "seed_0", data=data, **quiet())
    assert (tmp_path / "runs" / "a" / "seed_0" / "checkpoints" / "last.pt").exists()
    assert main(["archive", str(tmp_path / "runs"), str(tmp_path / "docs")]) == 0
    shutil.rmtree(tmp_path / "runs")
    shutil.copytree(tmp_path / "docs", tmp_path / "runs")
    # another thread count and data directory: still the same run
    again = train(config.replace(threads=2), tmp_path / "runs" / "a" / "seed_0", data=data,
                  **quiet())
    assert again["final"] == first["final"]
    assert not (tmp_path / "runs" / "a" / "seed_0" / "checkpoints").exists()
    # another learning rate is another run: it trains
    other = train(config.replace(lr=0.01), tmp_path / "runs" / "b" / "seed_0", data=data,
                  **quiet())
    assert other["final"] != first["final"]


def test_cli_archive_names_what_it_left_out(tmp_path, capsys):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "huge.csv").write_bytes(b"x" * 20)
    assert main(["archive", str(tmp_path / "sweep"), str(tmp_path / "dest"),
                 "--max-bytes", "10"]) == 0
    assert "left out (over 10 bytes): huge.csv" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        main(["archive", str(tmp_path / "nothing"), str(tmp_path / "dest")])
    assert err.value.code == 2


def test_init_does_not_tell_runs_without_a_manifold_apart():
    """A plain network has nothing to initialise along s: its archived runs stay finished."""
    assert same_run({"method": "plain", "init": "independent"},
                    {"method": "plain", "init": "constant"})
    assert same_run({"method": "concat", "init": "independent"},
                    {"method": "concat", "init": 0.1})
    assert not same_run({"method": "manifold", "init": "independent"},
                        {"method": "manifold", "init": "constant"})
    assert same_run({"method": "embedding", "init": "independent"},
                    {"method": "embedding", "init": "constant"})


@pytest.mark.parametrize("method", ["manifold", "both", "some-future-method"])
def test_init_tells_runs_with_a_manifold_apart(method):
    """The diffusion "both" (embedding and manifold) starts its manifold from init too,
    and a method this module does not know is assumed to have one."""
    assert not same_run({"method": method, "init": "independent"},
                        {"method": method, "init": "constant"})


def test_finished_run_of_another_configuration_is_not_overwritten(tmp_path):
    """An archived run (no checkpoint) of another configuration fails clearly, naming the
    key, instead of being retrained over; an old init default gets the flag that keeps it."""
    config = RunConfig.from_dict({**TINY, "method": "manifold"})
    old = {**config.to_dict(), "init": "independent"}
    write_summary(tmp_path / "a", **old)
    with pytest.raises(CheckpointError, match=r"init: saved 'independent', now 'constant'.*"
                                              r"--init independent"):
        train(config, tmp_path / "a", **quiet())
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["config"] == old
    # the same run under the old init is finished: not retrained
    assert train(config.replace(init="independent"), tmp_path / "a", **quiet())["final"] \
        == {"x": 1}
    # a plain network's old record is the same run
    plain = RunConfig.from_dict({**TINY, "method": "plain"})
    write_summary(tmp_path / "p", **{**plain.to_dict(), "init": "independent"})
    assert train(plain, tmp_path / "p", **quiet())["final"] == {"x": 1}


def test_finished_run_under_another_name_or_unreadable_is_not_overwritten(tmp_path):
    """The name counts as in finished_summary; an unreadable summary beside no checkpoint may
    be a finished run: both fail clearly and leave the directory as it was."""
    config = RunConfig.from_dict({**TINY, "name": "new"})
    write_summary(tmp_path / "a", **{**config.to_dict(), "name": "old"})
    before = (tmp_path / "a" / "summary.json").read_text()
    with pytest.raises(CheckpointError, match=r"name: saved 'old', now 'new'"):
        train(config, tmp_path / "a", **quiet())
    assert (tmp_path / "a" / "summary.json").read_text() == before
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "summary.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"summary.json that cannot be read .* move it away"):
        train(config, tmp_path / "b", **quiet())
    assert (tmp_path / "b" / "summary.json").read_text() == "{not json"
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "summary.json").write_text("[1, 2]")  # JSON, but not a summary
    with pytest.raises(CheckpointError, match=r"summary.json that is not a JSON object and no "
                                              r"checkpoint: it may hold a finished run"):
        train(config, tmp_path / "c", **quiet())
    assert (tmp_path / "c" / "summary.json").read_text() == "[1, 2]"


def test_finished_seeds_leaves_out_what_it_cannot_count_and_says_why(tmp_path):
    """The sweep counts a seed as finished exactly when finished_summary does and the run has
    final metrics; a summary.json it cannot read (truncated, or JSON that is not an object)
    is left out with its reason instead of crashing the tabulation of every other run."""
    from weightmanifold.experiments.sweep import _status, finished_seeds

    config = RunConfig(**TINY, name="r")

    def mine(seed: int, **change) -> dict:
        return config.replace(seed=seed, name=f"r/seed_{seed}", **change).to_dict()

    root = tmp_path / "r"
    write_summary(root / "seed_0", **mine(0))
    (root / "seed_1").mkdir()
    (root / "seed_1" / "summary.json").write_text("{not json")
    (root / "seed_2").mkdir()
    (root / "seed_2" / "summary.json").write_text("[1, 2]")
    write_summary(root / "seed_3", **mine(3, lr=0.2))
    (root / "seed_4").mkdir()
    (root / "seed_4" / "summary.json").write_text(json.dumps(
        {"status": "completed", "config": mine(4), "final": None}))
    write_summary(root / "seed_5", status="diverged", **mine(5))
    said: list[str] = []
    assert finished_seeds(root, range(7), config, log=said.append) == [0]
    assert len(said) == 4, said
    assert "seed_1: a summary.json that cannot be read" in said[0]
    assert "seed_2: a summary.json that is not a JSON object" in said[1]
    assert "seed_3: a run of another configuration, left out (lr: saved 0.2, now 0.05)" \
        in said[2]
    assert "seed_4: completed without final metrics" in said[3]
    assert [finished_summary(root / f"seed_{k}", mine(k)) is not None
            for k in range(7)] == [True, False, False, False, True, False, False]
    assert [_status(root, k) for k in range(7)] == ["completed", None, None, "completed",
                                                   "completed", "diverged", None]


@pytest.mark.parametrize(("content", "error", "match"), [
    (None, FileNotFoundError, r"run: no summary.json"),
    ("{not json", ValueError, r"run: a summary.json that cannot be read \(Expecting"),
    ("[]", ValueError, r"run: a summary.json that is not a JSON object"),
])
def test_load_summary_names_the_run_and_why(tmp_path, content, error, match):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "summary.json").write_text(content)
    with pytest.raises(error, match=match):
        load_summary(run)
    if content is None:
        assert load_summary(run, missing_ok=True) is None
    else:  # missing_ok excuses a missing file only
        with pytest.raises(error, match=match):
            load_summary(run, missing_ok=True)
    (run / "summary.json").write_text('{"status": "completed"}')
    assert load_summary(run) == load_summary(run, missing_ok=True) == {"status": "completed"}


def test_summaries_of_counted_seeds_name_the_run_that_cannot_be_read(tmp_path):
    """The sweep reads the summaries of seeds it has counted; one that vanished or broke
    since is named with its reason, not a bare FileNotFoundError or JSONDecodeError."""
    from weightmanifold.experiments.sweep import _summaries

    config = RunConfig(**TINY, name="r")
    root = tmp_path / "r"
    write_summary(root / "seed_0", **config.replace(seed=0, name="r/seed_0").to_dict())
    assert [s["config"]["seed"] for s in _summaries(root, [0])] == [0]
    with pytest.raises(ValueError, match=r"seed_1: no summary.json"):
        _summaries(root, [0, 1])
    (root / "seed_2").mkdir()
    (root / "seed_2" / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"seed_2: a summary.json that cannot be read"):
        _summaries(root, [2])
