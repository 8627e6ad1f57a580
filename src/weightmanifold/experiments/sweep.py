"""Running a preset (or any list of configurations) over seeds, with a results table and figures.

A sweep directory ``runs/<preset>/`` holds one directory per configuration
(``<config>/seed_<k>/`` plus that configuration's ``aggregate.json``), and::

    results.csv / results.json      one row per configuration: label, x, mean ± std
                                    of every final metric over the seeds (gap: seen
                                    minus unseen accuracy, per seed), parameters,
                                    counted training FLOPs per example, wall time
                                    (training steps) and run time (the whole run)
    differences.csv                 the preset's reference method minus each other
                                    method, paired by seed, with a 95 % t interval
                                    (a tuned preset: between the configurations its
                                    validation split chose, see :func:`select_tuned`)
    sweep.png / sweep.csv           the metric vs the swept variable (Fig. 2b style)
    by_condition.png / .csv         accuracy per condition bin of each method (at
                                    the sparsest x; every method when x is the method)
    curves.png / .csv               the metric over training per configuration,
                                    mean ± std over the seeds (with a validation
                                    split at every condition and unseen
                                    conditions, also curves_seen and curves_gap:
                                    seen accuracy and seen minus unseen over
                                    training; with validate_at = "seen" the
                                    curves are the seen accuracy)
    tables.md                       results.csv and differences.csv as Markdown
                                    tables (percent, mean ± std), ready to paste

Every run is resumable, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .archive import finished_run, load_summary, read_summary
from .checkpoint import atomic_write_bytes, atomic_write_csv, atomic_write_json
from .config import RunConfig
from .presets import Preset, PresetRun
from .trainer import RunData, aggregate_seeds, load_run_data, run_seeds

__all__ = ["METRICS", "markdown_tables", "mean_run_time", "paired_difference",
           "paired_differences", "run_sweep", "select_runs", "select_tuned", "sweep_rows",
           "t_quantile_975"]

METRICS = ("test_accuracy", "seen_accuracy", "unseen_accuracy", "gap", "test_loss",
           "train_loss", "val_accuracy", "val_seen_accuracy", "val_unseen_accuracy", "val_gap")

# two-sided 95 % quantiles of Student's t, by degrees of freedom
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t_quantile_975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (3 decimals).

    Raises:
        ValueError: for ``df < 1``.
    """
    if df < 1:
        raise ValueError(f"a t quantile needs at least 1 degree of freedom, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    return 1.960 + 2.4 / df  # within 0.003 of the exact value for df > 30


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int | None]:
    """Mean of ``a_i - b_i`` over paired seeds, with a 95 % t confidence interval.

    .. math:: \\bar d \\pm t_{0.975,\\, n-1}\\, s_d / \\sqrt n

    Returns:
        ``{"mean", "ci_low", "ci_high", "n"}``; the interval is ``None`` for one pair.

    Raises:
        ValueError: for sequences of different lengths or no pairs.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired difference needs equally many values, got {len(a)} and "
                         f"{len(b)}")
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n
    if n == 1:
        return {"mean": mean, "ci_low": None, "ci_high": None, "n": 1}
    sd = (sum((x - mean) ** 2 for x in d) / (n - 1)) ** 0.5
    half = t_quantile_975(n - 1) * sd / n ** 0.5
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def finished_seeds(run_dir: Path, seeds: Sequence[int], config: RunConfig,
                   log: Callable[[str], None] | None = None) -> list[int]:
    """The seeds among ``seeds`` whose run of ``config`` under ``run_dir`` completed with
    final metrics.

    A seed counts only if its run is of that configuration (at that seed, up to
    placement; see :func:`~weightmanifold.experiments.archive.finished_run`); ``log``
    is told which runs were left out, and why: one of another configuration, a
    ``summary.json`` that cannot be read, or a completed run without final metrics.
    """
    done = []
    for seed in seeds:
        run = run_dir / f"seed_{seed}"
        mine = config.replace(seed=seed, name=f"{config.name}/seed_{seed}").to_dict()
        summary, why = finished_run(run, mine)
        if summary is not None and summary.get("final") is None:
            why = "completed without final metrics, left out: move it away to train it again"
        elif summary is not None:
            done.append(seed)
        if why is not None and log is not None:
            log(f"{run}: {why}")
    return done


def _status(run_dir: Path, seed: int) -> str | None:
    """The recorded status of ``run_dir/seed_<seed>`` (``None``: no readable summary)."""
    summary, _ = read_summary(run_dir / f"seed_{seed}")
    return None if summary is None else summary.get("status")


def _summaries(root: Path, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The ``summary.json`` of each of ``seeds`` under ``root``, all of which must be there.

    Raises:
        ValueError: a seed's summary is missing or cannot be read.
    """
    out = []
    for seed in seeds:
        summary = load_summary(root / f"seed_{seed}", missing_ok=True)
        if summary is None:
            raise ValueError(f"{root / f'seed_{seed}'}: no summary.json")
        out.append(summary)
    return out


