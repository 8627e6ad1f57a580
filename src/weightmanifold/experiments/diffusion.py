"""The DDPM task: a ``diffusers`` UNet denoiser whose conditioning on the timestep is the method.

Training is DDPM's ε-prediction (``diffusers``' :class:`~diffusers.DDPMScheduler`,
linear betas, ``T`` steps), every example of a batch at its own timestep ``t``;
sampling is DDIM (:class:`~diffusers.DDIMScheduler`, deterministic, ``η = 0``)
from EMA weights. The denoiser is ``diffusers``' :class:`~diffusers.UNet2DModel`,
conditioned in one of three ways (:class:`Denoiser`):

* ``embedding`` — the convention: the UNet's sinusoidal timestep embedding,
  projected into every residual block (DDPM, ADM);
* ``manifold`` — the UNet converted by :func:`weightmanifold.manifoldify` with
  :math:`s = t / T`, its timestep input held at 0 so that only the weights
  carry ``t``: :math:`W(s) = \\sum_k a_k(s) W_k`;
* ``both`` — the embedding and the manifold together.

Metrics (:func:`evaluate_denoiser`), all with common random numbers across
methods (the images, timesteps and noise depend on fixed seeds, not on the
run's seed or method): the held-out ε-MSE on the test set in ``buckets``
equal ranges of ``t``, and DDIM samples from one fixed starting noise, scored by
:mod:`~weightmanifold.experiments.sample_quality`.

Runs resume exactly (:func:`train_denoiser` checkpoints the model, its EMA, the
optimiser and the generator every ``checkpoint_every`` steps).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import weightmanifold as wm
from weightmanifold.layers.conditioning import manifolds_of

from .archive import finished_summary, refuse_training_over, same_run
from .checkpoint import (
    CheckpointError,
    atomic_write_csv,
    atomic_write_json,
    load_checkpoint,
    save_checkpoint,
)
from .config import ConfigError, check_keys, check_types
from .provenance import software

__all__ = ["EVAL_SEED", "METHODS", "SAMPLE_SEED", "Denoiser", "DiffusionConfig", "add_noise",
           "bucket_losses", "bucket_timesteps", "build_denoiser", "check_timesteps",
           "ddim_sample", "evaluate_denoiser", "load_diffusion_data", "resize_images",
           "train_denoiser", "unet_config"]

METHODS = ("embedding", "manifold", "both")
#: seeds of the evaluation's images, timesteps and noise, and of the samples' starting
#: noise: the same for every method and training seed (common random numbers)
EVAL_SEED, SAMPLE_SEED, VAL_SEED = 7001, 7002, 54321


@dataclass
class DiffusionConfig:
    """Everything that determines one denoiser training run.

    Every field has a ``help`` text (``DiffusionConfig.help(name)``).
    """

    name: str = field(default="diffusion", metadata={"help": "name of the run"})
    method: str = field(default="embedding", metadata={
        "help": "embedding (the UNet's timestep embedding), manifold (weights over s = t/T, "
                "timestep input held at 0) or both"})
    manifold: str = field(default="line", metadata={
        "help": "topology of the manifold over s = t/T (line, polynomial, bspline, bins, ...)"})
    manifold_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "constructor options of the manifold, e.g. {n = 8}"})
    rank: int | None = field(default=None, metadata={
        "help": "low-rank manifold: W0 + sum_k a_k(s) U_k V_k, rank capped per layer"})
    init: str | float = field(default="constant", metadata={
        "help": "manifold initialisation (constant, independent or eps >= 0)"})
    widths: list[int] = field(default_factory=lambda: [32, 64, 64], metadata={
        "help": "UNet block widths (multiples of 8); attention in the last block"})
    dataset: str = field(default="fashion-mnist", metadata={
        "help": "fashion-mnist, cifar10 or synthetic (tests)"})
    data_dir: str | None = field(default=None, metadata={"help": "data set directory"})
    image_size: int | None = field(default=16, metadata={
        "help": "resize images to this side (antialiased bilinear; None: native size)"})
    validation: int = field(default=500, metadata={
        "help": "training images held out (seeded) for the validation loss curve"})
    steps: int = field(default=3000, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=64, metadata={"help": "training batch size"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate (after warm-up)"})
    warmup: int = field(default=100, metadata={"help": "linear learning-rate warm-up steps"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient norm clip (0: none)"})
    ema_decay: float = field(default=0.999, metadata={
        "help": "EMA decay (with the warm-up min(decay, (1+k)/(10+k)))"})
    precondition: bool = field(default=True, metadata={
        "help": "metric-preconditioned gradients for manifold networks"})
    timesteps: int = field(default=1000, metadata={"help": "diffusion steps T of training"})
    buckets: int = field(default=10, metadata={"help": "equal ranges of t in the evaluation"})
    eval_images: int = field(default=2000, metadata={
        "help": "test images in the per-bucket held-out loss (each at every bucket)"})
    val_every: int = field(default=250, metadata={"help": "steps between validation losses"})
    samples: int = field(default=1000, metadata={"help": "DDIM samples for sample quality"})
    sample_steps: int = field(default=50, metadata={"help": "DDIM steps per sample"})
    seed: int = field(default=0, metadata={"help": "seed of weights, batches, t and noise"})
    checkpoint_every: int = field(default=250, metadata={"help": "steps between checkpoints"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or cuda:N"})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check types and ranges.

        Raises:
            ConfigError: naming the key and what is wrong with it.
        """
        check_types(self)
        if self.method not in METHODS:
            raise ConfigError(f"config key 'method': unknown {self.method!r}; valid: "
                              f"{', '.join(METHODS)}")
        for key in ("steps", "batch_size", "timesteps", "buckets", "eval_images", "samples",
                    "sample_steps", "val_every", "checkpoint_every", "validation"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key {key!r} must be >= 1, got {getattr(self, key)}")
        if self.image_size is not None and (self.image_size < 4
                                            or self.image_size % 2 ** (len(self.widths) - 1)):
            raise ConfigError(f"config key 'image_size' must be divisible by "
                              f"{2 ** (len(self.widths) - 1)} (the UNet halves it "
                              f"{len(self.widths) - 1} times), got {self.image_size}")
        if self.samples < 2:
            raise ConfigError("config key 'samples' must be >= 2 (a covariance needs two)")
        if self.buckets > self.timesteps or self.sample_steps > self.timesteps:
            raise ConfigError("config keys 'buckets' and 'sample_steps' must be <= 'timesteps'")
        if not self.widths or any(w < 8 or w % 8 for w in self.widths):
            raise ConfigError(f"config key 'widths' must be multiples of 8, got {self.widths}")
        if not 0 <= self.ema_decay < 1 or self.lr <= 0 or self.grad_clip < 0 or self.warmup < 0:
            raise ConfigError("config keys: need 0 <= ema_decay < 1, lr > 0, grad_clip >= 0, "
                              "warmup >= 0")
        if self.method != "embedding":
            wm.topology.make_manifold(self.manifold, **self.manifold_options)  # valid?

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionConfig:
        """Build from a dict, refusing unknown keys.

        Raises:
            ConfigError: for an unknown key or a bad value.
        """
        check_keys(cls, data)
        return cls(**data)

    def replace(self, **changes: Any) -> DiffusionConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)


