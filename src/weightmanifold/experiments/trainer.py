"""The resumable trainer: one run per seed, single process or data-parallel under ``torchrun``.

A run lives in its own directory::

    runs/<name>/
        config.json                 the full resolved configuration
        metrics.csv                 one row per evaluation (epoch), overall numbers
        metrics_by_condition.csv    one row per evaluation and condition bin
        summary.json                status, final metrics, parameters, wall time,
                                    the software (versions, git commit) that ran it
        snapshots.pt                manifold networks: the first layer's basis at the
                                    start and at every evaluation (for Fig. 1c)
        checkpoints/last.pt         weights, optimiser, RNG states, data position (and,
                                    with ``patience``, the best validation epoch's weights)

Every file is written atomically. Checkpoints are taken every
``checkpoint_every`` steps and at each epoch end; they hold everything that
determines the rest of the run (weights, optimiser state, the state of the
generator that draws conditions and noise, the position in the epoch's data
order, the running loss and the metric history), so a run killed at any moment
and started again with the same command ends with exactly the metrics of an
uninterrupted run. The data order of epoch ``e`` is a permutation drawn from a
generator seeded by ``(seed, e)``, recomputed on resume. Checkpoints load with
``weights_only=True``.

With a validation split, ``patience`` chooses the epoch on it: the run stops
once validation accuracy (over every condition, or with ``patience_on = "seen"``
over the conditions training uses only) has not improved for ``patience`` epochs
(``epochs`` is the most it trains), and the test set is read once, with the
weights of the best validation epoch; ``summary.json``'s ``final`` holds that epoch's
validation metrics, those weights' test metrics and ``selected_epoch``. With
``validate_at = "seen"`` the validation split is evaluated at the seen conditions
only (its accuracy and loss over every condition and its unseen accuracy are then
empty, and patience chooses by the seen accuracy); the test set is read at every
condition.

A NaN/inf loss stops the run (status ``"diverged"`` in ``summary.json``), leaving
the last good checkpoint in place.

Under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
``DistributedDataParallel`` (gloo on CPU, nccl on GPU). Every process draws the
same global batch and conditions and trains on its slice of it; DDP averages the
gradients, so a step equals the single-process step on the global batch.
Metric preconditioning is linear in the gradient and commutes with that
all-reduce. Rank 0 evaluates and writes the files.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import weightmanifold as wm

from .archive import (
    configuration_mismatch,
    finished_summary,
    load_summary,
    refuse_training_over,
)
from .checkpoint import (
    CheckpointError,
    atomic_write_csv,
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
)
from .config import RunConfig
from .models import Classifier, build_model, count_parameters
from .provenance import software
from .runtime import RunClock
from .tasks import Task, evaluate_by_condition, make_task

__all__ = [
    "RunData",
    "Trainer",
    "TrainingDivergedError",
    "aggregate_seeds",
    "configuration_mismatch",
    "load_run_data",
    "noise_seed",
    "run_seeds",
    "train",
]

#: fields that may differ between a run and its resumption (they do not change results,
#: or they extend the run)
RESUMABLE_CHANGES = ("threads", "data_dir", "device", "checkpoint_every", "epochs", "max_steps",
                     "name")
SUBSET_SEED = 12345
VAL_SEED = 54321
_NOISE_OFFSETS = {"train": 1, "test": 2, "val": 3}


def noise_seed(seed: int, split: str) -> int:
    """The seed of the generator a run of ``seed`` draws its training conditions and the
    task's noise from (``split = "train"``), or the task's noise when it reads ``"test"``
    or ``"val"`` (reset to it at every epoch and every condition: the same draws each
    time).

    Raises:
        ValueError: for another split.

    Examples:
        >>> noise_seed(3, "train"), noise_seed(3, "test"), noise_seed(3, "val")
        (7, 8, 9)
    """
    if split not in _NOISE_OFFSETS:
        raise ValueError(f"split must be one of {', '.join(map(repr, _NOISE_OFFSETS))}, "
                         f"got {split!r}")
    return 2 * seed + _NOISE_OFFSETS[split]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


@dataclass
class RunData:
    """Float images in [0, 1] and labels of both splits, in memory."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: tuple[str, ...]
    val_x: Tensor | None = None
    val_y: Tensor | None = None

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]


