"""What validation costs in an epoch of the cpu-scale rotation presets, as ratios in one run.

An epoch of ``--scale cpu`` trains on 55 000 Fashion-MNIST images (429 steps at batch
128) and then evaluates the 5 000-image validation split at the conditions
``validate_at`` names: all 36 angles, or the seen ones only (4 at a training
fraction of 0.1, 9 at 0.25). This times, interleaved round-robin after warm-up in
this one process, for the plain paper CNN and the ellipse manifold network on
1×28×28 inputs (the trainer's models, ``build_model``):

* ``train``: one SGD step (momentum 0.9; the ellipse preconditioned, one angle per
  example), scaled to the 429 steps of an epoch;
* ``validate``: one evaluation batch of 1 000 images rotated to one angle and
  classified (eval mode, no gradients, as ``evaluate_by_condition`` runs it),
  scaled to 5 000 images at 36, 9 or 4 angles.

It prints each part in seconds and the share of the epoch that validation takes
with ``validate_at = "all"`` and ``"seen"``. Only the ratios carry over to another
machine or a busy one.

Run: ``python bench/epoch_cost.py [--rounds 5] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import weightmanifold as wm
from weightmanifold.experiments.models import build_model
from weightmanifold.experiments.runtime import tune_malloc
from weightmanifold.experiments.tasks import RotationTask

STEPS, VAL_IMAGES, ANGLES = 429, 5000, 36
SEEN = {"0.1": 4, "0.25": 9}


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed repetitions of each part")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_malloc()
    torch.manual_seed(0)
    x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
    s = torch.rand(128)
    xv, sv = torch.rand(1000, 1, 28, 28), torch.full((1000,), 0.3)
    task = RotationTask(train_fraction=0.1, bins=ANGLES)
    parts: dict[str, Callable[[], None]] = {}
    for name in ("plain", "ellipse"):
        manifold = wm.Ellipse() if name == "ellipse" else None
        model = build_model("cnn", "manifold" if manifold else "plain", manifold,
                            in_channels=1, image_size=28)
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        if manifold is not None:
            opt = wm.Preconditioned(opt, model)

        def step(model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            model.train()
            opt.zero_grad()
            F.cross_entropy(model(x, s), y).backward()
            opt.step()

        def validate(model: torch.nn.Module = model) -> None:
            model.eval()
            with torch.no_grad():
                model(task.apply(xv, sv, torch.Generator()), sv)

        parts[f"{name} train"], parts[f"{name} validate"] = step, validate
    times: dict[str, list[float]] = {k: [] for k in parts}
    for fn in parts.values():  # warm-up
        fn()
        fn()
    for _ in range(args.rounds):
        for key, fn in parts.items():
            times[key].append(_timed(fn))
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds (medians)")
    print("| network | train epoch (s) | validation at 36 angles (s) | share of the epoch: all "
          "| seen, 0.1 (4 angles) | seen, 0.25 (9 angles) |")
    print("|---|---|---|---|---|---|")
    for name in ("plain", "ellipse"):
        train = STEPS * statistics.median(times[f"{name} train"])
        per_angle = VAL_IMAGES / 1000 * statistics.median(times[f"{name} validate"])
        shares = [k * per_angle / (train + k * per_angle)
                  for k in (ANGLES, SEEN["0.1"], SEEN["0.25"])]
        print(f"| {name} | {train:.1f} | {ANGLES * per_angle:.1f} | "
              + " | ".join(f"{100 * v:.0f} %" for v in shares) + " |")


if __name__ == "__main__":
    main()
