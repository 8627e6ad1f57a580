"""Time a training step of the diffusion preset's denoiser, timestep embedding vs splines over t.

The CPU-scale denoisers of ``weightmanifold sweep diffusion`` (diffusers
``UNet2DModel``, widths 16/32/32, 16 × 16 one-channel images, batch 64, every
example at its own timestep; each method's configuration taken from the preset)
and the trainer's whole step
(``weightmanifold.experiments.diffusion.train_denoiser``): forward, ε-prediction
loss, backward, the metric preconditioning, gradient-norm clipping, AdamW and
the EMA update. Variants, interleaved round-robin after warm-up in this one
process, each reported as its median step time and its ratio to ``bspline4``:

* the preset's methods by their labels: ``embedding`` (the UNet's own
  sinusoidal timestep embedding, the convention), ``embedding-wide``, ``line``,
  ``quadratic``, ``bspline4``, ``bspline8``, ``experts`` (``wm.Bins``, 4 ranges
  of t), ``bspline4-r8``, ``both``;
* ``bspline12``: the weights on a clamped cubic B-spline over ``s = t / T``
  with ``n = 12`` basis points, against ``bspline4`` (at ``n = 4`` every
  coefficient can be non-zero: the basis path). At ``n = 12`` the batch is
  sorted by ``t`` as the trainer sorts it, and every layer runs on the ``p + 1
  = 4`` non-zero coefficients of each example's window (or a few merged
  windows) without gathering activations;
* ``bspline12-unsorted``: the same on the batch as drawn;
* ``bspline12-windows``: the convolutions kept off the per-example path (each
  example's kernel mixed from its window, one grouped convolution): per window
  or merged windows only, as before that path existed;
* ``bspline12-basis``: all 12 basis tensors for every example (no windows).

Run: ``python bench/diffusion_step.py`` (``--rounds`` for more repetitions). The
ratio ``bspline12 / bspline4`` is the target of issue 14 (≤ 1.2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import weightmanifold as wm
from weightmanifold.experiments.diffusion import (
    _EMA,
    DiffusionConfig,
    _optimizer,
    _schedulers,
    add_noise,
    build_denoiser,
)
from weightmanifold.experiments.runtime import tune_malloc
from weightmanifold.layers.conditioning import manifolds_of

#: the preset's methods at CPU scale, plus the 12-point spline of issue 14's target
PRESET_VARIANTS = ("embedding", "embedding-wide", "line", "quadratic", "bspline4", "bspline8",
                   "experts", "bspline4-r8", "both")
VARIANTS = (*PRESET_VARIANTS, "bspline12", "bspline12-unsorted", "bspline12-windows",
            "bspline12-basis")
#: the preset's CPU scale (weightmanifold.experiments.diffusion_sweep)
CPU_SCALE = {"image_size": 16, "batch_size": 64}


def variant_config(name: str) -> DiffusionConfig:
    """The preset's configuration of method ``name`` at CPU scale (``bspline12*``: the
    ``bspline4`` configuration with ``n = 12``)."""
    from weightmanifold.experiments.diffusion_sweep import methods

    configs = methods("cpu")
    if name.startswith("bspline12"):
        base = configs["bspline4"]
        return base.replace(manifold_options={**base.manifold_options, "n": 12})
    return configs[name]


def make_step(name: str, batch: int, seed: int = 0) -> Callable[[], None]:
    """One training step of variant ``name`` on a fixed batch (weights seeded by ``seed``)."""
    config = variant_config(name).replace(seed=seed)
    size = CPU_SCALE["image_size"]
    model = build_denoiser(config, 1, size)
    opt = _optimizer(config, model)
    ema = _EMA(model, config.ema_decay)
    ddpm, _ = _schedulers(config.timesteps)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(batch, 1, size, size, generator=gen) * 2 - 1
    t = torch.randint(0, config.timesteps, (batch,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    windowed = any(m.window is not None for m in manifolds_of(model))
    if windowed and not name.endswith("-unsorted"):  # as the trainer sorts its batches
        t, order = t.sort(stable=True)
        x0, noise = x0[order], noise[order]
    x_t = add_noise(ddpm, x0, noise, t)
    for m in model.modules():
        if isinstance(m, wm.layers.ManifoldOp):
            if name.endswith("-basis"):
                m.path = "basis"
            if name.endswith("-windows"):
                m._kernel_per_example = False
    state = {"step": 0}

    def run() -> None:  # the body of train_denoiser's loop
        loss = nn.functional.mse_loss(model(x_t, t), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if isinstance(opt, wm.Preconditioned):
            opt.precondition()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        ema.update(model, state["step"])
        state["step"] += 1

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", choices=VARIANTS,
                   default=["embedding", "bspline4", "bspline12", "bspline12-unsorted",
                            "bspline12-basis"],
                   help="variants to time (default: embedding, bspline4 and the bspline12 "
                        "variants)")
    p.add_argument("--rounds", type=int, default=20, help="timed rounds (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    p.add_argument("--batch", type=int, default=CPU_SCALE["batch_size"],
                   help="batch size (default: the preset's, 64)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    p.add_argument("--tune-malloc", action=argparse.BooleanOptionalAction, default=True,
                   help="keep freed memory in the process as the sweeps do (default: on)")
    p.add_argument("--json", help="also write the medians and ratios to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.tune_malloc:
        tune_malloc()
    runs = {name: make_step(name, args.batch) for name in args.variants}
    for run in runs.values():
        for _ in range(args.warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    ref = med.get("bspline4")
    print(f"{'variant':22s} {'median ms':>10s} {'/ bspline4':>11s}")
    for name, ms in med.items():
        ratio = f"{ms / ref:.2f}x" if ref else "-"
        print(f"{name:22s} {ms:10.1f} {ratio:>11s}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"median_ms": med, "over_bspline4": {k: v / ref for k, v in med.items()}
                       if ref else {}, "rounds": args.rounds, "batch": args.batch}, f, indent=1)


if __name__ == "__main__":
    main()
