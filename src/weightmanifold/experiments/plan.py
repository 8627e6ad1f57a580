"""What a sweep would do, before it does it: :func:`sweep_plan` (``weightmanifold sweep --plan``).

For every configuration a sweep selects, the state of each seed's run under the
sweep directory, read from its files and nothing else (no data is loaded, nothing
is trained or written):

* ``finished``: a ``summary.json`` that completed, of this configuration;
* ``diverged``: a ``summary.json`` that diverged, of this configuration, in a preset
  that tunes a learning rate (the sweep keeps it: a result, not an error; any other
  sweep trains it again, from its checkpoint if it has one);
* ``resumes``: a run that has started and not finished (a checkpoint), of this
  configuration up to what a resume may change (the epochs, the placement): the
  sweep continues it from the checkpoint;
* ``to train``: no run yet, or files no finished result is lost with (a
  ``config.json`` of another configuration with no checkpoint trains from the
  start too);
* ``refused``: what the sweep stops at and trains nothing over, with the reason: a
  finished run of another configuration with no checkpoint (an archived result),
  an unreadable ``summary.json`` beside no checkpoint, or a checkpoint of another
  configuration.

The states are the trainer's own decisions
(:func:`~weightmanifold.experiments.archive.finished_summary`,
:func:`~weightmanifold.experiments.archive.training_refusal`), read without
loading a checkpoint.

With the wall times of the runs already finished it estimates the time left: each
seed still to train (or to resume, in full) costs the mean wall time of the finished
seeds of its configuration, or else of the same network and budget (another start,
learning rate or x) elsewhere in the sweep, or else of the same method on the same
architecture elsewhere in it (never another architecture's run of the label). A
configuration's wall time is its finished seeds' ``run_time_s`` (the whole run,
its evaluations included) where every one records it, else their ``wall_time_s``
(the training steps; a diffusion run's with its periodic validation), and similar
configurations' whole runs are preferred. A
preset that tunes a key runs its grid on its first seeds and then the chosen value
on the others: those later runs are counted once per method (``chosen later``).

:func:`diffusion_plan` reads the ``diffusion`` preset's runs the same way: every
method runs its first seed, and the manifold chosen by that seed's validation loss
runs the others, counted once for all the manifolds.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .archive import (
    PLACEMENT_KEYS,
    configuration_mismatch,
    finished_summary,
    read_summary,
    training_refusal,
)
from .presets import Preset
from .sweep import select_runs
from .trainer import RESUMABLE_CHANGES

__all__ = ["STATES", "diffusion_plan", "format_plan", "sweep_plan"]

#: the states of a seed's run, in the order the plan lists them
STATES = ("finished", "diverged", "resumes", "to train", "refused")


def _read(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (a run's config.json); ``None`` where it cannot be read."""
    try:
        with open(path) as f:
            out = json.load(f)
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def _state(run_dir: Path, mine: dict[str, Any], checkpoint: str = "checkpoints/last.pt",
           resumable: frozenset[str] = frozenset(RESUMABLE_CHANGES),
           final: tuple[str, ...] = ("completed",)
           ) -> tuple[str, tuple[float | None, float | None] | None, str | None]:
    """``(state, (run_time_s, wall_time_s) of a finished run, why it is refused)``, as the
    trainer
    decides: a run of ``mine`` whose status is in ``final`` is not retrained
    (:func:`~weightmanifold.experiments.archive.finished_summary`); without a
    checkpoint, an archived result is never trained over
    (:func:`~weightmanifold.experiments.archive.training_refusal`) and anything else
    is trained; a checkpoint resumes unless its run differs in more than
    ``resumable`` (judged from the ``config.json`` every start of the run rewrites,
    else its ``summary.json``). ``checkpoint``: where in ``run_dir`` an unfinished
    run keeps its checkpoint."""
    done = finished_summary(run_dir, mine, final)
    if done is not None and done["status"] == "diverged":
        return "diverged", None, None
    if done is not None and done.get("final") is None:
        # the trainer keeps it, and the sweep then cannot tabulate it
        return "refused", None, ("has a completed summary.json without final metrics: "
                                 "move it away to train here")
    if done is not None:
        whole, steps = (float(t) if isinstance(t, (int, float)) else None
                        for t in (done.get("run_time_s"), done.get("wall_time_s")))
        return "finished", (whole, steps), None
    if not (run_dir / checkpoint).exists():
        why = training_refusal(run_dir, mine, run_dir / checkpoint)
        return ("to train", None, None) if why is None else ("refused", None, why)
    saved = _read(run_dir / "config.json") or (read_summary(run_dir)[0] or {}).get("config")
    mismatch = configuration_mismatch(saved, mine, ignore=resumable, hint=False) \
        if isinstance(saved, dict) else ""
    if mismatch:
        return "refused", None, (f"has a checkpoint of another configuration ({mismatch}) "
                                 "that cannot be resumed")
    return "resumes", None, None


