"""The ``weightmanifold`` command line (also ``python -m weightmanifold``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from .experiments.config import ConfigError, RunConfig, tomllib

__all__ = ["main", "parse_seeds"]


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"0..19"`` (inclusive range), ``"0,3,7"`` or ``"5"``.

    Raises:
        argparse.ArgumentTypeError: for anything else.
    """
    try:
        seeds: list[int] = []
        for part in text.split(","):
            if ".." in part:
                lo, hi = part.split("..")
                seeds += list(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"seeds must look like 0..19, 0,3,7 or 5; got {text!r}") from err
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds {text!r} must be distinct and >= 0")
    return seeds


def _parse_init(text: str) -> str | float:
    """A manifold initialisation: ``constant``, ``independent`` or a number ``eps >= 0``.

    Raises:
        argparse.ArgumentTypeError: for anything else.
    """
    if text in ("constant", "independent"):
        return text
    try:
        eps = float(text)
    except ValueError:
        eps = -1.0
    if not 0 <= eps < float("inf"):
        raise argparse.ArgumentTypeError(
            f"init must be constant, independent or a number eps >= 0; got {text!r}")
    return eps


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs, values parsed as TOML (``0.25``, ``true``, ``'arc'``, bare words)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise argparse.ArgumentTypeError(f"expected key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value  # a bare word: a string
    return out


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "run configuration (each overrides the --config file; defaults in brackets)")
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        text = f"{f.metadata['help']} [{default}]"
        kind = str(f.type)
        if kind.startswith("bool"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=text)
        elif kind.startswith("dict"):
            group.add_argument(flag, nargs="+", metavar="KEY=VALUE", default=None,
                               help=text + "; given as key=value pairs")
        elif kind.startswith("list"):
            group.add_argument(flag, nargs="+", type=int, default=None, help=text)
        elif kind == "str | float":
            group.add_argument(flag, type=_number_or_word, default=None, help=text)
        else:
            caster = int if kind.startswith("int") else float if kind.startswith("float") else str
            group.add_argument(flag, type=caster, default=None, help=text)