def load_run_data(config: RunConfig) -> RunData:
    """Load the configured data set (and subsets) as float tensors.

    Raises:
        weightmanifold.experiments.datasets.DatasetError: for missing or corrupt files.
    """
    if config.dataset == "synthetic":
        from .synthetic import make_synthetic

        train = make_synthetic("train")
        test = make_synthetic("test")
    else:
        from .datasets import load_dataset

        train = load_dataset(config.dataset, config.data_dir, "train")
        test = load_dataset(config.dataset, config.data_dir, "test")
    val_x = val_y = None
    if config.validation is not None:
        if config.validation >= len(train):
            raise ValueError(f"validation = {config.validation} leaves nothing to train on: "
                             f"the training set holds {len(train)} images")
        # carved before any training subset, with its own seed, so the validation images
        # are the same whatever the subset and never among the images trained on
        val, train = train.split(config.validation, VAL_SEED)
        val_x, val_y = val.float(), val.labels
    gen = torch.Generator().manual_seed(SUBSET_SEED)
    if config.train_subset is not None and config.train_subset < len(train):
        train = train.subset(config.train_subset, generator=gen)
    if config.test_subset is not None and config.test_subset < len(test):
        test = test.subset(config.test_subset, generator=gen)
    return RunData(train.float(), train.labels, test.float(), test.labels, train.classes,
                   val_x, val_y)


def training_flops_per_example(model: nn.Module, task: Task, data: RunData,
                               batch: int = 128) -> float:
    """Floating-point operations of one training step (forward + backward) per example.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` (matrix
    products and convolutions, which dominate, and the per-example path's
    kernel mixing, :data:`weightmanifold.layers.FLOP_FORMULAS`; element-wise work
    is not counted) on a copy of ``model`` and a batch of training examples of the
    run's batch size with their own conditions, so the path a training batch
    takes (basis, shared or single) is what is measured. The model, its gradients
    and the run's generators are untouched.
    """
    from torch.utils.flop_counter import FlopCounterMode

    clone = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    x, s = task.train_batch(data.train_x[:batch], gen)
    y = data.train_y[:batch]
    with FlopCounterMode(display=False, custom_mapping=wm.layers.FLOP_FORMULAS) as counter:
        F.cross_entropy(clone(x, s), y).backward()
    return counter.get_total_flops() / len(y)


def _dist() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and torch.distributed.is_available():
        if not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch.distributed.init_process_group(backend)
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _make_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    lr = config.learning_rate
    if config.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=config.momentum,
                                                     weight_decay=config.weight_decay)
    elif config.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    if config.precondition and wm.manifold_parameters(model):
        opt = wm.Preconditioned(opt, model)
    return opt


def build_run(config: RunConfig, data: RunData) -> tuple[Task, Classifier]:
    """The task and the freshly initialised model of a run (weights seeded by ``config.seed``)."""
    task = make_task(config.task, **config.task_options)
    manifold = wm.topology.make_manifold(config.manifold, **config.manifold_options)
    torch.manual_seed(config.seed)
    model = build_model(config.arch, config.method, manifold, features=config.features,
                        in_channels=data.in_channels, image_size=data.image_size,
                        classes=len(data.classes), init=config.init,
                        widths=config.widths, hidden=config.hidden, rank=config.rank)
    return task, model