def _read_seeds(row: dict[str, Any], runs: Sequence[tuple[int, Path, dict[str, Any]]], *,
                checkpoint: str = "checkpoints/last.pt",
                resumable: frozenset[str] = frozenset(RESUMABLE_CHANGES),
                final: tuple[str, ...] = ("completed",)) -> None:
    """Fill ``row``'s state lists, ``refused_because`` and ``wall_s`` from each seed's run
    (``(seed, its directory, its configuration)``, in the order the sweep trains them).
    A seed outside ``row["seeds"]`` is listed only once it has a run: it trains only if
    a later choice picks it. Nor is one after a diverged seed (where ``final`` counts a
    divergence as a result): the sweep stops that configuration there.

    ``wall_s`` is the mean ``run_time_s`` (the whole run) of the finished seeds when
    every one recorded it, else their mean ``wall_time_s`` (the training; ``whole``
    says which)."""
    times = []
    stopped = False
    for seed, run_dir, mine in runs:
        state, cost, why = _state(run_dir, mine, checkpoint, resumable, final)
        if (stopped and state in ("to train", "resumes", "refused")) or (
                seed not in row["seeds"] and state in ("to train", "resumes")):
            continue  # the sweep never gets to it (a refusal it would meet if chosen shows)
        stopped = stopped or state == "diverged"
        row[state].append(seed)
        if why is not None:
            row["refused_because"][seed] = why
        if cost is not None:
            times.append(cost)
    whole = bool(times) and all(t[0] is not None for t in times)
    walls = [t[0] if whole else t[1] for t in times]
    walls = [w for w in walls if w is not None]
    row["wall_s"] = statistics.fmean(walls) if walls else None
    row["whole"] = whole


def _model(config: Any) -> str:
    """The network a configuration trains, which its cost depends on."""
    keys = ("arch", "method", "manifold", "manifold_options", "features", "widths", "hidden",
            "rank", "train_subset", "validation", "epochs", "validate_at")
    return json.dumps({k: getattr(config, k) for k in keys}, sort_keys=True)


