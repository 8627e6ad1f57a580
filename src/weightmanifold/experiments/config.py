"""The configuration of one training run: :class:`RunConfig` (from code, TOML or the CLI)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["OPTIMIZERS", "ConfigError", "RunConfig"]

OPTIMIZERS = ("sgd", "adam", "adamw")
DEFAULT_LR = {"sgd": 0.01, "adam": 2e-4, "adamw": 2e-4}


class ConfigError(ValueError):
    """A configuration with an unknown key or a value of the wrong type or range."""


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass
class RunConfig:
    """Everything that determines a training run; two runs with equal configs give equal metrics.

    Every field has a ``help`` text (``RunConfig.help(name)``), used by the
    command line.
    """

    name: str = _help("name of the run; results go to runs/<name>/", default="run")
    dataset: str = _help("fashion-mnist, cifar10, cifar10-folder or synthetic",
                         default="fashion-mnist")
    data_dir: str | None = _help("directory holding the data set files "
                                 "(default: the data set's standard location)", default=None)
    train_subset: int | None = _help("train on a seeded random subset of this many images",
                                     default=None)
    test_subset: int | None = _help("evaluate on a seeded random subset of this many images",
                                    default=None)
    validation: int | None = _help(
        "hold out this many training images (seeded, disjoint from the images trained on) "
        "as a validation split: evaluated after every epoch for curves and choices, while "
        "the test set is read once, at the end of the run (default: no split; the test "
        "set is evaluated every epoch, as in the paper)", default=None)
    patience: int | None = _help(
        "choose the epoch on the validation split: stop when validation accuracy (see "
        "--patience-on) has not improved for this many epochs, and read the test set once, "
        "with the weights of the best validation epoch; epochs is then the most the run "
        "trains (needs validation; default: train every epoch and test the last)",
        default=None)
    patience_on: str | None = _help(
        "the validation accuracy patience chooses the epoch by: 'seen', over the conditions "
        "training uses only, so that the epoch choice reads no condition the run never "
        "trains on (the cpu-scale presets), or 'all' (every evaluation condition; the "
        "default, saved as None)",
        default=None)
    validate_at: str | None = _help(
        "the conditions the validation split is evaluated at every epoch: 'seen', those "
        "training uses only (the cpu-scale presets: the epoch choice reads only these, and "
        "with 4 of 36 angles seen a validation pass costs a ninth; the validation accuracy and "
        "loss over every condition are then left empty, patience needs --patience-on seen), "
        "or 'all' (every evaluation condition, for curves at unseen ones; the default, saved "
        "as None). The test set is always read at every condition",
        default=None)
    task: str = _help("conditioning task: rotation, noise or unconditioned",
                      default="rotation")
    task_options: dict[str, Any] = _help(
        "task parameters, e.g. {train_fraction = 0.25, mode = 'subset', bins = 36} for "
        "rotation, {max_noise = 0.6, eval_max = 0.9} for noise", default_factory=dict)
    arch: str = _help("network: cnn (the paper CNN), resnet18ln (LayerNorm over channels "
                      "per pixel) or resnet18ln-chw (LayerNorm over channels, height, width)",
                      default="cnn")
    method: str = _help("plain, manifold, concat, embed or film", default="manifold")
    manifold: str = _help("topology of the manifold network (and of 'basis' features): "
                          "point, line, ellipse, fourier, polynomial, bspline, bins, torus, "
                          "cylinder, sheet, sphere", default="ellipse")
    manifold_options: dict[str, Any] = _help(
        "constructor options of the manifold, e.g. {order = 2}, {n = 8, periodic = true} "
        "or {edges = [0.3]}",
        default_factory=dict)
    features: str = _help("condition features of concat/embed/film baselines: raw s or the "
                          "manifold's basis a(s)", default="raw")
    init: str | float = _help(
        "manifold initialisation: constant (every point the same network; the library's "
        "default, chosen by the init study in docs/results.md), independent (a fresh draw "
        "per basis point; the default before the study) or a number eps >= 0: the network "
        "plus eps times a zero-mean modulation over s (0 = constant; see wm.manifoldify)",
        default="constant")
    rank: int | None = _help(
        "low-rank manifold: every weight W0 + sum_k a_k(s) U_k V_k with rank-r deltas "
        "(capped at each layer's own rank); default: full rank", default=None)
    widths: list[int] | None = _help("conv channel widths (default: the paper's 32 64 128)",
                                     default=None)
    hidden: int = _help("width of the dense layer of the CNN", default=512)
    optimizer: str = _help("sgd, adam or adamw", default="sgd")
    lr: float | None = _help("learning rate (default: 0.01 for sgd, 2e-4 for adam/adamw, "
                             "the paper's)", default=None)
    momentum: float = _help("SGD momentum", default=0.9)
    weight_decay: float = _help("weight decay of the optimiser", default=0.0)
    precondition: bool = _help("metric-preconditioned gradients for manifold networks "
                               "(false: the ablation with plain gradients)", default=True)
    l2: float = _help("lambda of the s-weighted L2 penalty s*lambda*|W(s)|^2 (paper Eq. 14)",
                      default=0.0)
    epochs: int = _help("passes over the training set", default=5)
    batch_size: int = _help("global batch size (split across processes under torchrun)",
                            default=128)
    eval_batch_size: int = _help("batch size of evaluation", default=1000)
    seed: int = _help("seed of weights, data order and conditions", default=0)
    checkpoint_every: int = _help("also checkpoint every this many steps (0: at epoch ends "
                                  "only)", default=200)
    max_steps: int | None = _help("stop after this many steps in total (for quick runs)",
                                  default=None)
    threads: int | None = _help("torch CPU threads (default: torch's choice)", default=None)
    device: str = _help("cpu, cuda, or cuda:N", default="cpu")

    # -- validation ------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check types and ranges.

        Raises:
            ConfigError: naming the key and what is wrong with it.
        """
        check_types(self)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"config key 'optimizer': unknown {self.optimizer!r}; "
                              f"valid: {', '.join(OPTIMIZERS)}")
        for key in ("epochs", "batch_size", "eval_batch_size", "hidden"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key {key!r} must be >= 1, got {getattr(self, key)}")
        if isinstance(self.init, str) and self.init not in ("constant", "independent"):
            raise ConfigError(f"config key 'init': unknown {self.init!r}; valid: constant, "
                              "independent or a number eps >= 0")
        if not isinstance(self.init, str) and not (0 <= self.init < float("inf")):
            raise ConfigError(f"config key 'init' must be a number >= 0, got {self.init}")
        if self.patience_on not in (None, "all", "seen"):
            raise ConfigError(f"config key 'patience_on': unknown {self.patience_on!r}; "
                              "valid: seen or all")
        if self.patience_on == "seen" and self.patience is None:
            raise ConfigError("config key 'patience_on' says what patience chooses the epoch "
                              "by: set 'patience' too")
        if self.patience_on == "all":
            self.patience_on = None  # the default, spelled one way in saved configurations
        if self.validate_at not in (None, "all", "seen"):
            raise ConfigError(f"config key 'validate_at': unknown {self.validate_at!r}; "
                              "valid: seen or all")
        if self.validate_at == "seen" and self.validation is None:
            raise ConfigError("config key 'validate_at' says where the validation split is "
                              "evaluated: set 'validation' too")
        if self.validate_at == "all":
            self.validate_at = None  # the default, spelled one way in saved configurations
        if self.validate_at == "seen" and self.patience is not None \
                and self.patience_on != "seen":
            raise ConfigError("config key 'validate_at' = 'seen' leaves no accuracy over every "
                              "condition for patience to choose by: set patience_on = 'seen'")
        if self.patience is not None and self.validation is None:
            raise ConfigError("config key 'patience' chooses the epoch on the validation "
                              "split: set 'validation' too")
        for key in ("train_subset", "test_subset", "validation", "rank", "max_steps",
                    "threads", "patience"):
            v = getattr(self, key)
            if v is not None and v < 1:
                raise ConfigError(f"config key {key!r} must be >= 1, got {v}")
        if self.checkpoint_every < 0:
            raise ConfigError("config key 'checkpoint_every' must be >= 0")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"config key 'lr' must be > 0, got {self.lr}")
        if self.l2 < 0 or self.weight_decay < 0:
            raise ConfigError("config keys 'l2' and 'weight_decay' must be >= 0")

    @property
    def learning_rate(self) -> float:
        """``lr``, or the paper's default for the optimiser."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    # -- conversion ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a dict, refusing unknown keys.

        Raises:
            ConfigError: for an unknown key (listing the valid ones) or a bad value.
        """
        check_keys(cls, data)
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> RunConfig:
        """Read a TOML file (top-level keys are the fields), then apply ``overrides``.

        Raises:
            ConfigError: for a malformed file, unknown key or bad value (naming the file).
        """
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from err
        data.update(overrides)
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)