class Trainer:
    """Trains one configuration into one run directory, resuming what is there.

    Args:
        config: the run's configuration.
        out_dir: the run directory (created; resumed when it holds a checkpoint).
        data: pre-loaded data (loaded from ``config`` when ``None``).
        progress: show progress bars (``None``: only on a terminal).
        log: where progress messages go.
    """

    def __init__(self, config: RunConfig, out_dir: str | Path, data: RunData | None = None,
                 progress: bool | None = None, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.out = Path(out_dir)
        self.progress = progress
        self.rank, self.world = _dist()
        self.log = log if self.rank == 0 else (lambda msg: None)
        if config.batch_size % self.world:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by the "
                             f"{self.world} processes")
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = torch.device(config.device)
        self.data = data if data is not None else load_run_data(config)
        self.task, model = build_run(config, self.data)
        self.model = model.to(self.device)
        self.train_model: nn.Module = self.model
        if self.world > 1:
            self.train_model = nn.parallel.DistributedDataParallel(self.model)
        self.optimizer = _make_optimizer(config, self.train_model)
        self.gen = torch.Generator().manual_seed(noise_seed(config.seed, "train"))
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.loss_sum = 0.0
        self.loss_count = 0
        self.history: list[dict[str, Any]] = []
        #: with ``patience``: the best validation epoch so far (``epoch``, ``metric``, its
        #: history ``record`` and its ``model`` weights), checkpointed with the run
        self.best: dict[str, Any] | None = None
        self.elapsed = 0.0
        #: seconds from the start of training to the last record, every evaluation (the
        #: validation each epoch, the final test) included, summed over resumed sessions;
        #: its ``total`` is ``None`` when resumed from a checkpoint that did not keep it
        self.run_clock = RunClock(clock=time.perf_counter)  # read here: tests patch it
        self.status = "running"
        self.flops = training_flops_per_example(self.model, self.task, self.data,
                                                min(config.batch_size, len(self.data.train_x)))

    # -- paths --------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.data.train_x) // self.config.batch_size)

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "history": self.history,
            "elapsed": self.elapsed,
            "run_time": self.run_clock.total,
            "best": self.best,
        }

    def _save(self) -> None:
        self.run_clock.tick()
        if self.rank == 0:
            save_checkpoint(self.checkpoint_path, self.state())
        if self.world > 1:
            torch.distributed.barrier()

    def _check_resumable(self, saved: dict[str, Any]) -> None:
        mismatch = configuration_mismatch(saved, self.config.to_dict(),
                                          ignore=frozenset(RESUMABLE_CHANGES))
        if mismatch:
            raise CheckpointError(
                f"{self.out} holds a run with another configuration ({mismatch}); "
                "resume it with its own configuration, or choose another run name")

    def resume(self) -> bool:
        """Load the run directory's checkpoint if there is one; return whether it did.

        Raises:
            CheckpointError: for an unreadable checkpoint or one of another configuration,
                model or manifold.
        """
        if not self.checkpoint_path.exists():
            return False
        state = load_checkpoint(self.checkpoint_path)
        self._check_resumable(state["config"])
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{self.checkpoint_path} does not fit this model: {err}") \
                from err
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        for key in ("epoch", "step_in_epoch", "global_step", "loss_sum", "loss_count",
                    "history", "elapsed"):
            setattr(self, key, state[key])
        self.best = state.get("best")
        # None: a checkpoint from before it was kept
        self.run_clock.total = state.get("run_time")
        return True

    # -- the loop ------------------------------------------------------------------------------
    def _order(self, epoch: int) -> Tensor:
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.data.train_x), generator=gen)

    def _loss(self, x: Tensor, y: Tensor, s: Tensor) -> Tensor:
        loss = F.cross_entropy(self.train_model(x, s), y)
        if self.config.l2 > 0:
            norms = wm.squared_norm(self.model.net, s)  # |W(s_i)|^2, shared weights included
            loss = loss + (s.reshape(len(s), -1)[:, 0].to(norms.dtype) * self.config.l2
                           * norms).mean()
        return loss

    def _global_mean(self, loss: Tensor) -> float:
        """The loss averaged over all processes (each rank's is the mean over its shard)."""
        if self.world == 1:
            return float(loss.detach())
        t = loss.detach().clone()
        torch.distributed.all_reduce(t)
        return float(t) / self.world

    def _done(self) -> bool:
        c = self.config
        stopped = (c.patience is not None and self.best is not None
                   and self.epoch - self.best["epoch"] >= c.patience)
        return stopped or self.epoch >= c.epochs or (c.max_steps is not None
                                                     and self.global_step >= c.max_steps)

    @property
    def _patience_key(self) -> str:
        return "val_seen_accuracy" if self.config.patience_on == "seen" else "val_accuracy"

    def _track_best(self, record: dict[str, Any]) -> None:
        """With ``patience``: keep the weights of the best validation epoch (ties: the first),
        by validation accuracy over every condition or (``patience_on = "seen"``) over the
        conditions training uses."""
        if self.config.patience is None or self.step_in_epoch != 0:
            return  # only whole epochs are candidates
        metric = record[self._patience_key]
        if metric is None:  # a task evaluated at no seen condition: nothing to choose by
            raise ValueError(f"patience_on = 'seen': the task {self.task.name!r} evaluates "
                             "no seen condition to choose the epoch by; use patience_on = "
                             "'all'")
        if self.best is None or metric > self.best["metric"]:
            self.best = {"epoch": self.epoch, "metric": metric,
                         "record": dict(record),
                         "model": {k: v.detach().clone()
                                   for k, v in self.model.state_dict().items()}}

    def run(self) -> dict[str, Any]:
        """Train to the end (resuming if possible) and return the summary.

        Raises:
            TrainingDivergedError: if the loss becomes NaN/inf.
            CheckpointError: if the run directory holds an incompatible run.
        """
        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        resumed = self.resume()
        self.run_clock.start()
        if resumed and self._done():
            self.log(f"{self.out} is complete ({self.global_step} steps): not retrained")
        elif resumed:
            self.log(f"resuming {self.out} at epoch {self.epoch + 1}, step {self.global_step}")
        if self.rank == 0:
            atomic_write_json(self.out / "config.json", c.to_dict())
        if self._done() and self.history:
            self.status = "completed"
            self._write_results()
            return self.summary()
        if not resumed:
            self._snapshot("start")
        from tqdm.auto import tqdm

        disable = (not self.progress) if self.progress is not None else None
        if self.rank != 0:
            disable = True
        b, shard = c.batch_size, c.batch_size // self.world
        while not self._done():
            order = self._order(self.epoch)
            bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, disable=disable,
                       desc=f"{c.name} epoch {self.epoch + 1}/{c.epochs}", leave=False)
            self.model.train()
            t0 = time.perf_counter()
            while self.step_in_epoch < self.steps_per_epoch and not self._done():
                idx = order[self.step_in_epoch * b:(self.step_in_epoch + 1) * b]
                x, s = self.task.train_batch(self.data.train_x[idx], self.gen)
                y = self.data.train_y[idx]
                lo, hi = self.rank * shard, (self.rank + 1) * shard
                x, y, s = (t[lo:hi].to(self.device) for t in (x, y, s))
                loss = self._loss(x, y, s)
                value = self._global_mean(loss)
                if not math.isfinite(value):
                    self.status = "diverged"
                    self._write_results(message=f"loss became {value} at step "
                                        f"{self.global_step + 1}")
                    raise TrainingDivergedError(
                        f"{c.name}: the loss became {value} at step {self.global_step + 1} "
                        f"(epoch {self.epoch + 1}); the last good checkpoint "
                        f"{self.checkpoint_path} is kept. Lower the learning rate "
                        f"(now {c.learning_rate}).")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.loss_sum += value
                self.loss_count += 1
                self.step_in_epoch += 1
                self.global_step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{self.loss_sum / self.loss_count:.4f}")
                if c.checkpoint_every and self.global_step % c.checkpoint_every == 0:
                    self.elapsed += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self._save()
            bar.close()
            self.elapsed += time.perf_counter() - t0
            if self.step_in_epoch >= self.steps_per_epoch:
                self.epoch += 1
                self.step_in_epoch = 0
            self._evaluate()
            if self.step_in_epoch == 0:
                # an evaluation mid-epoch (max_steps) keeps the epoch's running loss, so a
                # continuation reports the same epoch train loss as an uninterrupted run
                self.loss_sum, self.loss_count = 0.0, 0
            if self._done():
                self.status = "completed"
            self._save()
            self._write_results()
        return self.summary()

    def _first_layer(self) -> tuple[str, nn.Module] | None:
        for name, m in self.model.net.named_modules():
            if isinstance(m, wm.layers.ManifoldOp):
                return name, m
        return None

    def _snapshot(self, label: str) -> None:
        """Append the first manifold layer's basis to ``snapshots.pt`` (rank 0)."""
        found = self._first_layer() if self.rank == 0 else None
        if found is None:
            return
        name, layer = found
        path = self.out / "snapshots.pt"
        data = load_checkpoint(path) if path.exists() else {
            "manifold": self.config.manifold, "manifold_options": self.config.manifold_options,
            "layer": name, "labels": [], "bases": []}
        if label in data["labels"]:
            return
        data["labels"].append(label)
        data["bases"].append(layer.weight.detach().cpu().clone())
        save_checkpoint(path, {k: v for k, v in data.items() if k != "version"})

    def _evaluate(self) -> None:
        record: dict[str, Any] = {
            "epoch": self.epoch, "step": self.global_step,
            "train_loss": self.loss_sum / max(1, self.loss_count),
        }
        if self.rank == 0:
            self.model.eval()
            device = self.device

            def predict(x: Tensor, s: Tensor) -> Tensor:
                with torch.no_grad():
                    return self.model(x.to(device), s.to(device)).cpu()

            def measure(x: Tensor, y: Tensor, prefix: str, seed: int,
                        conditions: str = "all") -> None:
                res = evaluate_by_condition(predict, x, y, self.task,
                                            self.config.eval_batch_size, generator=seed,
                                            conditions=conditions,
                                            ignores_s=self.model.ignores_s)
                record.update({
                    f"{prefix}accuracy": res["overall"]["accuracy"],
                    f"{prefix}loss": res["overall"]["loss"],
                    f"{prefix}seen_accuracy": res["seen"]["accuracy"] if res["seen"] else None,
                    f"{prefix}unseen_accuracy": res["unseen"]["accuracy"] if res["unseen"]
                    else None,
                    f"{prefix}by_condition": res["conditions"],
                })

            if self.data.val_x is not None:
                assert self.data.val_y is not None
                at = self.config.validate_at or "all"
                if at == "seen" and not bool(self.task.seen(self.task.eval_conditions()).any()):
                    raise ValueError(f"validate_at = 'seen': the task {self.task.name!r} "
                                     "evaluates no seen condition to validate at; use "
                                     "validate_at = 'all'")
                measure(self.data.val_x, self.data.val_y, "val_",
                        noise_seed(self.config.seed, "val"), at)
                if at == "seen":
                    # measured at the seen conditions only: nothing over every condition
                    record["val_accuracy"] = record["val_loss"] = None
                self._track_best(record)
            if self.data.val_x is None or self._done():
                # with a validation split the test set is read once, by the final evaluation:
                # with patience, of the best validation epoch's weights
                last = None
                if self.config.patience is not None and self.best is not None:
                    last = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                    self.model.load_state_dict(self.best["model"])
                    record["selected_epoch"] = self.best["epoch"]
                measure(self.data.test_x, self.data.test_y, "",
                        noise_seed(self.config.seed, "test"))
                if last is not None:
                    self.model.load_state_dict(last)
                for key in ("accuracy", "loss"):
                    record[f"test_{key}"] = record.pop(key)
            self.model.train()
            self._snapshot(f"epoch {self.epoch}" if self.step_in_epoch == 0
                           else f"step {self.global_step}")
            msg = (f"{self.config.name} epoch {self.epoch} step {self.global_step}: "
                   f"train loss {record['train_loss']:.4f}")
            for prefix, name in (("val_", "validation"), ("", "test")):
                if f"{prefix}seen_accuracy" not in record:
                    continue
                overall = record["val_accuracy" if prefix else "test_accuracy"]
                if overall is None:  # validate_at = "seen"
                    msg += (f", {name} accuracy at the seen conditions "
                            f"{100 * record[f'{prefix}seen_accuracy']:.2f}%")
                    continue
                msg += f", {name} accuracy {100 * overall:.2f}%"
                if record[f"{prefix}unseen_accuracy"] is not None:
                    msg += (f" (seen {100 * record[f'{prefix}seen_accuracy']:.2f}%, "
                            f"unseen {100 * record[f'{prefix}unseen_accuracy']:.2f}%)")
            if "selected_epoch" in record:
                msg += (f"; the test set read with epoch {record['selected_epoch']}'s weights, "
                        "the best on validation")
            self.log(msg)
        self.history.append(record)
        if self.world > 1 and self.config.patience is not None:
            # only rank 0 validates: every process must stop at the same epoch
            best = torch.tensor([-1 if self.best is None else self.best["epoch"]],
                                device=self.device)
            torch.distributed.broadcast(best, 0)
            if self.rank != 0 and int(best) >= 0:
                self.best = {"epoch": int(best)}

    # -- results --------------------------------------------------------------------------------
    def summary(self, message: str | None = None) -> dict[str, Any]:
        """The run's record: status, final metrics, configuration and cost.

        ``wall_time_s`` counts the training steps only; ``run_time_s`` the whole run
        from its first step to its last record, evaluations included (``None`` for a
        run resumed from a checkpoint that predates it), as of the last record written.
        """
        final = self.history[-1] if self.history else None
        if final is not None and "selected_epoch" in final and self.best is not None \
                and "record" in self.best:
            # the epoch chosen on validation, whole: its epoch, step, train loss and validation
            # metrics, and the test metrics its weights scored (the last record holds those);
            # epochs_completed and steps say how far training went before patience stopped it
            chosen = self.best["record"]
            final = {**final, **{k: v for k, v in chosen.items()
                                 if k.startswith("val_") or k in ("epoch", "step", "train_loss")}}
            if "train_loss" not in chosen:  # a checkpoint written before the record kept it
                final.pop("train_loss", None)
        return {
            "status": self.status,
            "message": message,
            "rank": self.rank,
            "name": self.config.name,
            "seed": self.config.seed,
            "epochs_completed": self.epoch,
            "steps": self.global_step,
            "parameters": count_parameters(self.model),
            "train_flops_per_example": self.flops,
            "wall_time_s": self.elapsed,
            "run_time_s": self.run_clock.total,
            "final": final,
            "config": self.config.to_dict(),
            "software": software(),
        }

    def _write_results(self, message: str | None = None) -> None:
        self.run_clock.tick()
        if self.rank != 0:
            return
        rows = [{k: v for k, v in r.items() if not k.endswith("by_condition")}
                for r in self.history]
        columns = ["epoch", "step", "train_loss", "test_accuracy", "test_loss",
                   "seen_accuracy", "unseen_accuracy"]
        if self.data.val_x is not None:
            columns += ["val_accuracy", "val_loss", "val_seen_accuracy", "val_unseen_accuracy"]
        if self.config.patience is not None:
            columns += ["selected_epoch"]
        atomic_write_csv(self.out / "metrics.csv", [{k: r.get(k) for k in columns}
                                                    for r in rows], columns)
        # test rows read with the chosen epoch's weights (patience) say which epoch that was
        cond_rows = [{"epoch": r["epoch"], "step": r["step"], "split": split,
                      "weights_epoch": r.get("selected_epoch") if split == "test" else None, **c}
                     for r in self.history
                     for split, key in (("val", "val_by_condition"), ("test", "by_condition"))
                     for c in r.get(key) or []]
        cond_columns = ["epoch", "step", "split", "s", "seen", "accuracy", "loss"]
        if self.config.patience is not None:
            cond_columns.insert(3, "weights_epoch")
        atomic_write_csv(self.out / "metrics_by_condition.csv",
                         [{k: r.get(k) for k in cond_columns} for r in cond_rows], cond_columns)
        atomic_write_json(self.out / "summary.json", self.summary(message))