def sweep_plan(preset: Preset, root: str | Path, *, scale: str = "cpu",
               seeds: Sequence[int] | None = None, labels: Sequence[str] | None = None,
               xs: Sequence[str] | None = None, data_dir: str | None = None,
               overrides: dict[str, Any] | None = None,
               init: str | float | None = None) -> list[dict[str, Any]]:
    """The state of every run a sweep with these arguments would make (see :func:`run_sweep`).

    Args:
        preset, root, scale, seeds, labels, xs, data_dir, overrides, init: as
            :func:`~weightmanifold.experiments.sweep.run_sweep`.

    Returns:
        One row per configuration: ``name``, ``label``, ``x``, ``seeds`` (those it
        runs whatever a tuning chooses), one list of seeds per state of
        :data:`STATES`, ``chosen_later`` (the seeds a tuned grid value runs if it
        is chosen), ``refused_because`` (seed → why, a phrase after the run's name),
        ``wall_s`` (mean wall time of its finished seeds, or ``None``) and
        ``estimate_s`` (the time its seeds still to train or resume would take,
        from its own finished seeds, else the same method's, else the same
        network's; ``None`` if there is none to go by).

    Raises:
        ValueError: as :func:`~weightmanifold.experiments.sweep.select_runs`.
    """
    root = Path(root)
    runs = select_runs(preset, scale=scale, labels=labels, xs=xs, data_dir=data_dir,
                       overrides=overrides, init=init)
    seeds = list(seeds) if seeds is not None else preset.seeds(scale)
    grid_seeds = preset.grid_seeds(seeds)
    # in a tuned grid a diverged run is a result; elsewhere the sweep trains it again
    final = ("completed", "diverged") if preset.tune is not None else ("completed",)
    rows = []
    for run in runs:
        name = run.folder
        row: dict[str, Any] = {"name": name, "label": run.label, "x": run.x,
                               "seeds": grid_seeds, **{state: [] for state in STATES},
                               "chosen_later": [s for s in seeds if s not in grid_seeds],
                               "refused_because": {}}
        # a later seed of a grid value runs only if the tuning chooses the value
        _read_seeds(row, [(s, root / name / f"seed_{s}", run.config.replace(
            seed=s, name=f"{run.config.name}/seed_{s}").to_dict()) for s in seeds],
            final=final)
        rows.append(row)
    # the same network and budget (another start, rate or x) elsewhere here, or else the
    # same method on the same architecture (a label alone spans architectures: the
    # unconditioned presets' ResNet ellipse costs several times their CNN ellipse)
    by_label: dict[tuple[str, str], list[tuple[bool, float]]] = {}
    by_model: dict[str, list[tuple[bool, float]]] = {}
    for row, run in zip(rows, runs, strict=True):
        if row["wall_s"] is not None:
            by_label.setdefault((row["label"], run.config.arch), []).append(
                (row["whole"], row["wall_s"]))
            by_model.setdefault(_model(run.config), []).append((row["whole"], row["wall_s"]))
    for row, run in zip(rows, runs, strict=True):
        similar = (by_model.get(_model(run.config))
                   or by_label.get((row["label"], run.config.arch)) or [])
        # whole runs where any similar configuration recorded them: the training alone
        # understates a run by its evaluations
        similar = [w for whole, w in similar if whole] or [w for _, w in similar]
        per_run = row["wall_s"] if row["wall_s"] is not None else (
            statistics.fmean(similar) if similar else None)
        left = len(row["to train"]) + len(row["resumes"])
        row["estimate_s"] = None if per_run is None else (per_run * left if left else 0.0)
    return rows


