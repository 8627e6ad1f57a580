"""Conditioning tasks: rotation conventions, training angles, noise, evaluation, bad inputs."""

from __future__ import annotations

import doctest
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightmanifold.experiments import tasks as tasks_module
from weightmanifold.experiments.tasks import (
    TASKS,
    NoiseTask,
    RotationTask,
    Task,
    UnconditionedTask,
    evaluate_by_condition,
    make_task,
    rotate,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def clone(g: torch.Generator) -> torch.Generator:
    c = torch.Generator(device=g.device)
    c.set_state(g.get_state())
    return c


def full(b: int, value: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.full((b,), value, dtype=dtype)


def centred_coords(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates (u to the right, v downwards) measured from the image centre."""
    v, u = torch.meshgrid(
        torch.arange(h, dtype=torch.float64) - (h - 1) / 2,
        torch.arange(w, dtype=torch.float64) - (w - 1) / 2,
        indexing="ij",
    )
    return u, v


def centre_of_mass(img: torch.Tensor) -> tuple[float, float]:
    u, v = centred_coords(*img.shape[-2:])
    m = img.to(torch.float64)
    return float((m * u).sum() / m.sum()), float((m * v).sum() / m.sum())


# -- rotation conventions ----------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (2, 3, 9, 9), (2, 2, 6, 11)])
def test_rotation_by_zero_and_one_is_identity(shape):
    x = torch.rand(*shape, generator=gen(1))
    for s in (0.0, 1.0, -2.0):
        torch.testing.assert_close(rotate(x, full(shape[0], s)), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (2, 3, 9, 9)])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_quarter_turns_equal_rot90(shape, k):
    x = torch.rand(*shape, generator=gen(2))
    expected = torch.rot90(x, k, dims=(-2, -1))
    torch.testing.assert_close(rotate(x, full(shape[0], k / 4)), expected, atol=1e-5, rtol=0)


def test_quarter_turn_is_counter_clockwise_on_an_asymmetric_image():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 1, 4] = 1.0  # top centre
    x[0, 0, 1, 6] = 0.5  # top right
    y = rotate(x, torch.tensor([0.25]))[0, 0]
    # counter-clockwise as displayed: top -> left, top-right -> top-left
    assert y[4, 1] == pytest.approx(1.0, abs=1e-5)
    assert y[2, 1] == pytest.approx(0.5, abs=1e-5)
    assert float(y.abs().sum()) == pytest.approx(1.5, abs=1e-4)
    y_half = rotate(x, torch.tensor([0.5]))[0, 0]
    assert y_half[7, 4] == pytest.approx(1.0, abs=1e-5)  # top -> bottom


@pytest.mark.parametrize("hw", [(15, 15), (15, 21), (20, 14)])
@pytest.mark.parametrize("s", [0.125, 0.25, 0.3, 0.75])
def test_rotation_moves_a_blob_counter_clockwise_also_for_non_square_images(hw, s):
    h, w = hw
    u, v = centred_coords(h, w)
    cu, cv = 1.0, -3.5  # above and slightly right of the centre
    blob = torch.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * 1.2**2)).float()
    y = rotate(blob[None, None], torch.tensor([s]))[0, 0]
    th = 2 * math.pi * s
    # counter-clockwise on screen with v pointing down: R(-th) in (u, v) coordinates
    eu = cu * math.cos(th) + cv * math.sin(th)
    ev = -cu * math.sin(th) + cv * math.cos(th)
    gu, gv = centre_of_mass(y)
    assert gu == pytest.approx(eu, abs=0.05)
    assert gv == pytest.approx(ev, abs=0.05)
    assert float(y.sum()) == pytest.approx(float(blob.sum()), rel=0.02)  # rigid: area kept


def test_rotation_pads_with_zeros():
    y = rotate(torch.ones(1, 1, 8, 8), torch.tensor([0.125]))[0, 0]
    assert float(y[0, 0]) == 0.0 and float(y[-1, -1]) == 0.0
    torch.testing.assert_close(y[3:5, 3:5], torch.ones(2, 2))


def test_batched_rotation_equals_per_example_rotation():
    x = torch.rand(6, 3, 9, 9, generator=gen(3))
    s = torch.rand(6, generator=gen(4)) * 3 - 1  # includes values outside [0, 1): wraps
    batched = rotate(x, s)
    single = torch.cat([rotate(x[i:i + 1], s[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)
    torch.testing.assert_close(rotate(x, s + 1), batched, atol=1e-5, rtol=0)


def test_rotation_keeps_dtype_and_is_differentiable():
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    y = RotationTask().apply(x, torch.tensor([0.1, 0.6], dtype=torch.float64))
    assert y.dtype == torch.float64 and y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert rotate(torch.rand(0, 1, 4, 4), torch.zeros(0)).shape == (0, 1, 4, 4)


def smooth_image(h: int, waves: list[tuple[float, float, float, float]]) -> torch.Tensor:
    u, v = centred_coords(h, h)
    img = sum(a * torch.cos(wu * u + wv * v + phi) for a, wu, wv, phi in waves)
    return img.float()[None, None]


wave = st.tuples(
    st.floats(0.0, 1.0),  # amplitude
    st.floats(-0.5, 0.5),  # angular frequency along u (rad / pixel)
    st.floats(-0.5, 0.5),  # ... along v
    st.floats(0.0, 2 * math.pi),  # phase
)


@settings(max_examples=40, deadline=None)
@given(s=st.floats(0.0, 1.0), waves=st.lists(wave, min_size=1, max_size=3),
       h=st.sampled_from([16, 17, 24]))
def test_rotating_by_s_then_one_minus_s_is_close_to_identity_in_the_central_disc(s, waves, h):
    img = smooth_image(h, waves)
    back = rotate(rotate(img, torch.tensor([s])), torch.tensor([1.0 - s]))
    u, v = centred_coords(h, h)
    # every sample point of both rotations stays inside the image (no padding reaches it)
    disc = (u**2 + v**2).sqrt() <= (h - 1) / 2 - 3
    # bilinear interpolation errs by at most (|f_uu| + |f_vv|) / 8 per pass; two passes
    bound = sum(a * (wu**2 + wv**2) for a, wu, wv, _ in waves) / 4 + 1e-4
    err = (back - img)[0, 0][disc].abs().max()
    assert float(err) <= bound


# -- rotation training angles ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fraction", "bins", "count"),
    [(0.1, 36, 4), (0.25, 36, 9), (1 / 36, 36, 1), (0.001, 36, 1), (1.0, 36, 36),
     (0.5, 5, 3), (0.3, 5, 2), (1.0, 1, 1), (0.6, 7, 4)],
)
@pytest.mark.parametrize("mode", ["subset", "arc"])
def test_number_of_training_angles(fraction, bins, count, mode):
    task = RotationTask(train_fraction=fraction, mode=mode, bins=bins)
    assert len(task.train_indices) == count
    assert len(set(task.train_indices)) == count
    assert all(0 <= j < bins for j in task.train_indices)
    assert int(task.seen(task.eval_conditions()).sum()) == count


def test_subset_is_seeded():
    a = RotationTask(train_fraction=0.5, seed=7)
    assert a.train_indices == RotationTask(train_fraction=0.5, seed=7).train_indices
    assert a.train_indices != RotationTask(train_fraction=0.5, seed=8).train_indices
    assert list(a.train_indices) == sorted(a.train_indices)
    # pinned: the subset must not change across Python / torch versions
    assert RotationTask(train_fraction=0.25).train_indices == (
        11, 15, 16, 17, 20, 21, 27, 29, 30)


def test_subset_is_the_default_mode_and_not_contiguous():
    task = RotationTask(train_fraction=0.25)
    assert task.mode == "subset" and task.bins == 36
    assert task.train_indices != tuple(range(9))


def test_arc_is_contiguous_from_zero_and_ignores_the_seed():
    task = RotationTask(train_fraction=0.25, mode="arc", bins=36, seed=5)
    assert task.train_indices == tuple(range(9))
    assert task.train_indices == RotationTask(0.25, "arc", 36, seed=6).train_indices
    torch.testing.assert_close(task.train_conditions(), torch.arange(9.0) / 36)


@pytest.mark.parametrize("mode", ["subset", "arc"])
def test_train_batch_only_yields_allowed_angles(mode):
    task = RotationTask(train_fraction=0.2, mode=mode, bins=20, seed=3)
    g = gen(11)
    x = torch.rand(64, 1, 8, 8, generator=gen(12))
    drawn = set()
    for _ in range(10):
        x2, s = task.train_batch(x, g)
        assert s.shape == (64,) and s.dtype == x.dtype
        j = s.double() * 20
        assert torch.allclose(j, j.round(), atol=1e-4)
        drawn |= set(j.round().long().tolist())
        assert bool(task.seen(s).all())
        torch.testing.assert_close(x2, rotate(x, s))
    assert drawn == set(task.train_indices)  # uniform draws reach every allowed angle


def test_train_batch_is_reproducible():
    task = RotationTask(train_fraction=0.5, bins=12)
    x = torch.rand(8, 1, 8, 8, generator=gen(0))
    a = task.train_batch(x, gen(5))
    b = task.train_batch(x, gen(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_seen_unseen_split():
    task = RotationTask(train_fraction=0.25, bins=12, seed=4)
    grid = task.eval_conditions()
    torch.testing.assert_close(grid, torch.arange(12.0) / 12)
    seen = task.seen(grid)
    assert seen.dtype == torch.bool
    assert seen.nonzero().flatten().tolist() == list(task.train_indices)
    assert torch.equal(task.seen(grid + 1), seen)  # periodic
    assert torch.equal(task.seen(grid - 3), seen)
    assert not task.seen((torch.arange(12.0) + 0.5) / 12).any()  # between grid angles
    assert task.seen(torch.tensor([[0.0, 1.0]], dtype=torch.float64)).shape == (1, 2)
    assert task.periodic is True


# -- noise -------------------------------------------------------------------------------------
def test_noise_formula_is_exact_for_a_fixed_generator():
    task = NoiseTask(max_noise=0.4)
    x = torch.rand(5, 3, 9, 9, generator=gen(0))
    s = torch.tensor([0.0, 0.1, 0.25, 0.4, 1.0])
    g = gen(21)
    g_copy = clone(g)
    out = task.apply(x, s, g)
    eta = torch.randn(x.shape, generator=g_copy, dtype=x.dtype)
    s4 = s[:, None, None, None]
    torch.testing.assert_close(out, (1 - s4) * x + s4 * eta, rtol=1e-6, atol=1e-7)
    assert torch.equal(out[0], x[0])  # s = 0: clean
    torch.testing.assert_close(out[4], eta[4])  # s = 1: pure noise
    assert out.min() < 0 or out.max() > 1  # not clipped


def test_noise_train_batch_draws_s_then_eta_from_the_generator():
    task = NoiseTask(max_noise=0.3)
    x = torch.rand(16, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    g = gen(3)
    g_copy = clone(g)
    x2, s = task.train_batch(x, g)
    s_expected = torch.rand(16, generator=g_copy, dtype=torch.float64) * 0.3
    eta = torch.randn(x.shape, generator=g_copy, dtype=torch.float64)
    s4 = s_expected[:, None, None, None]
    torch.testing.assert_close(s, s_expected, rtol=0, atol=0)
    torch.testing.assert_close(x2, (1 - s4) * x + s4 * eta, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("S", [0.05, 0.5, 1.0])
def test_noise_levels_lie_in_zero_to_S(S):
    task = NoiseTask(max_noise=S)
    s = task.sample_conditions(4000, gen(1))
    assert s.shape == (4000,)
    assert float(s.min()) >= 0.0 and float(s.max()) <= S
    assert float(s.max()) > 0.95 * S and float(s.min()) < 0.05 * S
    assert bool(task.seen(s).all())


def test_noise_eval_grid_is_seen_and_beyond_S_is_not():
    task = NoiseTask(max_noise=0.3, eval_levels=4)
    grid = task.eval_conditions()
    torch.testing.assert_close(grid, torch.tensor([0.0, 0.1, 0.2, 0.3]))
    assert bool(task.seen(grid).all())
    assert task.seen(torch.tensor([0.31, 0.5, -0.01])).tolist() == [False, False, False]
    assert task.periodic is False


def test_noise_eval_beyond_S_marks_the_extra_levels_unseen():
    task = NoiseTask(max_noise=0.8, eval_levels=11, eval_max=1.0)
    grid = task.eval_conditions(dtype=torch.float64)
    torch.testing.assert_close(grid, torch.arange(11, dtype=torch.float64) / 10)
    assert task.seen(grid).tolist() == [True] * 9 + [False] * 2
    assert task.config()["eval_max"] == 1.0
    assert make_task(**task.config()).eval_max == 1.0
    # default: the training range, all seen
    assert NoiseTask(max_noise=0.8).eval_max == 0.8


@pytest.mark.parametrize("eval_max", [0.5, 1.2, 0.0, float("nan")])
def test_bad_noise_eval_max(eval_max):
    with pytest.raises(ValueError, match="NoiseTask: eval_max must lie in"):
        NoiseTask(max_noise=0.8, eval_max=eval_max)


# -- unconditioned -----------------------------------------------------------------------------
def test_unconditioned_spreads_s_and_leaves_x_unchanged():
    task = UnconditionedTask()
    x = torch.rand(2000, 1, 2, 2, generator=gen(0))
    x2, s = task.train_batch(x, gen(9))
    assert x2 is x
    assert float(s.min()) >= 0.0 and float(s.max()) < 1.0
    counts = torch.histc(s, bins=8, min=0.0, max=1.0)
    assert bool((counts > 150).all())  # 250 expected per eighth
    assert bool(task.seen(s).all()) and task.periodic is True
    torch.testing.assert_close(task.eval_conditions(), torch.arange(8.0) / 8)


# -- configuration and factory -----------------------------------------------------------------
@pytest.mark.parametrize(
    "task",
    [RotationTask(), RotationTask(0.1, "arc", 10, 3), NoiseTask(max_noise=0.25, eval_levels=5),
     UnconditionedTask(eval_points=3)],
    ids=repr,
)
def test_config_is_json_and_rebuilds_the_task(task):
    cfg = json.loads(json.dumps(task.config()))
    assert cfg["name"] == task.name
    rebuilt = make_task(**cfg)
    assert rebuilt == task and type(rebuilt) is type(task)
    assert rebuilt.config() == task.config()
    assert isinstance(rebuilt, Task)


def test_make_task_knows_every_task():
    assert sorted(TASKS) == ["noise", "rotation", "unconditioned"]
    assert isinstance(make_task("rotation"), RotationTask)
    assert isinstance(make_task("noise", max_noise=0.5), NoiseTask)
    assert isinstance(make_task("unconditioned"), UnconditionedTask)


# -- evaluation --------------------------------------------------------------------------------
NUM_CLASSES = 4
BIG = 5.0  # logit of the predicted class; all others are 0


def ce_correct() -> float:
    return -BIG + math.log(math.exp(BIG) + NUM_CLASSES - 1)


def ce_wrong() -> float:
    return math.log(math.exp(BIG) + NUM_CLASSES - 1)


def labelled_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1x9x9 noise images whose centre pixel encodes the label (kept exactly by rotations)."""
    labels = torch.arange(n) % NUM_CLASSES
    images = torch.rand(n, 1, 9, 9, generator=gen(0))
    images[:, 0, 4, 4] = (labels.float() + 1) / 10
    return images, labels


def make_predictor(good_bins: set[int], bins: int):
    """Right on conditions in ``good_bins`` for labels 0 and 1; wrong everywhere else."""
    calls = []

    def predict(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        label = (x[:, 0, 4, 4] * 10 - 1).round().long()
        j = round(float(s[0]) * bins) % bins
        assert bool((s == s[0]).all())
        right = (label < 2) & (j in good_bins)
        pred = torch.where(right, label, (label + 1) % NUM_CLASSES)
        return BIG * torch.nn.functional.one_hot(pred, NUM_CLASSES).to(x.dtype)

    return predict, calls


def test_evaluate_by_condition_gives_the_expected_accuracies_and_losses():
    task = RotationTask(train_fraction=0.5, bins=8, seed=1)
    images, labels = labelled_images(10)  # labels 0..3: 6 of 10 are < 2
    good = {0, 3, 5, 6}
    predict, calls = make_predictor(good, 8)
    result = evaluate_by_condition(predict, images, labels, task, batch_size=3, generator=0)
    assert calls == [3, 3, 3, 1] * 8  # every example, every condition, in batches
    assert result["num_examples"] == 10
    assert result["task"] == task.config()
    seen_bins = set(task.train_indices)
    rows = result["conditions"]
    assert [r["s"] for r in rows] == [j / 8 for j in range(8)]
    expected_acc = [0.6 if j in good else 0.0 for j in range(8)]
    expected_loss = [0.6 * ce_correct() + 0.4 * ce_wrong() if j in good else ce_wrong()
                     for j in range(8)]
    assert [r["accuracy"] for r in rows] == pytest.approx(expected_acc, abs=1e-12)
    assert [r["loss"] for r in rows] == pytest.approx(expected_loss, abs=1e-6)
    assert [r["seen"] for r in rows] == [j in seen_bins for j in range(8)]

    def mean(values):
        return sum(values) / len(values)

    seen_acc = [a for j, a in enumerate(expected_acc) if j in seen_bins]
    unseen_acc = [a for j, a in enumerate(expected_acc) if j not in seen_bins]
    assert result["overall"]["accuracy"] == pytest.approx(mean(expected_acc))
    assert result["overall"]["loss"] == pytest.approx(mean(expected_loss), abs=1e-6)
    assert result["overall"]["count"] == 8
    assert result["seen"]["accuracy"] == pytest.approx(mean(seen_acc))
    assert result["unseen"]["accuracy"] == pytest.approx(mean(unseen_acc))
    assert result["seen"]["count"] + result["unseen"]["count"] == 8
    json.dumps(result)


def test_evaluate_unseen_is_none_when_every_condition_is_seen():
    images, labels = labelled_images(6)
    task = UnconditionedTask(eval_points=4)
    predict, _ = make_predictor({0, 1, 2, 3}, 4)
    result = evaluate_by_condition(predict, images, labels, task, batch_size=4)
    assert result["unseen"] is None
    assert result["seen"] == result["overall"]
    assert [r["accuracy"] for r in result["conditions"]] == pytest.approx([4 / 6] * 4)


def test_evaluate_at_the_seen_conditions_only_gives_their_rows_of_the_full_evaluation():
    task = RotationTask(train_fraction=0.5, bins=8, seed=1)
    images, labels = labelled_images(10)
    predict, calls = make_predictor({0, 3, 5, 6}, 8)
    every = evaluate_by_condition(predict, images, labels, task, batch_size=3, generator=0)
    calls.clear()
    seen = evaluate_by_condition(predict, images, labels, task, batch_size=3, generator=0,
                                 conditions="seen")
    assert calls == [3, 3, 3, 1] * len(task.train_indices)  # the unseen ones cost nothing
    assert seen["conditions"] == [r for r in every["conditions"] if r["seen"]]
    assert seen["seen"] == every["seen"] == seen["overall"]
    assert seen["unseen"] is None
    assert evaluate_by_condition(predict, images, labels, task, batch_size=3, generator=0,
                                 conditions="all") == every


def test_evaluate_at_chosen_conditions_gives_the_grids_rows_in_their_order():
    task = RotationTask(train_fraction=0.5, bins=8, seed=1)
    images, labels = labelled_images(10)
    predict, calls = make_predictor({0, 3, 5, 6}, 8)
    every = evaluate_by_condition(predict, images, labels, task, batch_size=3, generator=0)
    picked = [6, 0, 3, 3]
    calls.clear()
    chosen = evaluate_by_condition(predict, images, labels, task, batch_size=3, generator=0,
                                   at=[j / 8 for j in picked])
    assert calls == [3, 3, 3, 1] * len(picked)
    assert chosen["conditions"] == [every["conditions"][j] for j in picked]
    assert evaluate_by_condition(predict, images, labels, task, batch_size=3, generator=0,
                                 at=[j / 8 for j in range(8)]) == every
    # between grid angles: never seen; "seen" keeps the seen ones of at, in its order
    between = evaluate_by_condition(predict, images, labels, task, at=[0.5 / 8])
    assert [r["seen"] for r in between["conditions"]] == [False]
    seen_bins = [j for j in picked if j in task.train_indices]
    only_seen = evaluate_by_condition(predict, images, labels, task, batch_size=3,
                                      generator=0, at=[j / 8 for j in picked],
                                      conditions="seen")
    assert only_seen["conditions"] == [every["conditions"][j] for j in seen_bins]


@pytest.mark.parametrize(("at", "message"), [
    ([], "at least one condition"),
    ([0.0, float("nan")], "each a finite number"),
    ([0.0, float("inf")], "each a finite number"),
    (["a quarter"], "a sequence of numbers"),
    ("0.5", "a sequence of numbers"),
    (0.5, "a sequence of numbers"),
    ([[0.0, 0.5]], "a sequence of numbers"),
])
def test_evaluate_refuses_conditions_that_are_not_finite_numbers(at, message):
    task = RotationTask(train_fraction=0.5, bins=8, seed=1)
    images, labels = labelled_images(4)
    predict, _ = make_predictor({0}, 8)
    with pytest.raises(ValueError, match=message):
        evaluate_by_condition(predict, images, labels, task, at=at)


def test_evaluate_classifies_once_for_a_point_network_on_images_no_condition_changes():
    """``ignores_s`` on the unconditioned task: one pass, the same numbers as a pass per
    condition; on a task that transforms its images every condition is still evaluated."""
    images, labels = labelled_images(10)
    calls: list[int] = []
    weight = torch.randn(81, NUM_CLASSES, generator=gen(1))

    def point(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return x.flatten(1) @ weight

    task = UnconditionedTask(eval_points=4)
    assert not task.transforms_input
    every = evaluate_by_condition(point, images, labels, task, batch_size=4, generator=0)
    assert calls == [4, 4, 2] * 4
    calls.clear()
    once = evaluate_by_condition(point, images, labels, task, batch_size=4, generator=0,
                                 ignores_s=True)
    assert calls == [4, 4, 2]
    assert once == every
    assert [r["s"] for r in once["conditions"]] == [0.0, 0.25, 0.5, 0.75]

    rotation = RotationTask(train_fraction=0.5, bins=8, seed=1)
    assert rotation.transforms_input
    calls.clear()
    rotated = evaluate_by_condition(point, images, labels, rotation, batch_size=4,
                                    ignores_s=True)
    assert calls == [4, 4, 2] * 8
    assert rotated == evaluate_by_condition(point, images, labels, rotation, batch_size=4)
    with pytest.raises(TypeError, match="ignores_s must be a bool, got str"):
        evaluate_by_condition(point, images, labels, task, ignores_s="yes")


def test_evaluate_refuses_unknown_conditions_and_seen_when_nothing_is_seen(monkeypatch):
    task = RotationTask(train_fraction=0.5, bins=8, seed=1)
    images, labels = labelled_images(4)
    predict, _ = make_predictor({0}, 8)
    with pytest.raises(ValueError, match="conditions must be 'all' or 'seen', got 'unseen'"):
        evaluate_by_condition(predict, images, labels, task, conditions="unseen")
    monkeypatch.setattr(RotationTask, "seen", lambda self, s: torch.zeros(s.shape, dtype=bool))
    with pytest.raises(ValueError, match="conditions = 'seen', but the task 'rotation' "
                                         "evaluates no condition training uses"):
        evaluate_by_condition(predict, images, labels, task, conditions="seen")


def noise_sensitive(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.stack([x.mean(dim=(1, 2, 3)), x[:, 0, 0, 0], x[:, -1, -1, -1]], dim=1) * 10


def test_evaluate_noise_is_reproducible_and_uses_common_noise():
    task = NoiseTask(max_noise=0.5, eval_levels=3)
    images = torch.rand(20, 3, 5, 5, generator=gen(2))
    labels = torch.randint(3, (20,), generator=gen(3))
    g = gen(42)
    state = g.get_state()
    a = evaluate_by_condition(noise_sensitive, images, labels, task, batch_size=7, generator=g)
    assert torch.equal(g.get_state(), state)  # the caller's generator is not advanced
    b = evaluate_by_condition(noise_sensitive, images, labels, task, batch_size=7,
                              generator=gen(42))
    c = evaluate_by_condition(noise_sensitive, images, labels, task, batch_size=7,
                              generator=43)
    assert a == b
    assert a["conditions"] != c["conditions"]
    assert a["conditions"][0] == c["conditions"][0]  # s = 0 is noise-free

    seen_x: list[torch.Tensor] = []

    def record(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        seen_x.append(x.clone())
        return noise_sensitive(x, s)

    evaluate_by_condition(record, images, labels, task, batch_size=20, generator=5)
    clean, half, full_ = seen_x  # s = 0, 0.25, 0.5: the same eta at every level
    eta = (full_ - 0.5 * clean) / 0.5
    torch.testing.assert_close(half, 0.75 * clean + 0.25 * eta, atol=1e-5, rtol=0)


# -- bad inputs --------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_bad_train_fraction(fraction):
    with pytest.raises(ValueError, match=r"train_fraction must lie in \(0, 1\]"):
        RotationTask(train_fraction=fraction)


@pytest.mark.parametrize("bins", [0, -3])
def test_bad_bins(bins):
    with pytest.raises(ValueError, match="bins must be >= 1"):
        RotationTask(bins=bins)


def test_bad_mode():
    with pytest.raises(ValueError, match="unknown mode 'spiral'; valid modes: subset, arc"):
        RotationTask(mode="spiral")


@pytest.mark.parametrize("S", [0.0, -0.5, 1.01, float("nan")])
def test_bad_max_noise(S):
    with pytest.raises(ValueError, match=r"max_noise \(S\) must lie in \(0, 1\]"):
        NoiseTask(max_noise=S)


def test_bad_counts():
    with pytest.raises(ValueError, match="eval_levels must be >= 2"):
        NoiseTask(max_noise=0.5, eval_levels=1)
    with pytest.raises(ValueError, match="eval_points must be >= 1"):
        UnconditionedTask(eval_points=0)
    with pytest.raises(ValueError, match="batch must be >= 0"):
        RotationTask().sample_conditions(-1, gen())


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: RotationTask(bins=2.5), "bins must be an integer"),
        (lambda: RotationTask(bins=True), "bins must be an integer"),
        (lambda: RotationTask(seed=1.5), "seed must be an integer"),
        (lambda: RotationTask(train_fraction="half"), "train_fraction must be a real number"),
        (lambda: NoiseTask(max_noise=None), "max_noise"),
        (lambda: UnconditionedTask(eval_points="8"), "eval_points must be an integer"),
    ],
)
def test_bad_parameter_types(factory, match):
    with pytest.raises(TypeError, match=match):
        factory()


def test_make_task_unknown_name_lists_valid_names():
    with pytest.raises(ValueError,
                       match="unknown task 'spin'; valid names: noise, rotation, unconditioned"):
        make_task("spin")
    with pytest.raises(TypeError, match="does not accept angle; its parameters are: "
                                        "train_fraction, mode, bins, seed"):
        make_task("rotation", angle=3)
    with pytest.raises(ValueError, match="bins must be >= 1"):
        make_task("rotation", bins=0)


@pytest.mark.parametrize("task", [RotationTask(), NoiseTask(0.5), UnconditionedTask()], ids=repr)
def test_bad_apply_inputs(task):
    x = torch.rand(3, 1, 8, 8)
    with pytest.raises(ValueError, match=r"s must have shape \[B\] = \[3\]"):
        task.apply(x, torch.zeros(2))
    with pytest.raises(ValueError, match=r"s must have shape \[B\] = \[3\]"):
        task.apply(x, torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"x must have shape \[B, C, H, W\]"):
        task.apply(x[0], torch.zeros(1))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        task.apply((x * 255).to(torch.uint8), torch.zeros(3))
    with pytest.raises(TypeError, match="s must be a floating-point tensor"):
        task.apply(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="s holds NaN or inf"):
        task.apply(x, torch.tensor([0.0, float("nan"), 0.1]))


def test_noise_level_outside_unit_interval():
    with pytest.raises(ValueError, match=r"noise levels s must lie in \[0, 1\], got s\[1\]=1.5"):
        NoiseTask(0.5).apply(torch.rand(2, 1, 4, 4), torch.tensor([0.2, 1.5]))


def test_bad_evaluation_inputs():
    task = UnconditionedTask(eval_points=2)
    images, labels = labelled_images(4)
    predict, _ = make_predictor({0}, 2)
    with pytest.raises(ValueError, match=r"labels must have shape \[N\] = \[4\]"):
        evaluate_by_condition(predict, images, labels[:3], task)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        evaluate_by_condition(predict, images, labels.float(), task)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        evaluate_by_condition(predict, images, labels, task, batch_size=0)
    with pytest.raises(ValueError, match="images is empty"):
        evaluate_by_condition(predict, images[:0], labels[:0], task)
    with pytest.raises(ValueError, match=r"predict must return logits of shape \[4, num_classes\]"):
        evaluate_by_condition(lambda x, s: x.flatten(1)[:, :3, None], images, labels, task)
    with pytest.raises(TypeError, match="task must be a Task"):
        evaluate_by_condition(predict, images, labels, "rotation")
    with pytest.raises(ValueError, match="generator"):
        evaluate_by_condition(predict, images, labels, task, generator=-1)


def test_docstring_examples_run():
    result = doctest.testmod(tasks_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