def check_timesteps(t: Tensor, T: int) -> Tensor:
    """Validate DDPM timesteps: integers in ``[0, T)``.

    Raises:
        TypeError: for a non-tensor or a non-integer dtype (a DDPM scheduler indexes
            its tables with ``t``; ``t / T`` is the manifold's ``s``, not ``t``).
        ValueError: for a value outside ``[0, T)``.
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"timesteps must be a tensor, got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"DDPM timesteps must be integers in [0, {T}), got dtype {t.dtype} "
                        "(pass t, not s = t / T)")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= T):
        raise ValueError(f"DDPM timesteps must lie in [0, {T}), got values in "
                         f"[{int(t.min())}, {int(t.max())}]")
    return t


def unet_config(widths: list[int], channels: int, size: int) -> dict[str, Any]:
    """The ``UNet2DModel`` configuration of the task: one resnet layer per block,
    self-attention in the last (lowest-resolution) block, GroupNorm with 8 groups."""
    k = len(widths)
    return {"sample_size": size, "in_channels": channels, "out_channels": channels,
            "layers_per_block": 1, "block_out_channels": tuple(widths), "norm_num_groups": 8,
            "down_block_types": ("DownBlock2D",) * (k - 1) + ("AttnDownBlock2D",),
            "up_block_types": ("AttnUpBlock2D",) + ("UpBlock2D",) * (k - 1)}


class Denoiser(nn.Module):
    """ε-prediction ``model(x_t, t)`` with ``t`` reaching the UNet as its method says.

    Args:
        unet: a ``UNet2DModel``, or one converted by :func:`~weightmanifold.manifoldify`.
        method: ``"embedding"``, ``"manifold"`` or ``"both"``.
        timesteps: ``T``; the manifold's condition is :math:`s = t / T`.

    Raises:
        ValueError: for an unknown method, or a manifold method on an unconverted UNet.
    """

    def __init__(self, unet: nn.Module, method: str, timesteps: int) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
        if (method != "embedding") != isinstance(unet, wm.ManifoldModel):
            raise ValueError(f"method {method!r} needs a "
                             f"{'converted' if method != 'embedding' else 'plain'} UNet")
        self.unet, self.method, self.timesteps = unet, method, timesteps

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Predict the noise of ``x`` ``[B, C, H, W]`` at timesteps ``t`` (``[B]`` or one
        for all, 0-d) — one timestep for all selects one ordinary network."""
        check_timesteps(t, self.timesteps)
        if self.method == "embedding":
            return self.unet(x, t).sample
        s = t.to(x.dtype) / self.timesteps
        step = t if self.method == "both" else torch.zeros_like(t)
        return self.unet(x, step, s=s).sample