def train(config: RunConfig, out_dir: str | Path, *,
          final: tuple[str, ...] = ("completed",), **kwargs: Any) -> dict[str, Any]:
    """Train (or resume) one run; see :class:`Trainer`.

    A run directory whose ``summary.json`` records this configuration with a
    status in ``final`` (:func:`~weightmanifold.experiments.archive.finished_summary`;
    an archived run has no checkpoint) is not trained again: its summary is
    returned. ``final=("completed", "diverged")`` also keeps a diverged run as
    its result instead of retrying it from its last good checkpoint.

    Raises:
        CheckpointError: if ``out_dir`` holds a finished run of another
            configuration and no checkpoint to continue it from (an archived
            run): it is never trained over; or see :meth:`Trainer.run`.
    """
    out = Path(out_dir)
    done = finished_summary(out, config.to_dict(), final)
    if done is not None:
        kwargs.get("log", print)(f"{out} is complete ({done.get('steps')} steps): "
                                 "not retrained")
        return done
    refuse_training_over(out, config.to_dict(), out / "checkpoints" / "last.pt")
    return Trainer(config, out_dir, **kwargs).run()


def run_seeds(config: RunConfig, seeds: Sequence[int], root: str | Path,
              data: RunData | None = None, *, diverged_ok: bool = False,
              **kwargs: Any) -> dict[str, Any] | None:
    """Run ``config`` once per seed into ``root/seed_<k>/`` (each resumable), then aggregate.

    Runs are sequential: on a 2-core CPU one run already uses both cores (see
    ``bench/seeds.py`` for the measurement against batched ensembles).

    Args:
        diverged_ok: a seed whose loss becomes NaN/inf (now, or in a recorded
            run) ends the configuration with ``None`` instead of raising
            :class:`TrainingDivergedError` (a tuned grid's too-large learning rate).

    Returns:
        The aggregate (also written to ``root/aggregate.json`` and
        ``root/aggregate_by_condition.csv``), or ``None`` for a diverged
        configuration with ``diverged_ok``.
    """
    root = Path(root)
    data = data if data is not None else load_run_data(config)
    final = ("completed", "diverged") if diverged_ok else ("completed",)
    for seed in seeds:
        try:
            done = train(config.replace(seed=seed, name=f"{config.name}/seed_{seed}"),
                         root / f"seed_{seed}", data=data, final=final, **kwargs)
        except TrainingDivergedError:
            if not diverged_ok:
                raise
            return None
        if done.get("status") == "diverged":
            return None
    return aggregate_seeds(root, seeds)


