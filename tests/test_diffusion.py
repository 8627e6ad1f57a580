"""The DDPM task: a tiny diffusers UNet, a few steps, and the metrics against hand computations."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("diffusers")
pytest.importorskip("torchmetrics")

import weightmanifold as wm
from weightmanifold.experiments.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from weightmanifold.experiments.config import ConfigError
from weightmanifold.experiments.diffusion import (
    Denoiser,
    DiffusionConfig,
    add_noise,
    bucket_losses,
    bucket_timesteps,
    build_denoiser,
    check_timesteps,
    ddim_sample,
    resize_images,
    train_denoiser,
)
from weightmanifold.experiments.sample_quality import (
    ClassifierCacheError,
    class_balance,
    frechet_distance,
    load_or_train_classifier,
)
from weightmanifold.experiments.synthetic import make_synthetic

TINY = dict(widths=[8, 16], steps=6, batch_size=8, val_every=3, checkpoint_every=2,
            validation=16, eval_images=16, samples=8, sample_steps=3, timesteps=100,
            image_size=16, dataset="synthetic")


def images(split: str = "train") -> torch.Tensor:
    return make_synthetic(split, size=16).images


def tiny(method: str = "embedding", **kw) -> DiffusionConfig:
    return DiffusionConfig(method=method, **{**TINY, **kw})


# -- bad input -------------------------------------------------------------------------------
def test_timesteps_must_be_integers_in_range():
    check_timesteps(torch.tensor([0, 99]), 100)
    with pytest.raises(ValueError, match=r"\[0, 100\).*\[0, 100\]"):
        check_timesteps(torch.tensor([0, 100]), 100)
    with pytest.raises(ValueError, match=r"\[-1, 3\]"):
        check_timesteps(torch.tensor([-1, 3]), 100)
    with pytest.raises(TypeError, match=r"integers.*float32.*not s = t / T"):
        check_timesteps(torch.tensor([0.5]), 100)
    with pytest.raises(TypeError, match="must be a tensor"):
        check_timesteps([1, 2], 100)  # type: ignore[arg-type]


def test_denoiser_and_add_noise_refuse_bad_timesteps():
    model = build_denoiser(tiny("manifold", manifold="line"), 1, 16)
    x = torch.randn(2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        model(x, torch.tensor([5, 100]))
    with pytest.raises(TypeError, match="integers"):
        model(x, torch.tensor([0.1, 0.2]))
    from diffusers import DDPMScheduler

    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        add_noise(DDPMScheduler(num_train_timesteps=100), x, x, torch.tensor([3, 250]))


@pytest.mark.parametrize("bad, match", [
    ({"method": "film"}, "unknown 'film'"),
    ({"widths": [8, 12]}, "multiples of 8"),
    ({"image_size": 9}, "divisible by 2"),
    ({"samples": 1}, "samples"),
    ({"manifold": "nope"}, "nope"),
    ({"buckets": 200}, "buckets"),
])
def test_bad_configurations_are_refused(bad, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        DiffusionConfig(**{**TINY, "method": "manifold", **bad})
    with pytest.raises(ConfigError, match="unknown config key"):
        DiffusionConfig.from_dict({"epochs": 3})


def test_denoiser_needs_a_matching_unet():
    from diffusers import UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 16), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    with pytest.raises(ValueError, match="needs a converted UNet"):
        Denoiser(unet, "manifold", 100)
    with pytest.raises(ValueError, match="unknown method"):
        Denoiser(unet, "adaln", 100)


# -- the conditioning ------------------------------------------------------------------------
@pytest.mark.parametrize("method, manifold", [("manifold", "bspline"), ("both", "line"),
                                              ("manifold", "bins")])
def test_manifold_denoiser_equals_the_network_at_each_s(method, manifold, float64):
    options = {"n": 8} if manifold == "bspline" else \
        {"edges": [0.3, 0.6]} if manifold == "bins" else {}
    model = build_denoiser(tiny(method, manifold=manifold, manifold_options=options,
                                init="independent"), 1, 16).double().eval()
    x = torch.randn(5, 1, 16, 16)
    t = torch.tensor([0, 17, 30, 61, 99])
    with torch.no_grad():
        y = model(x, t)
        for i in range(5):
            plain = wm.at(model.unet, float(t[i]) / 100)
            step = t[i:i + 1] if method == "both" else torch.zeros(1, dtype=torch.long)
            assert torch.allclose(y[i:i + 1], plain(x[i:i + 1], step).sample, atol=1e-10)
        # one timestep for the batch (how DDIM samples) is the same network
        one = model(x, torch.tensor(30))
        assert torch.allclose(one, model(x, torch.full((5,), 30)), atol=1e-10)


def test_embedding_method_ignores_the_manifold_and_uses_t():
    model = build_denoiser(tiny("embedding"), 1, 16).eval()
    assert not wm.manifold_parameters(model)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(model(x, torch.tensor([1, 1])), model(x, torch.tensor([90, 90])))


# -- the schedule and the metrics against hand computations ---------------------------------
def test_add_noise_is_ddpm_forward_process():
    from diffusers import DDPMScheduler

    T = 100
    betas = np.linspace(1e-4, 0.02, T)
    abar = np.cumprod(1 - betas)
    x0, eps = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randn(3, 1, 4, 4,
                                                                         dtype=torch.float64)
    t = torch.tensor([0, 42, 99])
    got = add_noise(DDPMScheduler(num_train_timesteps=T), x0, eps, t)
    a = torch.tensor(abar[t.numpy()])[:, None, None, None]
    assert torch.allclose(got, a.sqrt() * x0 + (1 - a).sqrt() * eps, atol=1e-5)  # float32 tables


def test_bucket_timesteps_cover_their_ranges_and_repeat():
    ts = bucket_timesteps(10, 1000, 500, torch.Generator().manual_seed(0))
    for b in range(10):
        assert ts[b].min() >= 100 * b and ts[b].max() < 100 * (b + 1)
        assert len(ts[b].unique()) > 90  # spread over the bucket
    assert torch.equal(ts, bucket_timesteps(10, 1000, 500, torch.Generator().manual_seed(0)))


class Zero(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        return torch.zeros_like(x) + self.p


def test_bucket_losses_of_a_zero_predictor_are_the_mean_squared_noise():
    imgs = images("test")[:20]
    got = bucket_losses(Zero(), imgs, T=100, buckets=4, seed=3)
    gen = torch.Generator().manual_seed(3)
    bucket_timesteps(4, 100, 20, gen)  # the same draws, in the same order
    noise = torch.randn(4, *imgs.shape, generator=gen)
    want = (noise ** 2).mean(dim=(2, 3, 4)).mean(1)
    assert np.allclose(got, want.numpy(), atol=1e-6)
    assert got == bucket_losses(Zero(), imgs, T=100, buckets=4, seed=3)  # common numbers


class Flatten(nn.Module):
    num_features = 4

    def forward(self, x):
        return x.flatten(1).double()


def test_frechet_distance_equals_the_closed_form():
    from scipy import linalg

    gen = torch.Generator().manual_seed(0)
    real = torch.rand(60, 1, 2, 2, generator=gen)
    fake = (torch.rand(50, 1, 2, 2, generator=gen) ** 2) * 0.8
    r, f = real.flatten(1).double().numpy(), fake.flatten(1).double().numpy()
    mu1, mu2 = r.mean(0), f.mean(0)
    s1, s2 = np.cov(r, rowvar=False), np.cov(f, rowvar=False)
    want = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(Flatten(), real, fake, batch_size=7) == pytest.approx(want, rel=1e-4)
    assert frechet_distance(Flatten(), real, real) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_refuses_bad_sets():
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(Flatten(), torch.rand(5, 1, 2, 2), torch.rand(1, 1, 2, 2))
    with pytest.raises(ValueError, match="differ in shape"):
        frechet_distance(Flatten(), torch.rand(5, 1, 2, 2), torch.rand(5, 1, 3, 3))


def test_class_balance_by_hand():
    assert class_balance(torch.eye(10))[0] == pytest.approx(1.0)
    half = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]] * 3)
    b, counts = class_balance(half)
    assert counts == [3, 3, 0, 0] and b == pytest.approx(np.log(2) / np.log(4))
    with pytest.raises(ValueError, match="K >= 2"):
        class_balance(torch.zeros(3, 1))


def test_classifier_cache_is_reused_and_refuses_other_data(tmp_path):
    train, test = make_synthetic("train", size=16), make_synthetic("test", size=16)
    args = (train.labels, test.float(), test.labels)
    first = load_or_train_classifier(tmp_path / "c.pt", "synthetic", train.images, *args,
                                     classes=4, epochs=15, log=lambda _: None)
    assert first.test_accuracy > 0.5
    again = load_or_train_classifier(tmp_path / "c.pt", "synthetic", train.images, *args,
                                     classes=4, log=lambda _: None)
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ClassifierCacheError, match=r"trained on 'synthetic'.*uses 'other'"):
        load_or_train_classifier(tmp_path / "c.pt", "other", train.images, *args, classes=4)
    other = make_synthetic("train", size=16, seed=5).images
    with pytest.raises(ClassifierCacheError, match="images"):
        load_or_train_classifier(tmp_path / "c.pt", "synthetic", other, *args, classes=4)


def test_resize_images():
    x = images()[:3]
    assert resize_images(x, None) is x and resize_images(x, 16) is x
    y = resize_images(x, 8)
    assert y.shape == (3, 1, 8, 8) and y.dtype == torch.uint8
    flat = torch.full((1, 1, 16, 16), 77, dtype=torch.uint8)
    assert torch.equal(resize_images(flat, 4), torch.full((1, 1, 4, 4), 77, dtype=torch.uint8))


def test_ddim_samples_start_from_the_same_noise():
    model = build_denoiser(tiny("manifold", manifold="line"), 1, 16).eval()
    a = ddim_sample(model, 6, (1, 16, 16), T=100, steps=3, batch_size=4)
    b = ddim_sample(model, 6, (1, 16, 16), T=100, steps=3, batch_size=6)
    assert a.shape == (6, 1, 16, 16) and 0 <= a.min() and a.max() <= 1
    assert torch.allclose(a, b, atol=1e-5)


# -- training, resume, the preset ------------------------------------------------------------
def test_training_resumes_exactly_after_a_kill(tmp_path):
    config = tiny("manifold", manifold="bspline", manifold_options={"n": 5})
    straight = train_denoiser(config, tmp_path / "a", images(), images("test"), progress=False,
                              log=lambda _: None)
    stopped = train_denoiser(config, tmp_path / "b", images(), images("test"), progress=False,
                             log=lambda _: None, stop_after=3)
    assert stopped == {"status": "stopped", "step": 3}
    first_session = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["run_time_s"]
    shutil.copytree(tmp_path / "b", tmp_path / "old")
    resumed = train_denoiser(config, tmp_path / "b", images(), images("test"), progress=False,
                             log=lambda _: None)
    assert resumed["final"] == straight["final"] and resumed["history"] == straight["history"]
    # the whole run, the final evaluation included, over both sessions of the resumed one
    for run in (straight, resumed):
        assert run["run_time_s"] > run["wall_time_s"] > 0
    assert resumed["run_time_s"] > first_session > 0
    # resumed from a checkpoint written before run_time_s was kept: unknown, not a part
    old = load_checkpoint(tmp_path / "old" / "checkpoint.pt")
    del old["run_time_s"]
    save_checkpoint(tmp_path / "old" / "checkpoint.pt", old)
    unknown = train_denoiser(config, tmp_path / "old", images(), images("test"),
                             progress=False, log=lambda _: None)
    assert unknown["run_time_s"] is None and unknown["final"] == straight["final"]
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in "ab")
    for key in ("model", "ema"):
        for x, y in zip(a[key].values(), b[key].values(), strict=True):
            assert torch.equal(x, y)
    with pytest.raises(CheckpointError, match="another configuration"):
        train_denoiser(config.replace(lr=0.5, steps=7), tmp_path / "b", images(),
                       images("test"), progress=False)
    assert straight["final"]["loss"] > 0 and len(straight["final"]) == 11  # loss + 10 buckets


@pytest.mark.parametrize("method, options, windowed", [
    ("manifold", {"manifold": "bspline", "manifold_options": {"n": 6}}, True),
    ("manifold", {"manifold": "line"}, False)])
def test_training_batches_of_local_manifolds_come_sorted_by_t(tmp_path, monkeypatch, method,
                                                              options, windowed):
    """Sorted by t, a B-spline's batch is in window order (no per-layer gathers); other
    methods see the batch as drawn."""
    seen: list[bool] = []
    forward = Denoiser.forward

    def spy(self, x, t):
        if self.training and t.numel() == 8:  # the training batches
            seen.append(bool((t[1:] >= t[:-1]).all()))
        return forward(self, x, t)

    monkeypatch.setattr(Denoiser, "forward", spy)
    train_denoiser(tiny(method, **options, steps=4), tmp_path, images(), images("test"),
                   progress=False, log=lambda _: None)
    assert len(seen) >= 4 and all(seen[:4]) is windowed


def test_archived_run_is_not_retrained(tmp_path):
    """A finished run archived without its checkpoint, restored on a fresh machine with
    another thread count, is recognised and not trained again."""
    import shutil

    from weightmanifold.experiments.archive import archive_sweep

    config = tiny("manifold", manifold="line", steps=3)
    first = train_denoiser(config, tmp_path / "runs" / "line", images(), images("test"),
                           progress=False, log=lambda _: None)
    archive_sweep(tmp_path / "runs", tmp_path / "docs")
    assert not (tmp_path / "docs" / "line" / "checkpoint.pt").exists()
    assert (tmp_path / "docs" / "line" / "samples.pt").exists()
    shutil.rmtree(tmp_path / "runs")
    shutil.copytree(tmp_path / "docs", tmp_path / "runs")
    again = train_denoiser(config.replace(threads=1), tmp_path / "runs" / "line", images(),
                           images("test"), progress=False, log=lambda _: None)
    assert again == first
    assert not (tmp_path / "runs" / "line" / "checkpoint.pt").exists()


def test_a_finished_run_of_another_configuration_is_never_trained_over(tmp_path):
    """Without a checkpoint (an archived run) a finished run of another configuration used
    to be overwritten by the new one; the rotation trainer refuses it, and so does this."""
    config = tiny("manifold", manifold="line", steps=3)
    run = tmp_path / "line"
    train_denoiser(config, run, images(), images("test"), progress=False, log=lambda _: None)
    (run / "checkpoint.pt").unlink()  # as archived
    before = (run / "summary.json").read_bytes()
    with pytest.raises(CheckpointError, match=r"another configuration \(lr: saved 0.001, "
                                              r"now 0.5\).*no checkpoint"):
        train_denoiser(config.replace(lr=0.5), run, images(), images("test"), progress=False,
                       log=lambda _: None)
    assert (run / "summary.json").read_bytes() == before and not (run / "checkpoint.pt").exists()


def test_sweep_runs_end_to_end_and_resumes(tmp_path):
    from weightmanifold.experiments.diffusion_sweep import run_diffusion_sweep

    labels = ["embedding", "line", "experts", "both"]
    rows = run_diffusion_sweep(tmp_path, seeds=[0, 1], labels=labels, overrides=TINY,
                               progress=False, log=lambda _: None)
    for name in ("results.csv", "differences.csv", "loss_by_t.png", "loss_by_t.csv",
                 "samples.png", "tables.md", "classifier.pt"):
        assert (tmp_path / name).exists(), name
    meta = json.loads((tmp_path / "results.json").read_text())
    val = {k: json.loads((tmp_path / k / "seed_0" / "summary.json").read_text())
           ["history"][-1]["val_loss"] for k in ("line", "experts")}
    assert meta["best_manifold"] == min(val, key=val.get)  # by seed 0's validation loss
    n = {r["label"]: r["n"] for r in rows}
    assert n["embedding"] == 2 and n[meta["best_manifold"]] == 2 and n["both"] == 1
    # the whole runs' time beside the training's, in the results and the table
    for r in rows:
        assert r["run_time_s"] > r["wall_time_s"] > 0, r["label"]
    table = (tmp_path / "tables.md").read_text()
    assert "| wall s | run s |" in table
    embedding = next(r for r in rows if r["label"] == "embedding")
    assert f"| {embedding['wall_time_s']:.0f} | {embedding['run_time_s']:.0f} |" in table
    assert {"loss", "frechet", "class_balance", "loss_b0", "loss_b9"} <= \
        {d["metric"] for d in meta["differences"]}
    summary = tmp_path / "line" / "seed_0" / "summary.json"
    before = summary.stat().st_mtime_ns
    run_diffusion_sweep(tmp_path, seeds=[0, 1], labels=labels, overrides=TINY,
                        progress=False, log=lambda _: None)
    assert summary.stat().st_mtime_ns == before  # finished runs are not run again
    assert meta["complete"]
    # the plan reads the same runs as the sweep: all finished, the same manifold chosen
    from weightmanifold.experiments.plan import diffusion_plan

    plan = diffusion_plan(tmp_path, seeds=[0, 1], labels=labels, overrides=TINY)
    assert all(r["to train"] == r["resumes"] == r["refused"] == [] for r in plan)
    assert [r["name"] for r in plan if r["chosen"]] == [meta["best_manifold"]]
    assert {r["name"]: r["finished"] for r in plan}[meta["best_manifold"]] == [0, 1]
    (tmp_path / "both" / "seed_0" / "summary.json").unlink()
    partial = run_diffusion_sweep(tmp_path, seeds=[0, 1], labels=labels, overrides=TINY,
                                  log=lambda _: None, train=False, figures=False)
    assert [r["label"] for r in partial] == ["embedding", "line", "experts"]
    assert not json.loads((tmp_path / "results.json").read_text())["complete"]
    assert not (tmp_path / "both" / "seed_0" / "summary.json").exists()  # nothing trained
    with pytest.raises(ValueError, match="unknown label"):
        run_diffusion_sweep(tmp_path, labels=["adaln"], overrides=TINY)


@pytest.mark.parametrize(("content", "why"), [
    ("{not json", "a summary.json that cannot be read"),
    ("[1, 2]", "a summary.json that is not a JSON object"),
])
def test_tabulating_names_the_summary_it_cannot_read(tmp_path, content, why):
    from weightmanifold.experiments.diffusion_sweep import run_diffusion_sweep

    run = tmp_path / "line" / "seed_0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(content)
    with pytest.raises(ValueError, match=f"line/seed_0: {why}"):
        run_diffusion_sweep(tmp_path, seeds=[0], labels=["line"], overrides=TINY,
                            log=lambda _: None, train=False, figures=False)


def test_the_width_matched_twin_has_the_manifolds_parameters():
    from weightmanifold.experiments.diffusion_sweep import methods

    configs = methods("cpu")
    count = {k: sum(p.numel() for p in build_denoiser(c, 1, 16).parameters())
             for k, c in configs.items() if k in ("embedding-wide", "bspline4", "embedding")}
    assert abs(count["embedding-wide"] / count["bspline4"] - 1) < 0.05
    assert count["bspline4"] > 3.5 * count["embedding"]


def test_cli_sweep_diffusion_refuses_options_that_do_not_apply(capsys):
    from weightmanifold.cli import main

    assert main(["sweep", "diffusion", "--x", "0.1"]) == 2
    assert "--x does not apply" in capsys.readouterr().err


def test_the_step_bench_runs_the_trainers_step_for_every_variant():
    """bench/diffusion_step.py takes the preset's own configurations and steps them."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "bench" / "diffusion_step.py"
    spec = importlib.util.spec_from_file_location("diffusion_step", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from weightmanifold.experiments.diffusion_sweep import methods

    assert set(bench.PRESET_VARIANTS) == set(methods("cpu"))  # every method of the preset
    assert bench.variant_config("bspline12").manifold_options["n"] == 12
    for name in ("embedding", "experts", "bspline4-r8", "bspline12", "bspline12-basis"):
        step = bench.make_step(name, batch=6)
        step()  # builds the optimiser state
        step()