def build_denoiser(config: DiffusionConfig, channels: int, size: int) -> Denoiser:
    """The freshly initialised denoiser of ``config`` (weights seeded by ``config.seed``)."""
    from diffusers import UNet2DModel

    torch.manual_seed(config.seed)
    unet: nn.Module = UNet2DModel(**unet_config(config.widths, channels, size))
    if config.method != "embedding":
        from .models import capped_rank

        manifold = wm.topology.make_manifold(config.manifold, **config.manifold_options)
        rank = None if config.rank is None else capped_rank(config.rank)
        unet = wm.manifoldify(unet, manifold, init=config.init, rank=rank)
    return Denoiser(unet, config.method, config.timesteps)


def resize_images(images: Tensor, size: int | None) -> Tensor:
    """uint8 images ``[N, C, H, W]`` resized to ``size × size`` (antialiased bilinear).

    ``None`` or the images' own size returns them unchanged.
    """
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    out = []
    for i in range(0, len(images), 5000):
        x = nn.functional.interpolate(images[i:i + 5000].float(), size=(size, size),
                                      mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def load_diffusion_data(config: DiffusionConfig) -> tuple[Any, Any]:
    """The configured data set's train and test splits, resized to ``config.image_size``.

    Returns:
        Two :class:`~weightmanifold.experiments.datasets.ImageDataset`.

    Raises:
        weightmanifold.experiments.datasets.DatasetError: missing or corrupt files.
    """
    from .datasets import ImageDataset, load_dataset

    splits = []
    for split in ("train", "test"):
        if config.dataset == "synthetic":
            from .synthetic import make_synthetic

            ds = make_synthetic(split, size=16)
        else:
            ds = load_dataset(config.dataset, config.data_dir, split)
        splits.append(ImageDataset(resize_images(ds.images, config.image_size), ds.labels,
                                   ds.classes, f"{ds.name}-{config.image_size or 'native'}"))
    return splits[0], splits[1]


def _schedulers(T: int) -> tuple[Any, Any]:
    from diffusers import DDIMScheduler, DDPMScheduler

    ddpm = DDPMScheduler(num_train_timesteps=T)
    return ddpm, DDIMScheduler.from_config(ddpm.config)


def add_noise(ddpm: Any, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """:math:`x_t = \\sqrt{\\bar\\alpha_t} x_0 + \\sqrt{1 - \\bar\\alpha_t} \\varepsilon`, with
    ``t`` checked against the scheduler's ``T``."""
    check_timesteps(t, ddpm.config.num_train_timesteps)
    return ddpm.add_noise(x0, noise, t)


def bucket_timesteps(buckets: int, T: int, count: int, gen: torch.Generator) -> Tensor:
    """``[buckets, count]`` timesteps, row ``b`` uniform on ``[bT/K, (b+1)T/K)``."""
    edges = [b * T // buckets for b in range(buckets + 1)]
    return torch.stack([torch.randint(edges[b], edges[b + 1], (count,), generator=gen)
                        for b in range(buckets)])


class _EMA:
    """Exponential moving average of a module's parameters (buffers copied)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            ema = list(self.model.parameters())
            torch._foreach_lerp_(ema, [p.detach() for p in model.parameters()], 1 - d)
            for b, src in zip(self.model.buffers(), model.buffers(), strict=True):
                b.copy_(src)


def _to_unit(images: Tensor) -> Tensor:
    return images.float() / 255 * 2 - 1  # uint8 → [-1, 1]


@torch.no_grad()
def ddim_sample(model: nn.Module, count: int, shape: tuple[int, ...], *, T: int,
                steps: int, seed: int = SAMPLE_SEED, batch_size: int = 500,
                progress: bool | None = None) -> Tensor:
    """DDIM samples (``η = 0``) from ``model``, images in ``[0, 1]`` ``[count, *shape]``.

    The starting noise depends only on ``seed``, so every method starts from the
    same noise. Every step runs one timestep for the whole batch (one network).
    """
    from .runtime import progress_bar

    _, ddim = _schedulers(T)
    ddim.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    out = []
    bar = progress_bar(-(-count // batch_size) * steps, "sampling", progress)
    for i in range(0, count, batch_size):
        x = torch.randn(min(batch_size, count - i), *shape, generator=gen).to(device)
        for t in ddim.timesteps:
            x = ddim.step(model(x, t.long().to(device)), int(t), x).prev_sample
            bar.update(1)
        out.append(((x.clamp(-1, 1) + 1) / 2).cpu())
    bar.close()
    return torch.cat(out)


@torch.no_grad()
def bucket_losses(model: nn.Module, images: Tensor, *, T: int, buckets: int,
                  seed: int = EVAL_SEED, batch_size: int = 500) -> list[float]:
    """Mean ε-MSE of ``model`` on uint8 ``images`` in each of ``buckets`` ranges of ``t``.

    Every image is evaluated once per bucket at a timestep and noise drawn from
    ``seed`` alone (common random numbers across methods and runs).
    """
    ddpm, _ = _schedulers(T)
    gen = torch.Generator().manual_seed(seed)
    ts = bucket_timesteps(buckets, T, len(images), gen)
    noise = torch.randn(buckets, *images.shape, generator=gen)
    device = next(model.parameters()).device
    x0 = _to_unit(images).to(device)
    out = []
    for b in range(buckets):
        total = 0.0
        for i in range(0, len(images), batch_size):
            t = ts[b, i:i + batch_size].to(device)
            eps = noise[b, i:i + batch_size].to(device)
            pred = model(add_noise(ddpm, x0[i:i + batch_size], eps, t), t)
            total += float(((pred - eps) ** 2).mean(dim=(1, 2, 3)).sum())
        out.append(total / len(images))
    return out


def evaluate_denoiser(model: nn.Module, config: DiffusionConfig, test_images: Tensor,
                      judge: Any = None, progress: bool | None = None) -> dict[str, Any]:
    """The final metrics of a trained (EMA) denoiser.

    Args:
        model: the denoiser.
        config: its run's configuration (``T``, buckets, sample counts).
        test_images: uint8 test images; the first ``eval_images`` are scored.
        judge: a :class:`~weightmanifold.experiments.sample_quality.CachedClassifier`
            (the Fréchet distance and class balance are skipped without one).

    Returns:
        ``loss`` (mean over buckets), ``loss_b{k}`` per bucket, and with a judge
        ``frechet``, ``class_balance``, ``class_counts``; plus the samples
        (``"samples"``, float ``[N, C, H, W]`` in ``[0, 1]``).
    """
    from .sample_quality import class_balance, frechet_distance

    model.eval()
    losses = bucket_losses(model, test_images[:config.eval_images], T=config.timesteps,
                           buckets=config.buckets)
    out: dict[str, Any] = {"loss": sum(losses) / len(losses),
                           **{f"loss_b{k}": v for k, v in enumerate(losses)}}
    samples = ddim_sample(model, config.samples, tuple(test_images.shape[1:]),
                          T=config.timesteps, steps=config.sample_steps, progress=progress)
    if judge is not None:
        real = test_images.float() / 255
        # the real images' features once per judge: every method is compared with the same
        out["frechet"] = frechet_distance(judge.model, real, samples)
        with torch.no_grad():
            logits = torch.cat([judge.model.logits(samples[i:i + 1000])
                                for i in range(0, len(samples), 1000)])
        out["class_balance"], out["class_counts"] = class_balance(logits)
    out["samples"] = samples
    return out


def training_flops_per_example(model: Denoiser, x0: Tensor, T: int) -> float:
    """Counted FLOPs (matrix products, convolutions, kernel mixing) of one training step
    per example, on a copy of ``model`` with every example at its own timestep."""
    from torch.utils.flop_counter import FlopCounterMode

    clone = copy.deepcopy(model).train()
    gen = torch.Generator().manual_seed(0)
    t = torch.randint(0, T, (len(x0),), generator=gen).to(x0.device)
    noise = torch.randn(x0.shape, generator=gen).to(x0.device)
    ddpm, _ = _schedulers(T)
    with FlopCounterMode(display=False, custom_mapping=wm.layers.FLOP_FORMULAS) as counter:
        nn.functional.mse_loss(clone(add_noise(ddpm, x0, noise, t), t), noise).backward()
    return counter.get_total_flops() / len(x0)


def _optimizer(config: DiffusionConfig, model: Denoiser) -> torch.optim.Optimizer:
    opt: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                                   weight_decay=0.0)
    if config.precondition and wm.manifold_parameters(model):
        opt = wm.Preconditioned(opt, model)
    return opt


def train_denoiser(config: DiffusionConfig, out_dir: str | Path, train_images: Tensor,
                   test_images: Tensor, *, judge: Any = None, progress: bool | None = None,
                   log: Any = print, stop_after: int | None = None) -> dict[str, Any]:
    """Train one denoiser into ``out_dir`` (resuming a checkpoint there), then evaluate it.

    Writes ``config.json``, ``metrics.csv`` (train loss per logged step, validation
    loss every ``val_every`` steps), ``checkpoint.pt``, ``samples.pt`` (the first 100
    samples, uint8) and ``summary.json`` (the final metrics).

    Args:
        config: the run.
        out_dir: its directory.
        train_images, test_images: uint8 images ``[N, C, H, W]``; ``config.validation``
            training images are held out (seeded) for the validation curve.
        judge: the cached feature classifier for sample quality (optional).
        stop_after: stop after this many steps without evaluating (as a kill would).

    Returns:
        The summary (``status`` ``"completed"`` or ``"stopped"``).

    Raises:
        weightmanifold.experiments.checkpoint.CheckpointError: for a checkpoint of
            another configuration, or a finished run of another configuration (or an
            unreadable ``summary.json``) with no checkpoint: an archived result is
            never trained over.
    """
    from .runtime import RunClock, progress_bar

    out = Path(out_dir)
    done = finished_summary(out, config.to_dict())
    if done is not None:
        return done
    refuse_training_over(out, config.to_dict(), out / "checkpoint.pt")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    n_val = config.validation
    if n_val >= len(train_images):
        raise ValueError(f"validation = {n_val} leaves nothing to train on")
    perm = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(VAL_SEED))
    val_images, train_images = train_images[perm[:n_val]], train_images[perm[n_val:]]
    channels, size = train_images.shape[1], train_images.shape[-1]
    device = torch.device(config.device)
    model = build_denoiser(config, channels, size).to(device)
    opt = _optimizer(config, model)
    ema = _EMA(model, config.ema_decay)
    gen = torch.Generator().manual_seed(config.seed)
    ddpm, _ = _schedulers(config.timesteps)
    # wall: the training steps and the validation every val_every steps; run_clock: the
    # whole run, the final evaluation included (its total is None when resumed from a
    # checkpoint without it)
    step, history, wall, run_clock = 0, [], 0.0, RunClock()
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        if not same_run(state["config"], config.to_dict()):
            raise CheckpointError(f"{ckpt} belongs to another configuration; use another "
                                  "directory or delete it")
        model.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, history, wall = state["step"], state["history"], state["wall_time_s"]
        run_clock.total = state.get("run_time_s")
        log(f"{config.name}: resumed at step {step}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config.to_dict())

    run_clock.start()

    def save() -> None:
        run_clock.tick()
        save_checkpoint(ckpt, {"config": config.to_dict(), "model": model.state_dict(),
                               "ema": ema.model.state_dict(), "optimizer": opt.state_dict(),
                               "generator": gen.get_state(), "step": step,
                               "history": history, "wall_time_s": wall,
                               "run_time_s": run_clock.total})
        atomic_write_csv(out / "metrics.csv", history)

    bar = progress_bar(config.steps, config.name, progress, initial=step)
    x_all = _to_unit(train_images)
    # manifolds with local support (B-splines, experts) group each batch by window
    windowed = any(m.window is not None for m in manifolds_of(model))
    model.train()
    t0, running = time.perf_counter(), []
    while step < config.steps:
        if stop_after is not None and step >= stop_after:
            wall += time.perf_counter() - t0
            save()
            bar.close()
            return {"status": "stopped", "step": step}
        idx = torch.randint(0, len(x_all), (config.batch_size,), generator=gen)
        t = torch.randint(0, config.timesteps, (config.batch_size,), generator=gen)
        noise = torch.randn(x_all[idx].shape, generator=gen)
        if windowed:  # sorted by t, the batch is in window order: no per-layer gathers
            t, order = t.sort(stable=True)
            idx, noise = idx[order], noise[order]
        x0, t, noise = x_all[idx].to(device), t.to(device), noise.to(device)
        loss = nn.functional.mse_loss(model(add_noise(ddpm, x0, noise, t), t), noise)
        if not torch.isfinite(loss):
            from .trainer import TrainingDivergedError

            raise TrainingDivergedError(f"{config.name}: loss {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for g in opt.param_groups:
            g["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup))
        if config.grad_clip:
            if isinstance(opt, wm.Preconditioned):
                opt.precondition()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        ema.update(model, step)
        step += 1
        running.append(float(loss.detach()))
        bar.update(1)
        if step % config.val_every == 0 or step == config.steps:
            val = bucket_losses(ema.model, val_images, T=config.timesteps,
                                buckets=config.buckets)
            history.append({"step": step, "train_loss": sum(running) / len(running),
                            "val_loss": sum(val) / len(val)})
            running = []
            model.train()
            bar.set_postfix(val_loss=f"{history[-1]['val_loss']:.4f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            wall += time.perf_counter() - t0
            t0 = time.perf_counter()
            save()
    bar.close()
    final = evaluate_denoiser(ema.model, config, test_images, judge, progress)
    samples = final.pop("samples")
    save_checkpoint(out / "samples.pt", {"samples": (samples[:100] * 255).round()
                                         .to(torch.uint8)})
    run_clock.tick()
    summary = {"config": config.to_dict(), "status": "completed", "steps": step,
               "parameters": sum(p.numel() for p in model.parameters()),
               "train_flops_per_example": training_flops_per_example(
                   model, x_all[:config.batch_size].to(device), config.timesteps),
               "wall_time_s": wall, "run_time_s": run_clock.total, "history": history,
               "final": final,
               "software": software()}
    atomic_write_json(out / "summary.json", summary)
    return summary
