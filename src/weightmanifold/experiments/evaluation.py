"""Evaluating a finished (or running) run's checkpoint at chosen conditions."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError, atomic_write_csv, load_checkpoint
from .config import RunConfig
from .tasks import evaluate_by_condition
from .trainer import build_run, load_run_data, noise_seed

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(run_dir: str | Path, s_values: Sequence[float], *,
                        split_size: int | None = None, batch_size: int | None = None,
                        seed: int | None = None, last: bool = False,
                        ) -> tuple[list[dict[str, Any]], Path]:
    """Test accuracy and loss of a run's weights at each condition in ``s_values``.

    The weights are the ones the run reports: for a run with ``patience``, those
    of the epoch chosen on validation (kept in the checkpoint as ``best``; for a
    run still training, the best so far), else the last. The test images are
    transformed by the run's task at each ``s`` (noise drawn from a generator
    seeded by ``seed``, the same for every ``s``). The numbers are those of
    :func:`~.tasks.evaluate_by_condition`, the trainer's own evaluation, always
    on the CPU: for a run trained on the CPU, at its evaluation conditions, with
    its own test subset, the weights it reports and the defaults, they repeat
    the test rows of its summary exactly (a GPU run's agree to rounding).

    Args:
        run_dir: a run directory with ``config.json`` and ``checkpoints/last.pt``.
        s_values: the conditions.
        split_size: evaluate on this many test images (default: the run's subset).
        batch_size: images per forward pass (default: the run's ``eval_batch_size``).
        seed: seed of the task's noise (default: the one the run's test read used,
            :func:`~.trainer.noise_seed`).
        last: evaluate the last weights even where the run chose an epoch on
            validation.

    Returns:
        The rows ``{"s", "accuracy", "loss", "seen", "weights_epoch",
        "weights_step"}`` (the epochs completed and the optimiser steps taken by
        the weights read: a run stopped by ``max_steps`` mid-epoch has more steps
        than its epochs say) and the path of the CSV they were written to
        (``run_dir/evaluation.csv``).

    Raises:
        FileNotFoundError: if the directory holds no run.
        ValueError: if ``s_values`` is empty or holds a value that is not a finite
            number.
        CheckpointError: for an unusable checkpoint.
    """
    run_dir = Path(run_dir)
    config_path, ckpt = run_dir / "config.json", run_dir / "checkpoints" / "last.pt"
    for path in (config_path, ckpt):
        if not path.exists():
            raise FileNotFoundError(f"{run_dir} is not a run directory: {path.name} is missing")
    if not s_values:
        raise ValueError("give at least one condition s to evaluate at")
    if not all(math.isfinite(v) for v in s_values):
        raise ValueError(f"each condition s must be a finite number, got {list(s_values)}")
    with open(config_path) as f:
        config = RunConfig.from_dict(json.load(f))
    if split_size is not None:
        config = config.replace(test_subset=split_size)
    data = load_run_data(config)
    task, model = build_run(config, data)
    state = load_checkpoint(ckpt)
    best = state.get("best")
    if not last and isinstance(best, dict) and "model" in best:
        weights, weights_epoch = best["model"], int(best["epoch"])
        weights_step = int(best["record"]["step"]) if "record" in best else None
    else:
        weights, weights_epoch = state["model"], int(state["epoch"])
        weights_step = int(state["global_step"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{ckpt} does not fit the run's model: {err}") from err
    model.eval()
    if batch_size is None:
        batch_size = config.eval_batch_size
    if seed is None:
        seed = noise_seed(config.seed, "test")
    res = evaluate_by_condition(model, data.test_x, data.test_y, task, batch_size,
                                generator=seed, ignores_s=model.ignores_s, at=s_values)
    rows = [{**r, "weights_epoch": weights_epoch, "weights_step": weights_step}
            for r in res["conditions"]]
    out = run_dir / "evaluation.csv"
    atomic_write_csv(out, rows, ["s", "accuracy", "loss", "seen", "weights_epoch",
                                 "weights_step"])
    return rows, out