def _mean_std(values: list[float]) -> dict[str, float | int]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def aggregate_seeds(root: str | Path, seeds: Sequence[int]) -> dict[str, Any]:
    """Mean ± std over seeds of the final metrics and of every condition bin.

    With seen and unseen conditions, ``gap`` (and ``val_gap`` on the validation
    split) is seen minus unseen accuracy, taken per seed.

    Raises:
        FileNotFoundError: if a seed's run has no summary.
        ValueError: if a seed's summary cannot be read (:func:`~.archive.load_summary`).
        RuntimeError: if a seed's run has not completed.
    """

    root = Path(root)
    finals = []
    for seed in seeds:
        run_dir = root / f"seed_{seed}"
        summary = load_summary(run_dir)
        assert summary is not None  # load_summary raised where there is none
        status = summary.get("status")
        if status != "completed" or summary.get("final") is None:
            what = "has no status" if status is None else f"is {status}"
            raise RuntimeError(f"{run_dir}: the run of seed {seed} {what}")
        finals.append(summary["final"])
    metrics = {}
    for f in finals:  # the generalisation gap, seen minus unseen conditions, per seed
        for prefix in ("", "val_"):
            seen, unseen = f.get(f"{prefix}seen_accuracy"), f.get(f"{prefix}unseen_accuracy")
            f[f"{prefix}gap"] = None if seen is None or unseen is None else seen - unseen
    for key in ("train_loss", "test_accuracy", "test_loss", "seen_accuracy", "unseen_accuracy",
                "gap", "val_accuracy", "val_loss", "val_seen_accuracy", "val_unseen_accuracy",
                "val_gap"):
        values = [f[key] for f in finals if f.get(key) is not None]
        if values:
            metrics[key] = _mean_std(values)
    by_condition = []
    for k, cond in enumerate(finals[0]["by_condition"]):
        accs = [f["by_condition"][k]["accuracy"] for f in finals]
        losses = [f["by_condition"][k]["loss"] for f in finals]
        a, lo = _mean_std(accs), _mean_std(losses)
        by_condition.append({"s": cond["s"], "seen": cond["seen"], "accuracy_mean": a["mean"],
                             "accuracy_std": a["std"], "loss_mean": lo["mean"],
                             "loss_std": lo["std"], "n": a["n"]})
    out = {"seeds": list(seeds), "metrics": metrics, "by_condition": by_condition}
    atomic_write_json(root / "aggregate.json", out)
    atomic_write_csv(root / "aggregate_by_condition.csv", by_condition)
    return out