def sweep_rows(runs: Sequence[PresetRun], aggregates: Sequence[dict[str, Any]],
               root: Path | None = None) -> list[dict]:
    """One table row per configuration from its seed aggregate.

    With the sweep's ``root``, rows also carry the parameter count, the counted
    training FLOPs per example and the mean wall time of the runs: ``wall_time_s``
    (their training steps) and ``run_time_s`` (the whole runs, evaluations included;
    ``None`` unless every seed recorded it).
    """
    rows = []
    for run, agg in zip(runs, aggregates, strict=True):
        name = run.folder
        row: dict[str, Any] = {"label": run.label, "x": run.x, "name": name,
                               "n": len(agg["seeds"]),
                               "seeds": " ".join(str(k) for k in agg["seeds"])}
        for key in METRICS:
            m = agg["metrics"].get(key)
            row[f"{key}_mean"] = None if m is None else m["mean"]
            row[f"{key}_std"] = None if m is None else m["std"]
        if root is not None:
            summaries = _summaries(root / name, agg["seeds"])
            row["parameters"] = summaries[0]["parameters"]
            row["train_flops_per_example"] = summaries[0].get("train_flops_per_example")
            row["wall_time_s"] = sum(x["wall_time_s"] for x in summaries) / len(summaries)
            row["run_time_s"] = mean_run_time(summaries)
        rows.append(row)
    return rows


def _x_is_method(runs: Sequence[PresetRun]) -> bool:
    """Whether each value of the swept variable holds one run of its own method (the
    variable is the method, as in the optimizers preset), not one method at several
    values (``--only ellipse`` of a preset whose x is the architecture)."""
    return len(runs) > 1 and len({run.x for run in runs}) == len(runs) == \
        len({run.label for run in runs})