def diffusion_plan(root: str | Path, *, scale: str = "cpu",
                   seeds: Sequence[int] | None = None, labels: Sequence[str] | None = None,
                   overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The state of every run the ``diffusion`` preset would make, as :func:`sweep_plan`.

    The embedding and its width-matched twin run every seed; every other method
    runs the first, and the manifold-only method with the lowest validation loss
    there runs the others. Once every selected candidate's first seed has finished
    that method is known (``chosen``) and its row lists all seeds; before, every
    candidate's later seeds are ``chosen_later``, which :func:`format_plan` with
    ``later="diffusion"`` counts once. The time left
    comes from each method's own finished seeds only: the methods differ in cost.

    Args:
        root: the sweep directory (``runs/diffusion``).
        scale, seeds, labels: as
            :func:`~weightmanifold.experiments.diffusion_sweep.run_diffusion_sweep`.
        overrides: configuration keys applied to every run (``data_dir``, ``threads``).

    Raises:
        ValueError: for unknown labels or scale.
    """
    from .diffusion_sweep import CANDIDATES, REPLICATED, SEEDS, best_manifold, select_methods

    root = Path(root)
    configs = select_methods(scale, labels)
    seeds = list(seeds) if seeds is not None else list(SEEDS[scale])
    over = overrides or {}
    firsts: dict[str, dict[str, Any] | None] = {}
    for label in CANDIDATES:
        if label in configs:
            run_dir = root / label / f"seed_{seeds[0]}"
            mine = configs[label].replace(seed=seeds[0], **over).to_dict()
            finished = _state(run_dir, mine, "checkpoint.pt", PLACEMENT_KEYS)[0] == "finished"
            firsts[label] = read_summary(run_dir)[0] if finished else None
    # the sweep chooses once every candidate it runs has run its first seed
    chosen = best_manifold(firsts) if firsts and all(firsts.values()) else None
    rows = []
    for label, config in configs.items():
        runs_all = label in REPLICATED or label == chosen
        row: dict[str, Any] = {
            "name": label, "label": label, "x": None,
            "seeds": seeds if runs_all else seeds[:1], **{state: [] for state in STATES},
            "chosen_later": seeds[1:] if label in CANDIDATES and chosen is None else [],
            "chosen": label == chosen, "refused_because": {}}
        # a later seed runs only if this method is chosen (or never, for the rest)
        _read_seeds(row, [(s, root / label / f"seed_{s}", config.replace(seed=s, **over).to_dict())
                          for s in seeds], checkpoint="checkpoint.pt", resumable=PLACEMENT_KEYS)
        left = len(row["to train"]) + len(row["resumes"])
        row["estimate_s"] = None if row["wall_s"] is None else row["wall_s"] * left
        rows.append(row)
    return rows


def format_plan(rows: Sequence[dict[str, Any]], *, tuned: str | None = None,
                later: str | None = None) -> str:
    """The plan as a text table with a closing line of totals (what ``--plan`` prints).

    Args:
        rows: from :func:`sweep_plan` or :func:`diffusion_plan`.
        tuned: the key a tuned preset tunes (its later seeds are then counted once
            per method).
        later: ``"diffusion"``: the rows of :func:`diffusion_plan`, whose later seeds
            are the one manifold the first seed chooses (instead of ``tuned``).
    """
    def seeds(values: Sequence[int]) -> str:
        return ",".join(map(str, values)) or "-"

    header = ("configuration", "finished", "diverged", "resumes", "to train", "refused",
              "min/run", "min left")
    table = [header]
    for r in rows:
        per_run = "?" if r["wall_s"] is None else f"{r['wall_s'] / 60:.1f}"
        left = "?" if r["estimate_s"] is None else f"{r['estimate_s'] / 60:.0f}"
        table.append((r["name"], *(seeds(r[s]) for s in STATES), per_run, left))
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in table]
    for r in rows:
        for seed, why in r["refused_because"].items():
            lines.append(f"refused: {r['name']}/seed_{seed} {why}")
    todo = sum(len(r["to train"]) + len(r["resumes"]) for r in rows)
    known = [r["estimate_s"] for r in rows if r["estimate_s"] is not None]
    unknown = sum(1 for r in rows if r["estimate_s"] is None
                  and (r["to train"] or r["resumes"]))
    if not known and unknown:
        total = "no finished run of these networks here to estimate the time from"
    else:
        total = f"about {sum(known) / 60:.0f} min" + (
            f" for the configurations with a finished run to go by, {unknown} without one"
            if unknown else "")
    lines.append(f"{todo} run(s) to train or resume: {total}")
    if later == "diffusion":
        chosen = [r["name"] for r in rows if r.get("chosen")]
        waiting = [r for r in rows if r["chosen_later"]]
        if chosen:
            lines.append(f"the manifold chosen by the first seed's validation loss: {chosen[0]} "
                         "(its other seeds are counted above)")
        elif waiting:
            # whichever is chosen, the seeds every candidate has already finished are done
            done = set.intersection(*(set(r["finished"]) | set(r["diverged"])
                                      for r in waiting))
            n = len(set(waiting[0]["chosen_later"]) - done)
            if n:
                lines.append(f"then the manifold-only method with the lowest validation loss on "
                             f"the first seed, on its other seeds: up to {n} more run(s)")
    elif tuned is not None:
        # per method, its later seeds not yet run by any value of the grid
        later_seeds: dict[tuple[str, Any], set[int]] = {}
        done: dict[tuple[str, Any], set[int]] = {}
        for r in rows:
            key = (r["label"], r["x"])
            later_seeds.setdefault(key, set()).update(r["chosen_later"])
            done.setdefault(key, set()).update(r["finished"], r["diverged"])
        n = sum(len(later_seeds[k] - done[k]) for k in later_seeds)
        if n:
            lines.append(f"then, per method, the {tuned} chosen on validation on its other "
                         f"seeds: {n} more run(s)")
    return "\n".join(lines)