def check_types(config: Any) -> None:
    """Check every field of the dataclass ``config`` against its annotation, turning an
    integer given for a float field into a float (TOML's 1 for 1.0).

    Raises:
        ConfigError: naming the key, the expected type and the value.
    """
    for f in fields(config):
        value = getattr(config, f.name)
        if str(f.type).startswith("float") and isinstance(value, int) \
                and not isinstance(value, bool):
            value = float(value)
            setattr(config, f.name, value)
        if not _type_ok(value, f.type):
            raise ConfigError(f"config key {f.name!r} must be {f.type}, got {value!r} "
                              f"({type(value).__name__})")


def check_keys(cls: type, data: dict[str, Any]) -> None:
    """Refuse keys of ``data`` that are not fields of the dataclass ``cls``.

    Raises:
        ConfigError: listing the unknown keys and the valid ones.
    """
    names = [f.name for f in fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid: {', '.join(names)}")


def _type_ok(value: Any, annotation: str | type) -> bool:
    text = str(annotation)
    if " | " in text and not text.endswith("| None"):
        return any(_type_ok(value, part) for part in text.split(" | "))
    if value is None:
        return "None" in text
    if isinstance(value, bool):
        return text.startswith("bool")
    if isinstance(value, int):
        return text.startswith(("int", "float"))
    if isinstance(value, float):
        return text.startswith("float")
    if isinstance(value, str):
        return text.startswith("str")
    if isinstance(value, dict):
        return text.startswith("dict")
    if isinstance(value, list):
        return text.startswith("list") and all(isinstance(v, int) and not isinstance(v, bool)
                                               for v in value)
    return False