def _number_or_word(text: str) -> str | float:
    """``--init 0.1`` is the number 0.1, ``--init constant`` the word."""
    try:
        return float(text)
    except ValueError:
        return text


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run configuration: the ``--config`` TOML file (if any) overridden by options."""
    overrides: dict[str, Any] = {}
    for f in fields(RunConfig):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        overrides[f.name] = _options(value) if str(f.type).startswith("dict") else value
    if args.config:
        return RunConfig.from_toml(args.config, **overrides)
    return RunConfig.from_dict(overrides)


def _cmd_train(args: argparse.Namespace) -> int:
    from .experiments.trainer import TrainingDivergedError, run_seeds, train

    config = config_from_args(args)
    _tune_malloc(args)
    out = Path(args.runs_dir) / config.name
    progress = None if args.progress is None else args.progress
    try:
        if args.seeds:
            agg = run_seeds(config, args.seeds, out, progress=progress)
            for key, v in agg["metrics"].items():
                print(f"{key}: {v['mean']:.4f} ± {v['std']:.4f} (n={v['n']})")
            print(f"aggregate written to {out / 'aggregate.json'}")
        else:
            summary = train(config, out, progress=progress)
            final = summary["final"]
            if summary["rank"] == 0:
                    print(f"{config.name}: {summary['status']}, test accuracy "
                      f"{100 * final['test_accuracy']:.2f}% — results in {out}")
    except TrainingDivergedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .experiments.presets import get_preset
    from .experiments.sweep import run_sweep

    if args.preset == "diffusion":
        return _sweep_diffusion(args)
    preset = get_preset(args.preset)
    overrides = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.threads is not None:
        overrides["threads"] = args.threads
    root = Path(args.runs_dir) / preset.name
    if args.plan:
        from .experiments.plan import format_plan, sweep_plan

        plan = sweep_plan(preset, root, scale=args.scale, seeds=args.seeds, labels=args.only,
                          xs=args.x, data_dir=args.data_dir, overrides=overrides,
                          init=args.init)
        print(f"{preset.name} at --scale {args.scale}, under {root}:")
        print(format_plan(plan, tuned=preset.tune[0] if preset.tune else None))
        return 0
    _tune_malloc(args)
    rows = run_sweep(preset, root, scale=args.scale, seeds=args.seeds, labels=args.only,
                     xs=args.x, data_dir=args.data_dir, overrides=overrides, init=args.init,
                     progress=args.progress, train=not args.tabulate)
    _print_table(rows)
    print(f"results in {root / 'results.csv'}")
    return 0


def _sweep_diffusion(args: argparse.Namespace) -> int:
    from .experiments.diffusion_sweep import run_diffusion_sweep

    if args.scale == "quick":
        print("error: --scale quick does not apply to the diffusion preset (its scales: cpu, "
              "paper)", file=sys.stderr)
        return 2
    if args.init is not None:
        print("error: --init does not apply to the diffusion preset (its methods start "
              "constant, as the library does)", file=sys.stderr)
        return 2
    for flag, value in (("--x", args.x), ("--epochs", args.epochs)):
        if value is not None:
            print(f"error: {flag} does not apply to the diffusion preset (it trains for a "
                  "number of steps; use --only to pick methods)", file=sys.stderr)
            return 2
    root = Path(args.runs_dir) / "diffusion"
    if args.plan:
        from .experiments.plan import diffusion_plan, format_plan

        placement = {k: v for k, v in (("data_dir", args.data_dir), ("threads", args.threads))
                     if v is not None}
        plan = diffusion_plan(root, scale=args.scale, seeds=args.seeds, labels=args.only,
                              overrides=placement)
        print(f"diffusion at --scale {args.scale}, under {root}:")
        print(format_plan(plan, later="diffusion"))
        return 0
    if args.tabulate:
        print("error: --tabulate does not apply to the diffusion preset (its sweep already "
              "tabulates only the seeds each method ran)", file=sys.stderr)
        return 2
    _tune_malloc(args)
    rows = run_diffusion_sweep(root, scale=args.scale, seeds=args.seeds, labels=args.only,
                               data_dir=args.data_dir, threads=args.threads,
                               progress=args.progress)
    print(f"{'method':<16}{'eps-MSE':>16}{'Frechet':>16}{'balance':>9}{'n':>4}")
    for r in rows:
        std = r.get("loss_std")
        print(f"{r['label']:<16}{r['loss_mean']:>9.4f} ± {std or 0:.4f}"
              f"{r.get('frechet_mean') or float('nan'):>16.2f}"
              f"{r.get('class_balance_mean') or float('nan'):>9.3f}{r['n']:>4}")
    print(f"results in {root / 'results.csv'}")
    return 0


def _fmt(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{100 * mean:5.1f} ± {100 * (std or 0):4.1f}"


def _print_table(rows: Sequence[dict[str, Any]]) -> None:
    print(f"{'configuration':<28}{'all angles/levels':>20}{'seen':>16}{'unseen':>16}{'n':>4}")
    for r in rows:
        print(f"{r['name']:<28}{_fmt(r['test_accuracy_mean'], r['test_accuracy_std']):>20}"
              f"{_fmt(r['seen_accuracy_mean'], r['seen_accuracy_std']):>16}"
              f"{_fmt(r['unseen_accuracy_mean'], r['unseen_accuracy_std']):>16}{r['n']:>4}")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .experiments.evaluation import evaluate_checkpoint

    rows, path = evaluate_checkpoint(args.run_dir, args.s, split_size=args.test_subset,
                                     last=args.last)
    print(f"weights of epoch {rows[0]['weights_epoch']} (step {rows[0]['weights_step']})")
    print(f"{'s':>8}{'accuracy':>10}{'loss':>9}{'seen':>6}")
    for r in rows:
        print(f"{r['s']:>8.4f}{100 * r['accuracy']:>9.2f}%{r['loss']:>9.4f}{r['seen']!s:>6}")
    print(f"written to {path}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .experiments.figures import plot_run

    for path in plot_run(args.run_dir):
        print(path)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .experiments.demo import run_demo

    _tune_malloc(args)
    run_demo(Path(args.runs_dir) / "demo", data_dir=args.data_dir, quick=args.quick,
             progress=args.progress)
    return 0


def _cmd_archive(args: argparse.Namespace) -> int:
    from .experiments.archive import archive_sweep

    left_out = archive_sweep(args.sweep_dir, args.dest, max_bytes=args.max_bytes)
    print(f"archived {args.sweep_dir} into {args.dest}")
    for rel, reason in left_out:
        why = f"over {args.max_bytes} bytes" if reason == "too large" else \
            "a run not finished: archive it once it is"
        print(f"left out ({why}): {rel}", file=sys.stderr)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import json

    from .experiments.compare import compare_runs, format_comparison

    rows = compare_runs(args.a, args.b, args.metric)
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "rows": rows}, indent=1))
    else:
        print(format_comparison(rows, args.a, args.b))
    return 0


def _add_run_options(p: argparse.ArgumentParser, runs_dir_help: str) -> None:
    """Options shared by the commands that train."""
    p.add_argument("--runs-dir", type=str, default="runs", help=runs_dir_help)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: only on a terminal)")
    p.add_argument("--malloc-tuning", action=argparse.BooleanOptionalAction, default=True,
                   help="keep freed memory in the process instead of returning it to the OS "
                        "every step (glibc; 10-20%% faster CPU steps, resident memory stays "
                        "at its peak)")


def _tune_malloc(args: argparse.Namespace) -> None:
    if args.malloc_tuning:
        from .experiments.runtime import tune_malloc

        tune_malloc()


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults in help, except ``None``: an unset option's help says what
    happens then (``[5]`` for a configuration key, ``default: only on a terminal``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weightmanifold",
        description="Condition a network by moving its weights along a learned manifold: "
                    "train and evaluate manifold networks and their baselines.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "train", help="train one configuration (one seed, or several with --seeds)",
        description="Train one configuration into runs/<name>/ (with --seeds: "
                    "runs/<name>/seed_<k>/ and an aggregate). An existing run directory "
                    "is resumed from its last checkpoint, never overwritten.",
        formatter_class=_DefaultsHelp)
    p.add_argument("--config", type=str, default=None,
                   help="TOML file with run configuration keys (options below override it)")
    p.add_argument("--seeds", type=parse_seeds, default=None,
                   help="run several seeds, e.g. 0..19 or 0,1,2, and aggregate mean ± std")
    _add_run_options(p, "where run directories go")
    _add_config_options(p)
    p.set_defaults(func=_cmd_train)

    from .experiments.presets import PRESETS, SCALES

    p = sub.add_parser(
        "sweep", help="run a paper experiment (preset) over its configurations and seeds",
        description="Run every configuration of a preset for every seed into "
                    "runs/<preset>/, then write results.csv/json and figures. Presets: "
                    + "; ".join(f"{k} ({v.figure}): {v.description}" for k, v in PRESETS.items())
                    + "; diffusion (-): DDPM denoisers (diffusers UNet2DModel) conditioned on "
                      "the timestep by its embedding, by weight manifolds over s = t/T (line, "
                      "quadratic, B-splines n = 4 and 8, experts, low rank) or both, with a "
                      "width-matched twin: held-out loss per t-bucket, Frechet distance in a "
                      "cached classifier's features, class balance (needs the extras hf and "
                      "diffusion)"
                    + ". Interrupted sweeps resume. The tables and figures cover every "
                      "finished run of the preset (over its seeds and --seeds), also after a "
                      "sweep of part of it (--only, --x, --seeds); a tuned preset tabulates "
                      "the grid it ran.",
        formatter_class=_DefaultsHelp)
    p.add_argument("preset", choices=[*PRESETS, "diffusion"], metavar="PRESET",
                   help=f"one of: {', '.join(PRESETS)}, diffusion")
    p.add_argument("--scale", choices=SCALES, default="cpu",
                   help="cpu: Fashion-MNIST, 3 seeds, where the networks have learned: the "
                        "full training set less a 5 000-image validation split, up to 10 "
                        "epochs with each run's epoch chosen on validation (patience 2, by the "
                        "accuracy at the seen conditions, the only ones validated), the "
                        "test set read once, at every condition, with that epoch's weights; "
                        "init and preconditioning-tuned a fixed 10 epochs, "
                        "unconditioned-converged(-tuned) 15 and unconditioned-tuned 10 on "
                        "10 000 "
                        "images (whole curves, validated at every condition); diffusion: "
                        "16 x 16, 1500 steps. quick: the first "
                        "results' budget, a 10 000-image subset, 1 000 test images, 3 epochs: "
                        "every network still learning, a smoke test (with --init independent "
                        "it reproduces the results made before). paper: CIFAR-10, 20 seeds "
                        "(diffusion: 3 seeds, 200k steps, a GPU budget)")
    p.add_argument("--seeds", type=parse_seeds, default=None,
                   help="override the preset's seeds, e.g. 0..4")
    p.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                   help="run only these methods (labels), e.g. ellipse concat")
    p.add_argument("--x", nargs="+", default=None, metavar="VALUE",
                   help="run only these values of the swept variable, e.g. --x 0.1 0.25")
    p.add_argument("--epochs", type=int, default=None,
                   help="override the epochs (default: the preset's at --scale)")
    p.add_argument("--init", type=_parse_init, default=None, metavar="INIT",
                   help="start of the manifold networks that do not set their own (the init "
                        "study's rows and the experts set theirs): constant (the default, "
                        "chosen by the init study, docs/results.md), independent (the "
                        "presets' start before it: reproduces the quick-scale results that predate "
                        "it; their archives hold tables and figures, not run records, so "
                        "they retrain) or a modulation scale eps >= 0")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's, one per core)")
    p.add_argument("--data-dir", type=str, default=None,
                   help="directory with the data set files (default: standard location)")
    p.add_argument("--tabulate", action="store_true",
                   help="train nothing: tabulate and plot the finished runs of the selection, "
                        "each configuration over the seeds it finished and each paired "
                        "difference over the seeds both runs finished (a sweep in progress); "
                        "a tuned preset chooses from its grid as recorded, which must have "
                        "finished on the seeds it tunes on")
    p.add_argument("--plan", action="store_true",
                   help="train nothing, write nothing: list each configuration of the "
                        "selection with the seeds finished, diverged (in a tuned grid), to "
                        "resume, to train and refused (what the sweep would stop at: a "
                        "finished run or a checkpoint of another configuration, an "
                        "unreadable summary), as the trainer decides, and estimate the "
                        "time left from the wall times of the runs already finished (whole "
                        "runs with their evaluations where every seed recorded them, else "
                        "the training)")
    _add_run_options(p, "where sweeps go")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser(
        "evaluate", help="evaluate a run's checkpoint at chosen conditions s",
        description="Load runs/<name>/checkpoints/last.pt (weights_only) and evaluate the "
                    "run's weights on the test set at each given s, transformed by the run's "
                    "task: for a run with --patience those of the epoch chosen on validation "
                    "(the weights its summary reports), else the last. The task's noise and "
                    "the batch size are those of the run's own test read, so for a run trained "
                    "on the CPU the numbers at its conditions repeat its summary's.",
        formatter_class=_DefaultsHelp)
    p.add_argument("run_dir", help="a run directory (with config.json and checkpoints/)")
    p.add_argument("--s", type=float, nargs="+", required=True,
                   help="conditions to evaluate at, e.g. 0 0.125 0.25")
    p.add_argument("--test-subset", type=int, default=None,
                   help="evaluate on this many test images (default: the run's setting)")
    p.add_argument("--last", action="store_true",
                   help="evaluate the last epoch's weights, not the epoch a --patience run "
                        "chose on validation")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "plot", help="draw the figures of a finished run, multi-seed run or sweep",
        description="Write PNG figures (with the CSV of their numbers) into the directory: "
                    "training curves and accuracy by condition.",
        formatter_class=_DefaultsHelp)
    p.add_argument("run_dir", help="a run directory, a multi-seed root or a sweep directory")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser(
        "archive", help="copy a sweep's tables, figures and finished runs' records (no "
                        "checkpoints) to a directory that is committed",
        description="Copy every file of SWEEP_DIR to the same place under DEST except "
                    "checkpoints, files over --max-bytes and runs not finished (still "
                    "training or killed: archive them once done): results, figures, and each "
                    "finished run's summary.json, config.json and metric tables. A sweep "
                    "run again with DEST copied back (mkdir -p runs/<preset> && cp -r DEST/. "
                    "runs/<preset>/) retrains no finished run: a run counts as finished "
                    "when its summary.json is completed with the same configuration, "
                    "whatever its --threads, --data-dir and checkpoint_every.",
        formatter_class=_DefaultsHelp)
    p.add_argument("sweep_dir", help="the sweep directory, e.g. runs/diffusion")
    p.add_argument("dest", help="where the records go, e.g. docs/results/diffusion")
    p.add_argument("--max-bytes", type=int, default=1 << 20,
                   help="leave out (and name) files larger than this")
    p.set_defaults(func=_cmd_archive)

    p = sub.add_parser(
        "compare", help="one run minus another, paired by seed, with 95 %% intervals",
        description="A minus B for every seed both finished, the mean and a 95 % Student-t "
                    "interval, per metric of the runs' summary.json (accuracies in "
                    "percentage points). A and B are runs of several seeds (seed_<k>/ "
                    "under them, e.g. runs/init/ellipse-eps0-f0.25) or single runs, "
                    "finished or archived; runs that see different data at a seed "
                    "(dataset, subsets, validation split, batch size, task) are refused.")
    p.add_argument("a", metavar="A",
                   help="the run to subtract from, e.g. runs/rotation-sparsity/ellipse-f0.1")
    p.add_argument("b", metavar="B",
                   help="the run subtracted, e.g. runs/rotation-sparsity/plain-f0.1")
    p.add_argument("--metric", nargs="+", default=None,
                   help="metrics of the summaries' final entry, e.g. unseen_accuracy "
                        "seen_accuracy (default: every number measured on every seed)")
    p.add_argument("--json", action="store_true",
                   help="print the rows as JSON instead of a table")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "demo", help="rotated Fashion-MNIST with sparse angles: ellipse vs baselines",
        description="Train the ellipse manifold network and the plain, concat and embed "
                    "baselines on Fashion-MNIST rotated by angles of which only a quarter are "
                    "seen in training, then print seen/unseen accuracy and write a polar "
                    "plot to runs/demo/. About 2 minutes on 2 CPU cores.",
        formatter_class=_DefaultsHelp)
    p.add_argument("--data-dir", type=str, default=None,
                   help="Fashion-MNIST IDX directory (default: /usr/share/datasets/"
                        "fashion-mnist, from the Debian package dataset-fashion-mnist)")
    p.add_argument("--quick", action="store_true",
                   help="a one-minute version (smaller subsets, one epoch)")
    _add_run_options(p, "where the demo's runs go")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as err:
        parser.exit(2, f"weightmanifold: error: {err}\n")
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"weightmanifold: error: {err}\n")
    return 0
