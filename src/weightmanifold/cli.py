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
        else:
            caster = int if kind.startswith("int") else float if kind.startswith("float") else str
            group.add_argument(flag, type=caster, default=None, help=text)


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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", type=str, default=None,
                   help="TOML file with run configuration keys (options below override it)")
    p.add_argument("--seeds", type=parse_seeds, default=None,
                   help="run several seeds, e.g. 0..19 or 0,1,2, and aggregate mean ± std")
    p.add_argument("--runs-dir", type=str, default="runs", help="where run directories go")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: only on a terminal)")
    _add_config_options(p)
    p.set_defaults(func=_cmd_train)
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