def paired_differences(runs: Sequence[PresetRun], root: Path, seeds: Sequence[int],
                       reference: str, side: str = "left") -> list[dict[str, Any]]:
    """Reference method minus each other method, paired by seed, at every x.

    Seeds pair runs that saw the same data order and training conditions. Where
    the task has unseen conditions there are two rows per method, the
    unseen-condition accuracy first and then the seen-condition accuracy;
    otherwise one row, the test accuracy. Each pair uses the seeds that both of
    its runs finished. When every x holds one method (the
    swept variable *is* the method, as in the optimizers and ablation presets)
    the reference is compared with every other run, and ``x`` is the other
    run's value. ``side="right"`` reports each method minus the reference instead
    (for a baseline as the reference); the row's ``reference`` and ``label``
    keep their meaning and ``sign`` says which was subtracted.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    by_x: dict[Any, dict[str, PresetRun]] = {}
    for run in runs:
        by_x.setdefault(run.x, {})[run.label] = run
    groups = list(by_x.values())
    if _x_is_method(runs):
        groups = [{run.label: run for run in runs}]
    rows = []
    for labels in groups:
        if reference not in labels:
            continue
        ref_dir = root / labels[reference].folder
        ref_done = finished_seeds(ref_dir, seeds, labels[reference].config)
        for label, run in labels.items():
            if label == reference:
                continue
            other_dir = root / run.folder
            # the seeds both finished (all of them, unless tabulating a sweep in progress)
            other_done = set(finished_seeds(other_dir, seeds, run.config))
            common = [k for k in ref_done if k in other_done]
            if not common:
                continue
            ref, other = _summaries(ref_dir, common), _summaries(other_dir, common)
            metrics = ["unseen_accuracy", "seen_accuracy"] \
                if ref[0]["final"].get("unseen_accuracy") is not None else ["test_accuracy"]
            for metric in metrics:
                a = [r["final"][metric] for r in ref]
                b = [o["final"][metric] for o in other]
                diff = paired_difference(*((a, b) if side == "left" else (b, a)))
                rows.append({"x": run.x, "reference": reference, "label": label,
                             "sign": "reference - method" if side == "left"
                             else "method - reference", "metric": metric,
                             "difference": diff["mean"],
                             "ci_low": diff["ci_low"], "ci_high": diff["ci_high"],
                             "n": diff["n"], "reference_parameters": ref[0]["parameters"],
                             "parameters": other[0]["parameters"],
                             "reference_flops": ref[0].get("train_flops_per_example"),
                             "flops": other[0].get("train_flops_per_example")})
    return rows


def _pct(mean: Any, std: Any = None) -> str:
    if mean is None or mean == "":
        return "–"
    text = f"{100 * float(mean):.1f}"
    if std is not None and std != "":
        text += f" ± {100 * float(std):.1f}"
    return text


def _signed(value: Any) -> str:
    return "–" if value is None or value == "" else f"{100 * float(value):+.1f}".replace(
        "-", "−")


def _mflop(value: Any) -> str:
    return "–" if value is None or value == "" else f"{float(value) / 1e6:,.0f}"


def mean_run_time(summaries: Sequence[Mapping[str, Any]]) -> float | None:
    """The mean ``run_time_s`` (the whole run, evaluations included) of the runs'
    summaries; ``None`` unless every one recorded it (a mean of some would understate)."""
    whole = [s.get("run_time_s") for s in summaries]
    return None if not whole or None in whole else sum(whole) / len(whole)


def _seconds(value: Any) -> str:
    return "–" if value is None or value == "" else f"{float(value):.0f}"


def markdown_tables(rows: Sequence[Mapping[str, Any]], diffs: Sequence[Mapping[str, Any]],
                    *, x_name: str | None = None) -> str:
    """The rows of ``results.csv`` and ``differences.csv`` as Markdown tables.

    Accuracies are in percent, mean ± std over the seeds (the gap is seen minus
    unseen accuracy, per seed, in percentage points); differences are in
    percentage points with their 95 % interval; FLOPs are the counted training
    FLOPs per example in millions; "wall s" is a run's training steps and "run s"
    the whole run with its evaluations (``–`` where a seed's run predates it),
    each the mean over the seeds.

    Args:
        rows: the rows of :func:`sweep_rows` (or of ``results.csv``).
        diffs: the rows of :func:`paired_differences` (may be empty).
        x_name: the swept variable's name (a column when given).

    Examples:
        >>> row = {"label": "ellipse", "x": 0.1, "n": 3, "test_accuracy_mean": 0.5,
        ...        "test_accuracy_std": 0.01, "parameters": 10, "wall_time_s": 60.0,
        ...        "run_time_s": 95.0}
        >>> print(markdown_tables([row], [], x_name="train_fraction"))
        | method | train_fraction | all conditions | seen | unseen | gap | seeds | parameters | MFLOP / example | wall s | run s |
        |---|---|---|---|---|---|---|---|---|---|---|
        | ellipse | 0.1 | 50.0 ± 1.0 | – | – | – | 3 | 10 | – | 60 | 95 |
        <BLANKLINE>
    """  # noqa: E501
    xcol = [x_name] if x_name else []
    head = ["method", *xcol, "all conditions", "seen", "unseen", "gap", "seeds", "parameters",
            "MFLOP / example", "wall s", "run s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        label = str(r["label"])
        if r.get("tuned_key") not in (None, ""):
            label += f" ({r['tuned_key']} {r['tuned_value']}" + (
                ", chosen by validation)" if str(r.get("chosen")) == "True" else ")")
        cells = [label, *([str(r["x"])] if x_name else []),
                 _pct(r.get("test_accuracy_mean"), r.get("test_accuracy_std")),
                 _pct(r.get("seen_accuracy_mean"), r.get("seen_accuracy_std")),
                 _pct(r.get("unseen_accuracy_mean"), r.get("unseen_accuracy_std")),
                 _pct(r.get("gap_mean"), r.get("gap_std")),
                 str(r.get("n", "–")),
                 "–" if r.get("parameters") in (None, "") else f"{int(r['parameters']):,}",
                 _mflop(r.get("train_flops_per_example")),
                 _seconds(r.get("wall_time_s")), _seconds(r.get("run_time_s"))]
        lines.append("| " + " | ".join(cells) + " |")
    if diffs:
        lead = f"{diffs[0]['reference']} minus each method" \
            if diffs[0].get("sign") != "method - reference" \
            else f"each method minus {diffs[0]['reference']}"
        lines += ["", f"{lead}, paired by seed (percentage points, 95 % t interval):", ""]
        head = ["comparison", *xcol, "metric", "difference", "95 % interval", "seeds",
                "parameters (reference / other)", "MFLOP / example (reference / other)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for d in diffs:
            interval = "–" if d.get("ci_low") in (None, "") else \
                f"[{_signed(d['ci_low'])}, {_signed(d['ci_high'])}]"
            params = " / ".join("–" if d.get(k) in (None, "") else f"{int(d[k]):,}"
                                for k in ("reference_parameters", "parameters"))
            flops = " / ".join(_mflop(d.get(k)) for k in ("reference_flops", "flops"))
            pair = (d["label"], d["reference"]) if d.get("sign") == "method - reference" \
                else (d["reference"], d["label"])
            cells = [f"{pair[0]} − {pair[1]}", *([str(d["x"])] if x_name else []),
                     str(d["metric"]).replace("_", " "), _signed(d["difference"]), interval,
                     str(d["n"]), params, flops]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def select_runs(preset: Preset, *, scale: str = "cpu", labels: Sequence[str] | None = None,
                xs: Sequence[str] | None = None, data_dir: str | None = None,
                overrides: dict[str, Any] | None = None,
                init: str | float | None = None) -> list[PresetRun]:
    """The configurations of ``preset`` a sweep with these arguments runs (see :func:`run_sweep`).

    Raises:
        ValueError: for labels or values that match no configuration, or an override of
            the key a tuned preset tunes.
    """
    runs = preset.runs(scale, init=init)
    if labels:
        unknown = sorted(set(labels) - {r.label for r in runs})
        if unknown:
            # a run's folder name is not a label
            folders = {r.folder: r for r in runs}
            hints = [f"{name!r} is the folder of --only {folders[name].label} --x "
                     f"{folders[name].x}" for name in unknown
                     if name in folders and folders[name].x is not None]
            raise ValueError(f"unknown label(s) {unknown} for preset {preset.name!r}; valid: "
                             f"{', '.join(sorted({r.label for r in runs}))}"
                             + (f" ({'; '.join(hints)})" if hints else ""))
        runs = [r for r in runs if r.label in labels]
    if xs:
        valid = sorted({str(r.x) for r in runs})
        unknown = sorted(set(xs) - set(valid))
        if unknown:
            raise ValueError(f"unknown value(s) {unknown} of {preset.x_name} for preset "
                             f"{preset.name!r}; valid: {', '.join(valid)}")
        runs = [r for r in runs if str(r.x) in xs]
    changes = dict(overrides or {})
    if data_dir is not None:
        changes["data_dir"] = data_dir
    if preset.tune is not None and preset.tune[0] in changes:
        raise ValueError(f"preset {preset.name!r} tunes {preset.tune[0]} over "
                         f"{list(preset.tune[1])} on its validation split: it cannot be "
                         "overridden")
    runs = [dataclasses.replace(r, config=r.config.replace(**changes)) for r in runs]
    return runs


def run_sweep(preset: Preset, root: str | Path, *, scale: str = "cpu",
              seeds: Sequence[int] | None = None, labels: Sequence[str] | None = None,
              xs: Sequence[str] | None = None, data_dir: str | None = None,
              overrides: dict[str, Any] | None = None, init: str | float | None = None,
              progress: bool | None = None, log: Callable[[str], None] = print,
              figures: bool = True, train: bool = True) -> list[dict[str, Any]]:
    """Run every configuration of ``preset`` for every seed, then tabulate and plot.

    The tables and figures are the preset's: every configuration (at this scale,
    ``init`` and ``overrides``), not only the selected ones, over the seeds it
    has finished among ``seeds`` and the preset's (configurations with none are
    left out), and each paired difference over the seeds both of its runs
    finished. A sweep run in parts (``labels``, ``xs``, ``seeds``) thus ends with
    the tables of everything finished so far. A tuned preset is the exception:
    it tabulates the selected grid, over ``seeds``.

    With ``train=False`` nothing is trained: every selected configuration is
    tabulated over the seeds it has finished among ``seeds`` — a sweep in
    progress, or one whose methods ran different seeds, in one table. A tuned
    preset chooses from its grid as recorded, which must have finished on the
    seeds it tunes on, and tabulates each chosen run over the seeds it finished.

    Args:
        preset: the experiment.
        root: the sweep directory (``runs/<preset>``).
        scale: ``"cpu"``, ``"quick"`` or ``"paper"``.
        seeds: seeds to run (default: the preset's for the scale).
        labels: run only the configurations with these labels (methods).
        xs: run only the configurations at these values of the swept variable
            (compared as text: ``"0.1"``, ``"adam"``).
        data_dir: where the data set lives (default: its standard location).
        overrides: run-configuration keys applied to every configuration
            (e.g. ``{"epochs": 1}`` for a quick look).
        init: the initialisation of the configurations that do not set their
            own (see :meth:`~weightmanifold.experiments.presets.Preset.runs`).
        progress, log: as :class:`~weightmanifold.experiments.trainer.Trainer`.
        figures: draw the figures at the end.
        train: train what is missing (``False``: tabulate the finished runs only).

    Returns:
        The rows of ``results.csv``.

    Raises:
        ValueError: for labels or values that match no configuration, when no
            selected run has finished, or with ``train=False`` on a tuned preset
            whose grid has not finished on the seeds it tunes on.
    """
    root = Path(root)
    runs = select_runs(preset, scale=scale, labels=labels, xs=xs, data_dir=data_dir,
                       overrides=overrides, init=init)
    seeds = list(seeds) if seeds is not None else preset.seeds(scale)
    # a grid tuned on its first seeds runs those first; the chosen values then run on all
    grid_seeds = preset.grid_seeds(seeds)
    cache: dict[tuple, RunData] = {}

    def run_all(i: int, run_seeds_: list[int]) -> dict[str, Any] | None:
        c = runs[i].config
        key = (c.dataset, c.data_dir, c.train_subset, c.test_subset, c.validation)
        if key not in cache:
            cache[key] = load_run_data(c)
        log(f"[{i + 1}/{len(runs)}] {c.name} ({runs[i].label}, x={runs[i].x}), "
            f"seeds {run_seeds_}")
        # in a tuned grid a learning rate too large to train is a result, not an error
        return run_seeds(c, run_seeds_, root / c.name.split("/")[-1], data=cache[key],
                         diverged_ok=preset.tune is not None, progress=progress, log=log)

    def recorded(i: int, run_seeds_: list[int]) -> dict[str, Any] | None:
        # a tuned preset tabulated: its runs as recorded (None: one diverged, as run_all)
        c = runs[i].config
        run_dir = root / c.name.split("/")[-1]
        if any(_status(run_dir, k) == "diverged" for k in run_seeds_):
            return None
        done = finished_seeds(run_dir, run_seeds_, c, log)
        if not done or (run_seeds_ == grid_seeds and done != run_seeds_):
            missing = [k for k in run_seeds_ if k not in done]
            raise ValueError(f"{c.name}: seeds {missing} of {preset.name!r}'s "
                             f"{preset.tune[0]} grid have not finished under {root}: "
                             "run the sweep (without --tabulate) to finish them")
        log(f"{c.name}: seeds {done} finished")
        return aggregate_seeds(run_dir, done)

    if preset.tune is not None:
        # the choice compares the grid over the same seeds, all finished; the chosen
        # runs are then tabulated over the seeds they finished (with train, all of them)
        evaluate = run_all if train else recorded
        aggregates: list[dict[str, Any] | None] = [evaluate(i, grid_seeds)
                                                   for i in range(len(runs))]
    else:
        if train:
            for i in range(len(runs)):
                run_all(i, seeds)
            # the tables are the preset's, not the selection's: a sweep run in parts
            # (--only, --x, --seeds) would otherwise leave tables of its last part only
            runs = select_runs(preset, scale=scale, data_dir=data_dir, overrides=overrides,
                               init=init)
            seeds = sorted(set(seeds) | set(preset.seeds(scale)))
        finished = [finished_seeds(root / r.folder, seeds, r.config, log)
                    for r in runs]
        for r, done in zip(runs, finished, strict=True):
            log(f"{r.config.name}: seeds {done or 'none'} finished")
        if not any(finished):
            raise ValueError(f"no finished run under {root} among the selection")
        keep = [i for i, done in enumerate(finished) if done]
        runs = [runs[i] for i in keep]
        aggregates = [aggregate_seeds(root / runs[j].folder, finished[i])
                      for j, i in enumerate(keep)]
    chosen, tuning = list(range(len(runs))), None
    if preset.tune is not None:
        chosen, selection = select_tuned(runs, aggregates, preset.metric)
        key = preset.tune[0]
        tuning = {"key": key, "grid": list(preset.tune[1]), "chosen_by": selection,
                  "tuned_on_seeds": grid_seeds,
                  "chosen": [runs[i].folder for i in chosen],
                  "diverged": [r.folder
                               for r, a in zip(runs, aggregates, strict=True) if a is None]}
        log(f"chosen by {selection} on seeds {grid_seeds}: {', '.join(tuning['chosen'])}")
        if grid_seeds != seeds:
            for i in chosen:
                aggregates[i] = evaluate(i, seeds)
                if aggregates[i] is None:
                    raise RuntimeError(
                        f"{runs[i].config.name}: the {key} chosen on seeds {grid_seeds} "
                        f"diverged on a later seed of {seeds}; see its runs' summary.json")
    trained = [i for i, a in enumerate(aggregates) if a is not None]
    rows = sweep_rows([runs[i] for i in trained], [aggregates[i] for i in trained], root)
    if preset.tune is not None:
        for i, row in zip(trained, rows, strict=True):
            row.update({"tuned_key": preset.tune[0], "tuned_value": runs[i].tuned,
                        "chosen": i in chosen})
    runs, aggregates = [runs[i] for i in chosen], [aggregates[i] for i in chosen]
    diffs = paired_differences(runs, root, seeds, preset.reference, preset.reference_side) \
        if len(seeds) > 1 else []
    atomic_write_csv(root / "results.csv", rows)
    if diffs:
        atomic_write_csv(root / "differences.csv", diffs)
    atomic_write_bytes(root / "tables.md",
                       markdown_tables(rows, diffs, x_name=preset.x_name).encode())
    # init: the start of the configurations that do not set their own (None: the default)
    atomic_write_json(root / "results.json", {"preset": preset.name, "scale": scale,
                                              "init": "constant" if init is None else init,
                                              "seeds": seeds, "rows": rows,
                                              "differences": diffs, "tuning": tuning})
    if figures:
        _figures(preset, runs, aggregates, [r for r in rows if r.get("chosen", True)], root)
    return rows


def select_tuned(runs: Sequence[PresetRun], aggregates: Sequence[dict[str, Any] | None],
                 metric: str) -> tuple[list[int], str]:
    """Per method and x, the run of a tuned preset with the best validation metric.

    The validation twin of ``metric`` (``unseen_accuracy`` → ``val_unseen_accuracy``,
    ``test_accuracy`` → ``val_accuracy``), averaged over seeds, decides; the test
    set plays no part. Ties go to the first value of the grid.

    A configuration whose aggregate is ``None`` diverged and is never chosen.

    Returns:
        The indices of the chosen runs (in ``runs`` order) and the name of the
        validation metric that chose them.

    Raises:
        ValueError: if a run has no validation metric (its configuration has no
            ``validation`` split), or every value of a method's grid diverged.
    """
    key = "val_" + metric.removeprefix("test_")
    best: dict[tuple[str, Any], tuple[float, int]] = {}
    for i, (run, agg) in enumerate(zip(runs, aggregates, strict=True)):
        if agg is None:
            continue
        m = agg["metrics"].get(key)
        if m is None:
            raise ValueError(f"{run.config.name} has no {key}: tuning chooses on a validation "
                             "split evaluated where the metric is, so its configuration needs "
                             "validation > 0 (and validate_at = 'all' for a metric over every "
                             "or the unseen conditions)")
        group = (run.label, run.x)
        if group not in best or m["mean"] > best[group][0]:
            best[group] = (m["mean"], i)
    lost = {(r.label, r.x) for r in runs} - set(best)
    if lost:
        raise ValueError(f"every value of the tuned grid diverged for {sorted(lost, key=str)}")
    return sorted(i for _, i in best.values()), key


def _figures(preset: Preset, runs: Sequence[PresetRun], aggregates: Sequence[dict],
             rows: Sequence[dict], root: Path) -> None:
    from .figures import _read_csv, plot_accuracy_by_condition, plot_curves_over_seeds, plot_sweep

    if preset.x_name is not None and len({r["x"] for r in rows}) > 1:
        plot_sweep(rows, root / "sweep.png", x_name=preset.x_name, metric=preset.metric,
                   title=f"{preset.name} ({preset.figure})")
    xs = [r.x for r in runs]
    x_is_method = _x_is_method(runs)  # then every run is drawn by condition
    # training curves (mean ± std over seeds) of every configuration
    curves = {}
    for run, agg in zip(runs, aggregates):
        name = run.folder
        curves[name] = [_read_csv(root / name / f"seed_{s}" / "metrics.csv")
                        for s in agg["seeds"]]
    # with a validation split the test set is read once: the curves are validation curves
    metric = preset.metric if runs[0].config.validation is None else \
        "val_" + preset.metric.removeprefix("test_")
    if runs[0].config.validate_at == "seen":
        # validated at the seen conditions only: the curves are the seen accuracy
        metric = "val_seen_accuracy"
    plot_curves_over_seeds(curves, root / "curves.png", metric=metric,
                           title=f"{preset.name}: {metric.replace('_', ' ')} over training")
    def has(rows_by_seed: Sequence[Sequence[Mapping[str, Any]]], key: str) -> bool:
        return any(r.get(key) not in (None, "") for rows_ in rows_by_seed for r in rows_)

    if runs[0].config.validation is not None and any(
            has(v, "val_unseen_accuracy") for v in curves.values()):
        # seen accuracy and the gap over training too
        for seed_rows in curves.values():
            for rows_ in seed_rows:
                for r in rows_:
                    seen, unseen = r.get("val_seen_accuracy"), r.get("val_unseen_accuracy")
                    r["val_gap"] = None if seen in (None, "") or unseen in (None, "") \
                        else float(seen) - float(unseen)
        for extra, name, what in (
                ("val_seen_accuracy", "curves_seen.png", "validation seen accuracy"),
                ("val_gap", "curves_gap.png", "validation gap (seen minus unseen)")):
            # configurations without unseen conditions (every angle seen) have no gap
            drawn = {k: v for k, v in curves.items() if has(v, extra)}
            plot_curves_over_seeds(drawn, root / name, metric=extra,
                                   title=f"{preset.name}: {what} over training")
    # accuracy by condition of each method at one x (the sparsest swept point, if any)
    numeric = [x for x in xs if isinstance(x, (int, float))]
    pick = min(numeric) if numeric else xs[0]
    series = {run.label + ("" if pick is None or len(set(xs)) == 1 or x_is_method
                           else f" ({run.x})"):
              agg["by_condition"] for run, agg in zip(runs, aggregates)
              if run.x == pick or x_is_method}
    task = runs[0].config.task
    plot_accuracy_by_condition(series, root / "by_condition.png",
                               periodic=task in ("rotation", "unconditioned"),
                               title=f"{preset.name}: accuracy by condition")
