r"""Conditioning tasks: turn clean images into ``(x', s)`` pairs with a condition ``s`` in [0, 1].

A task is a family of input transformations indexed by a condition ``s``. A
network conditioned on ``s`` (through its weight manifold, or a baseline that
sees ``s`` as an input) is trained on ``(x', s)`` pairs and evaluated on a fixed
grid of conditions, some of which may never have been seen during training.

Three tasks cover the paper's experiments:

* :class:`RotationTask` (§3.1, Fig. 2): the image is rotated by the angle
  :math:`2\pi s`; training uses only a subset of a fixed grid of angles and
  evaluation covers the whole grid, so generalisation to unseen angles can be
  measured.
* :class:`NoiseTask` (§3.2, Fig. 3): the image is mixed with Gaussian noise,
  :math:`\hat x = (1 - s)\, x + s\, \eta`, with :math:`s \sim U(0, S)`.
* :class:`UnconditionedTask` (Appendix E, Fig. 4 b–c): the image is left as it
  is and ``s`` is a uniformly random point of the manifold per example.

:func:`make_task` builds a task by name; :func:`evaluate_by_condition` measures
accuracy and loss on every evaluation condition of a task.

Images are float tensors of shape ``[B, C, H, W]`` (values in [0, 1] for clean
images); conditions are float tensors of shape ``[B]``. Every transformation is
batched and vectorised: each example may have its own condition.
"""

from __future__ import annotations

import abc
import inspect
import math
import numbers
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "TASKS",
    "NoiseTask",
    "RotationTask",
    "Task",
    "UnconditionedTask",
    "evaluate_by_condition",
    "make_task",
    "rotate",
]

ROTATION_MODES = ("subset", "arc")
"""Ways :class:`RotationTask` chooses its training angles."""

_GRID_TOL = 1e-3
"""How far (in units of one angular bin) a condition may lie from a grid angle and still
count as that angle in :meth:`RotationTask.seen`."""

_RANGE_RTOL = 1e-6
"""Relative slack on the upper end of the noise range in :meth:`NoiseTask.seen`, so that
``S`` rounded to float32 still counts as inside ``[0, S]``."""


# -- validation helpers -------------------------------------------------------------------
def _check_int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    return int(value)


def _check_fraction(value: object, what: str) -> float:
    """A real number in the half-open interval (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number in (0, 1], got {value!r}")
    v = float(value)
    if not 0.0 < v <= 1.0:  # also rejects NaN
        raise ValueError(f"{what} must lie in (0, 1], got {v!r}")
    return v


def _check_images(x: object, who: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}: x must be a tensor of images [B, C, H, W], got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{who}: x must be a floating-point tensor, got dtype {x.dtype}; "
            "convert it with x.float()"
        )
    if x.ndim != 4:
        raise ValueError(f"{who}: x must have shape [B, C, H, W], got shape {list(x.shape)}")
    return x


def _check_conditions(s: object, batch: int, who: str) -> Tensor:
    if not isinstance(s, Tensor):
        raise TypeError(f"{who}: s must be a tensor of conditions [B], got {type(s).__name__}")
    if not s.is_floating_point():
        raise TypeError(
            f"{who}: s must be a floating-point tensor, got dtype {s.dtype}; "
            "convert it with s.float()"
        )
    if s.ndim != 1 or s.shape[0] != batch:
        raise ValueError(
            f"{who}: s must have shape [B] = [{batch}] (one condition per image), "
            f"got shape {list(s.shape)}"
        )
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"{who}: s holds NaN or inf")
    return s


def _check_condition_values(s: object, who: str) -> Tensor:
    """Any-shape floating tensor (for :meth:`Task.seen`)."""
    if not isinstance(s, Tensor) or not s.is_floating_point():
        raise TypeError(f"{who}: s must be a floating-point tensor, got {s!r}")
    return s


def _generator_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


# -- the base class -------------------------------------------------------------------------
class Task(abc.ABC):
    r"""A conditioning task: a family of transformations of images indexed by ``s``.

    Subclasses define how training conditions are drawn
    (:meth:`sample_conditions`), the transformation at given conditions
    (:meth:`apply`), the grid of conditions that evaluation covers
    (:meth:`eval_conditions`), which conditions training uses (:meth:`seen`)
    and their parameters (:meth:`config`). A training batch is

    .. math::

        (x', s) = (\mathrm{apply}(x, s), s), \qquad s_i \sim p_{\mathrm{train}}
        \ \text{independently per example.}

    Attributes:
        name: registry name of the task (the key in :data:`TASKS`).
        periodic: whether the condition wraps (``s`` and ``s + 1`` are the same
            condition), which is the case for rotation angles.
        transforms_input: whether :meth:`apply` depends on ``s`` (``False`` only
            where it returns the images unchanged at every condition).

    Examples:
        >>> import torch
        >>> task = make_task("rotation", train_fraction=0.25, bins=8)
        >>> x = torch.rand(4, 1, 8, 8)
        >>> x2, s = task.train_batch(x, torch.Generator().manual_seed(0))
        >>> x2.shape, s.shape, bool(task.seen(s).all())
        (torch.Size([4, 1, 8, 8]), torch.Size([4]), True)
    """

    name: str
    periodic: bool
    transforms_input: bool = True

    @abc.abstractmethod
    def sample_conditions(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw training conditions, one per example.

        Args:
            batch: number of conditions ``B`` (>= 0).
            generator: source of randomness (the global RNG when ``None``); the
                result lies on the generator's device.
            dtype: floating dtype of the result.

        Returns:
            Tensor of shape ``[B]`` with values in [0, 1].

        Raises:
            TypeError: if ``batch`` is not an integer.
            ValueError: if ``batch`` is negative.
        """

    @abc.abstractmethod
    def apply(self, x: Tensor, s: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Transform each image ``x[i]`` at its condition ``s[i]``.

        Args:
            x: floating images of shape ``[B, C, H, W]``.
            s: floating conditions of shape ``[B]``.
            generator: source of randomness for stochastic transformations
                (ignored by deterministic ones; the global RNG when ``None``).

        Returns:
            Transformed images, shape, dtype and device of ``x``.

        Raises:
            TypeError: if ``x`` or ``s`` is not a floating-point tensor.
            ValueError: if the shapes do not match or ``s`` is outside the domain.
        """

    @abc.abstractmethod
    def eval_conditions(self, *, dtype: torch.dtype = torch.float32) -> Tensor:
        """The grid of ``K`` conditions that evaluation covers, shape ``[K]``."""

    @abc.abstractmethod
    def seen(self, s: Tensor) -> Tensor:
        """Whether each condition is among those used in training.

        Args:
            s: floating tensor of conditions, any shape.

        Returns:
            Boolean tensor of the shape and device of ``s``.

        Raises:
            TypeError: if ``s`` is not a floating-point tensor.
        """

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable parameters: ``{"name": ..., **constructor arguments}``.

        ``make_task(**task.config())`` rebuilds an equal task.
        """

    def train_batch(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw one training condition per image and transform the images.

        The generator is used first for the conditions, then (for stochastic
        tasks) for the transformation.

        Args:
            x: clean floating images of shape ``[B, C, H, W]``.
            generator: source of randomness (the global RNG when ``None``).

        Returns:
            ``(x', s)``: transformed images like ``x`` and conditions of shape
            ``[B]`` with the dtype and device of ``x``.

        Raises:
            TypeError: if ``x`` is not a floating-point tensor.
            ValueError: if ``x`` is not of shape ``[B, C, H, W]``.

        Examples:
            >>> import torch
            >>> task = NoiseTask(max_noise=0.5)
            >>> x2, s = task.train_batch(torch.rand(3, 3, 4, 4), torch.Generator().manual_seed(1))
            >>> bool(((s >= 0) & (s <= 0.5)).all())
            True
        """
        x = _check_images(x, f"{type(self).__name__}.train_batch")
        s = self.sample_conditions(x.shape[0], generator, dtype=x.dtype).to(x.device)
        return self.apply(x, s, generator), s

    def _check_batch(self, batch: object) -> int:
        return _check_int(batch, f"{type(self).__name__}.sample_conditions: batch", 0)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({params})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.config() == self.config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(repr(self))


# -- rotation -------------------------------------------------------------------------------
def rotate(x: Tensor, s: Tensor) -> Tensor:
    r"""Rotate each image counter-clockwise about its centre by the angle :math:`2\pi s_i`.

    "Counter-clockwise" is as the image is displayed (row 0 at the top): a
    quarter turn (``s = 0.25``) moves the top edge to the left, exactly like
    ``torch.rot90(x, k=1, dims=(-2, -1))``. In pixel coordinates
    :math:`(u, v)` (column to the right, row downwards) measured from the image
    centre, output pixel :math:`p` samples the input at

    .. math::

        R(\theta)\, p, \qquad
        R(\theta) = \begin{pmatrix} \cos\theta & -\sin\theta \\
                                    \sin\theta & \cos\theta \end{pmatrix},
        \qquad \theta = 2\pi s .

    The rotation is rigid in pixel units also for non-square images (the
    normalised coordinates of :func:`torch.nn.functional.affine_grid` are
    rescaled by the aspect ratio). It uses one batched ``affine_grid`` +
    ``grid_sample`` call: bilinear interpolation, zeros padding (corners
    rotated in from outside the image are 0), ``align_corners=False``. The
    angle is computed in float64 from ``s mod 1``, so ``s = 0`` (or any integer)
    is the identity up to rounding.

    Args:
        x: floating images of shape ``[B, C, H, W]``.
        s: floating conditions of shape ``[B]`` (any real value; wraps mod 1).

    Returns:
        Rotated images with the shape, dtype and device of ``x``; differentiable
        with respect to ``x``.

    Raises:
        TypeError: if ``x`` or ``s`` is not a floating-point tensor.
        ValueError: if the shapes do not match or ``s`` holds NaN/inf.

    Examples:
        >>> import torch
        >>> x = torch.arange(9.0).reshape(1, 1, 3, 3)
        >>> y = rotate(x, torch.tensor([0.25]))
        >>> torch.allclose(y, torch.rot90(x, 1, (-2, -1)), atol=1e-5)
        True
    """
    x = _check_images(x, "rotate")
    b, _, h, w = x.shape
    s = _check_conditions(s, b, "rotate")
    if b == 0:
        return x.clone()
    angle = 2.0 * math.pi * torch.remainder(s.detach().to(torch.float64), 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    # normalised coordinates: u_n = u / (W/2), v_n = v / (H/2)  (align_corners=False)
    theta = torch.stack(
        [
            torch.stack([cos, -sin * (h / w), zero], dim=1),
            torch.stack([sin * (w / h), cos, zero], dim=1),
        ],
        dim=1,
    ).to(dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _subset_indices(bins: int, count: int, seed: int) -> list[int]:
    """A seeded random ``count``-subset of ``range(bins)``, sorted.

    A partial Fisher–Yates shuffle driven only by ``random.Random(seed).random()``,
    whose output Python guarantees not to change across versions, so the same
    seed gives the same angles on every platform and library version.
    """
    rng = random.Random(seed)
    pool = list(range(bins))
    for i in range(count):
        j = i + min(int(rng.random() * (bins - i)), bins - i - 1)
        pool[i], pool[j] = pool[j], pool[i]
    return sorted(pool[:count])


class RotationTask(Task):
    r"""Rotated images, conditioned on the rotation angle (paper §3.1, Fig. 2).

    The condition ``s`` encodes the angle :math:`\theta = 2\pi s` by which the
    image is rotated counter-clockwise about its centre (see :func:`rotate`);
    it is periodic. The circle is discretised into ``bins`` angles

    .. math::

        s_j = j / \mathrm{bins}, \qquad j = 0, \dots, \mathrm{bins} - 1,

    of which ``k = max(1, round(train_fraction · bins))`` (rounded half up) are
    used for training:

    * ``mode="subset"`` (default): a seeded random subset of ``k`` of the
      angles, scattered around the circle;
    * ``mode="arc"``: the contiguous run :math:`s_0, \dots, s_{k-1}` starting
      at angle 0 (an extrapolation test).

    Training draws ``s`` uniformly among the ``k`` allowed angles; evaluation
    covers all ``bins`` angles and :meth:`seen` tells the training angles
    apart.

    **Which mode Fig. 2 used.** The paper does not say explicitly; its wording
    points to ``"subset"``, which is therefore the default. §3.1: "we only
    sample a fixed subset of the possible angles during training (e.g. 10% of
    :math:`[0,2\pi]`)" and "report the test accuracy as a function of the
    *sparsity* of the training conditions"; the Fig. 2a caption: "We sample a
    *sparse subset* of the possible conditions"; the results: the manifold
    "generalizes to unseen angles even at extremely sparse sampling of
    conditions" while "the baselines lose performance as the training
    conditions become *sparser*". "Sparse"/"sparsity" describes conditions
    scattered over the circle with gaps between them (interpolation between
    nearby seen angles), not a single contiguous arc, and "a fixed subset of
    the possible angles" matches a subset of a discrete set of angles. The one
    phrase that could suggest an arc is "10% of :math:`[0,2\pi]`", which reads
    as a measure of the circle and fits either mode. Moreover, with an arc
    covering 10% of the circle, unseen angles up to about 160° away from any training
    angle would have to be extrapolated, which the paper's claim that the
    manifold "maintains its peak performance for a wider range of sampling
    sparsities" makes implausible. The number of bins and the seeding are not
    given in the paper; ``bins=36`` (10° steps) is this library's choice.

    Args:
        train_fraction: fraction of the ``bins`` angles used in training, in
            (0, 1].
        mode: ``"subset"`` or ``"arc"``.
        bins: number of angles the circle is discretised into (>= 1).
        seed: seed of the random subset (ignored by ``"arc"``); the subset is
            reproducible across platforms and library versions.

    Raises:
        TypeError: if a parameter has the wrong type.
        ValueError: if ``train_fraction`` is outside (0, 1], ``bins < 1`` or
            ``mode`` is unknown.

    Examples:
        >>> task = RotationTask(train_fraction=0.25, mode="arc", bins=8)
        >>> task.train_conditions().tolist()
        [0.0, 0.125]
        >>> task.seen(task.eval_conditions()).tolist()
        [True, True, False, False, False, False, False, False]
    """

    name = "rotation"
    periodic = True

    def __init__(
        self,
        train_fraction: float = 1.0,
        mode: str = "subset",
        bins: int = 36,
        seed: int = 0,
    ) -> None:
        self.train_fraction = _check_fraction(train_fraction, "RotationTask: train_fraction")
        if not isinstance(mode, str) or mode not in ROTATION_MODES:
            raise ValueError(
                f"RotationTask: unknown mode {mode!r}; valid modes: {', '.join(ROTATION_MODES)}"
            )
        self.mode = mode
        self.bins = _check_int(bins, "RotationTask: bins", 1)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"RotationTask: seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        count = max(1, min(self.bins, math.floor(self.train_fraction * self.bins + 0.5)))
        if mode == "arc":
            indices = list(range(count))
        else:
            indices = _subset_indices(self.bins, count, self.seed)
        self.train_indices: tuple[int, ...] = tuple(indices)
        """Indices ``j`` of the training angles ``s_j = j / bins``, sorted."""
        self._mask = torch.zeros(self.bins, dtype=torch.bool)
        self._mask[list(indices)] = True
        self._indices = torch.tensor(indices, dtype=torch.long)

    def train_conditions(self, *, dtype: torch.dtype = torch.float32) -> Tensor:
        """The ``k`` training angles ``s_j = j / bins`` (sorted), shape ``[k]``."""
        return self._indices.to(dtype) / self.bins

    def sample_conditions(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``s`` uniformly among the training angles, one per example.

        See :meth:`Task.sample_conditions`.
        """
        batch = self._check_batch(batch)
        device = _generator_device(generator)
        pick = torch.randint(
            len(self.train_indices), (batch,), generator=generator, device=device
        )
        return self._indices.to(device)[pick].to(dtype) / self.bins

    def apply(self, x: Tensor, s: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Rotate ``x[i]`` by ``2π s[i]`` (see :func:`rotate`); ``generator`` is unused."""
        return rotate(x, s)

    def eval_conditions(self, *, dtype: torch.dtype = torch.float32) -> Tensor:
        """All ``bins`` grid angles ``j / bins``, shape ``[bins]``."""
        return torch.arange(self.bins, dtype=torch.float64).to(dtype) / self.bins

    def seen(self, s: Tensor) -> Tensor:
        """Whether each ``s`` (mod 1) is one of the training angles.

        A condition counts as grid angle ``j`` when it lies within
        ``1e-3 / bins`` of ``j / bins`` (mod 1); conditions between grid angles
        are never seen. See :meth:`Task.seen`.
        """
        s = _check_condition_values(s, "RotationTask.seen")
        t = torch.remainder(s.detach().to(torch.float64), 1.0) * self.bins
        j = torch.round(t)
        on_grid = (t - j).abs() <= _GRID_TOL
        j = torch.remainder(j, self.bins).long()
        return on_grid & self._mask.to(s.device)[j]

    def config(self) -> dict[str, Any]:
        """See :meth:`Task.config`."""
        return {
            "name": self.name,
            "train_fraction": self.train_fraction,
            "mode": self.mode,
            "bins": self.bins,
            "seed": self.seed,
        }


# -- noise ----------------------------------------------------------------------------------
class NoiseTask(Task):
    r"""Images mixed with Gaussian noise, conditioned on the noise level (paper §3.2, Fig. 3).

    Training draws :math:`s \sim U(0, S)` per example, ``S = max_noise``, and
    the input becomes

    .. math::

        \hat x = (1 - s)\, x + s\, \eta, \qquad \eta \sim \mathcal N(0, I),

    without clipping (the paper does not clip, so :math:`\hat x` leaves
    [0, 1]). ``η`` is drawn as
    ``torch.randn(x.shape, generator=generator, dtype=x.dtype,
    device=generator.device)`` and then moved to ``x.device``.
    Evaluation covers ``eval_levels`` evenly spaced levels in
    :math:`[0, S_\mathrm{eval}]` (endpoints included), ``S_eval = eval_max``
    (default ``S``). The training support is [0, S], so the levels up to ``S``
    are seen and those in (S, 1] are unseen: noisier inputs than any in
    training, an out-of-distribution test of the conditioning.

    Args:
        max_noise: the maximum training noise level ``S``, in (0, 1].
        eval_levels: number of evaluation levels (>= 2).
        eval_max: the largest evaluation level, in [S, 1] (default ``S``).

    Raises:
        TypeError: if a parameter has the wrong type.
        ValueError: if ``max_noise`` is outside (0, 1], ``eval_levels < 2`` or
            ``eval_max`` is outside [S, 1].

    Examples:
        >>> import torch
        >>> task = NoiseTask(max_noise=0.5, eval_levels=3)
        >>> task.eval_conditions().tolist()
        [0.0, 0.25, 0.5]
        >>> x = torch.rand(2, 1, 4, 4)
        >>> torch.equal(task.apply(x, torch.zeros(2)), x)
        True
        >>> task = NoiseTask(max_noise=0.5, eval_levels=5, eval_max=1.0)
        >>> task.seen(task.eval_conditions()).tolist()
        [True, True, True, False, False]
    """

    name = "noise"
    periodic = False

    def __init__(self, max_noise: float, eval_levels: int = 11,
                 eval_max: float | None = None) -> None:
        self.max_noise = _check_fraction(max_noise, "NoiseTask: max_noise (S)")
        self.eval_levels = _check_int(eval_levels, "NoiseTask: eval_levels", 2)
        if eval_max is None:
            self.eval_max = self.max_noise
        else:
            self.eval_max = _check_fraction(eval_max, "NoiseTask: eval_max")
            if self.eval_max < self.max_noise:
                raise ValueError(
                    f"NoiseTask: eval_max must lie in [S, 1] = [{self.max_noise!r}, 1], "
                    f"got {self.eval_max!r}"
                )

    def sample_conditions(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``s ~ U(0, S)`` per example. See :meth:`Task.sample_conditions`."""
        batch = self._check_batch(batch)
        u = torch.rand(batch, generator=generator, dtype=dtype,
                       device=_generator_device(generator))
        return u * self.max_noise

    def apply(self, x: Tensor, s: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Return ``(1 - s) x + s η`` with fresh noise ``η ~ N(0, I)``; see :meth:`Task.apply`.

        Raises:
            ValueError: additionally, if some ``s`` lies outside [0, 1].
        """
        x = _check_images(x, "NoiseTask.apply")
        s = _check_conditions(s, x.shape[0], "NoiseTask.apply")
        bad = (s < 0) | (s > 1)
        if bool(bad.any()):
            first = int(bad.nonzero()[0])
            raise ValueError(
                f"NoiseTask.apply: noise levels s must lie in [0, 1], got s[{first}]="
                f"{float(s[first]):.6g}"
            )
        eta = torch.randn(x.shape, generator=generator, dtype=x.dtype,
                          device=_generator_device(generator)).to(x.device)
        s4 = s.to(dtype=x.dtype, device=x.device)[:, None, None, None]
        return (1 - s4) * x + s4 * eta

    def eval_conditions(self, *, dtype: torch.dtype = torch.float32) -> Tensor:
        """``eval_levels`` evenly spaced levels from 0 to ``eval_max``, shape ``[eval_levels]``."""
        return torch.linspace(0.0, self.eval_max, self.eval_levels, dtype=torch.float64).to(dtype)

    def seen(self, s: Tensor) -> Tensor:
        """Whether ``0 <= s <= S`` (the training support). See :meth:`Task.seen`."""
        s = _check_condition_values(s, "NoiseTask.seen")
        s64 = s.detach().to(torch.float64)
        return (s64 >= 0) & (s64 <= self.max_noise * (1 + _RANGE_RTOL))

    def config(self) -> dict[str, Any]:
        """See :meth:`Task.config`."""
        return {"name": self.name, "max_noise": self.max_noise, "eval_levels": self.eval_levels,
                "eval_max": self.eval_max}


# -- no conditioning --------------------------------------------------------------------------
class UnconditionedTask(Task):
    r"""Untransformed images at a random point of the manifold (Appendix E, Fig. 4 b–c).

    The condition carries no information about the input: each example gets
    :math:`s \sim U(0, 1)` and :meth:`apply` is the identity, so that the whole
    (periodic) manifold is trained on the same objective. Evaluation covers
    ``eval_points`` evenly spaced points

    .. math::

        s_j = j / \mathrm{eval\_points}, \qquad j = 0, \dots, \mathrm{eval\_points} - 1,

    all of which are seen.

    Args:
        eval_points: number of evaluation points (>= 1).

    Raises:
        TypeError: if ``eval_points`` is not an integer.
        ValueError: if ``eval_points < 1``.

    Examples:
        >>> UnconditionedTask(eval_points=4).eval_conditions().tolist()
        [0.0, 0.25, 0.5, 0.75]
    """

    name = "unconditioned"
    periodic = True
    transforms_input = False

    def __init__(self, eval_points: int = 8) -> None:
        self.eval_points = _check_int(eval_points, "UnconditionedTask: eval_points", 1)

    def sample_conditions(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw ``s ~ U(0, 1)`` per example. See :meth:`Task.sample_conditions`."""
        batch = self._check_batch(batch)
        return torch.rand(batch, generator=generator, dtype=dtype,
                          device=_generator_device(generator))

    def apply(self, x: Tensor, s: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Return ``x`` itself (no copy); ``s`` is validated, ``generator`` unused."""
        x = _check_images(x, "UnconditionedTask.apply")
        _check_conditions(s, x.shape[0], "UnconditionedTask.apply")
        return x

    def eval_conditions(self, *, dtype: torch.dtype = torch.float32) -> Tensor:
        """``j / eval_points`` for ``j < eval_points``, shape ``[eval_points]``."""
        return torch.arange(self.eval_points, dtype=torch.float64).to(dtype) / self.eval_points

    def seen(self, s: Tensor) -> Tensor:
        """All ``True``: training covers the whole circle. See :meth:`Task.seen`."""
        s = _check_condition_values(s, "UnconditionedTask.seen")
        return torch.ones_like(s, dtype=torch.bool)

    def config(self) -> dict[str, Any]:
        """See :meth:`Task.config`."""
        return {"name": self.name, "eval_points": self.eval_points}


# -- factory ----------------------------------------------------------------------------------
TASKS: dict[str, type[Task]] = {
    RotationTask.name: RotationTask,
    NoiseTask.name: NoiseTask,
    UnconditionedTask.name: UnconditionedTask,
}
"""The tasks :func:`make_task` knows, by name."""


def make_task(name: str, **kwargs: Any) -> Task:
    """Build a task by name.

    Args:
        name: one of ``"rotation"``, ``"noise"``, ``"unconditioned"`` (the keys
            of :data:`TASKS`).
        **kwargs: the task's constructor arguments.

    Returns:
        The task. ``make_task(**task.config())`` rebuilds an equal task.

    Raises:
        ValueError: if ``name`` is unknown (the message lists the valid names)
            or a parameter value is invalid.
        TypeError: if an argument is not accepted by the task (the message
            lists those it accepts) or has the wrong type.

    Examples:
        >>> make_task("rotation", train_fraction=0.5, bins=4, mode="arc")
        RotationTask(train_fraction=0.5, mode='arc', bins=4, seed=0)
        >>> make_task("noise", max_noise=0.3).config()
        {'name': 'noise', 'max_noise': 0.3, 'eval_levels': 11, 'eval_max': 0.3}
    """
    try:
        cls = TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown task {name!r}; valid names: {', '.join(sorted(TASKS))}"
        ) from None
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"task {name!r} does not accept {', '.join(unknown)}; "
            f"its parameters are: {', '.join(accepted)}"
        )
    return cls(**kwargs)


# -- evaluation -------------------------------------------------------------------------------
def evaluate_by_condition(
    predict: Callable[[Tensor, Tensor], Tensor],
    images: Tensor,
    labels: Tensor,
    task: Task,
    batch_size: int = 256,
    generator: torch.Generator | int | None = None,
    conditions: str = "all",
    ignores_s: bool = False,
    at: Sequence[float] | None = None,
) -> dict[str, Any]:
    r"""Accuracy and mean cross-entropy on every evaluation condition of a task (or at
    the conditions ``at``).

    For each condition :math:`s_k` of ``task.eval_conditions()`` (or of ``at``;
    with ``conditions = "seen"``: each one training uses) the whole set is
    transformed at :math:`s_k` and classified:

    .. math::

        \mathrm{acc}_k = \frac{1}{N} \sum_{i=1}^{N}
            [\arg\max_c\, f(x'_i, s_k)_c = y_i], \qquad
        \mathrm{loss}_k = \frac{1}{N} \sum_{i=1}^{N}
            \mathrm{CE}(f(x'_i, s_k), y_i),

    with :math:`x'_i = \mathrm{apply}(x_i, s_k)`. The summary means are
    unweighted means over conditions (equal to pooled means, since every
    condition sees all ``N`` examples).

    Stochastic tasks draw their noise from a private generator that is reset
    to the same starting state for every condition (common random numbers):
    every condition sees the same :math:`\eta` per example, and two calls with
    the same ``generator`` give identical results. A ``torch.Generator``
    argument is only read (its state is copied), never advanced.

    ``predict`` is called under :func:`torch.no_grad`; put a model in eval mode
    before wrapping it. Where ``predict`` ignores ``s`` (``ignores_s``, a point
    network) and the task leaves the images unchanged at every condition
    (``task.transforms_input`` is ``False``), every condition gives the same
    numbers: the set is classified once, at the first condition, and its
    numbers are copied to the others (identical to classifying it at each).

    Args:
        predict: ``predict(x', s) -> logits``, with ``x'`` of shape
            ``[b, C, H, W]``, ``s`` of shape ``[b]`` (dtype and device of
            ``images``) and logits of shape ``[b, num_classes]``.
        images: clean floating images of shape ``[N, C, H, W]`` (N >= 1).
        labels: integer class labels of shape ``[N]``.
        task: the task whose evaluation conditions are covered.
        batch_size: examples per call to ``predict`` (>= 1).
        generator: seed (``int``) or generator for the task's randomness;
            ``None`` means seed 0.
        conditions: ``"all"`` or ``"seen"``: evaluate at the seen conditions
            only (``overall`` is then their mean and ``unseen`` is ``None``).
            Each seen condition gives the same numbers as with ``"all"``.
        ignores_s: ``predict``'s output does not depend on ``s`` (see above);
            with a task that transforms its input it changes nothing.
        at: evaluate at these conditions, in this order, instead of the task's
            grid (``None``: ``task.eval_conditions()``); each is marked seen or
            unseen by ``task.seen``, and one given twice counts twice in the means.

    Returns:
        A JSON-serialisable dict::

            {"task": task.config(), "num_examples": N,
             "conditions": [{"s": float, "accuracy": float, "loss": float,
                             "seen": bool}, ...],
             "overall": {"accuracy": float, "loss": float, "count": int},
             "seen": {...} or None,    # mean over seen conditions
             "unseen": {...} or None}  # None when every condition is seen

    Raises:
        TypeError: if ``images``/``labels`` have the wrong dtype, ``task`` is
            not a :class:`Task` or ``ignores_s`` is not a bool.
        ValueError: if shapes do not match, the set is empty, ``batch_size < 1``,
            ``conditions`` is neither ``"all"`` nor ``"seen"``, it is ``"seen"``
            and the task evaluates no seen condition, ``at`` is empty or holds a
            value that is not a finite number, or ``predict`` returns logits of
            the wrong shape.

    Examples:
        >>> import torch
        >>> task = UnconditionedTask(eval_points=2)
        >>> images, labels = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 0, 1, 1])
        >>> always_one = lambda x, s: torch.tensor([[0.0, 1.0]]).expand(len(x), 2)
        >>> r = evaluate_by_condition(always_one, images, labels, task, batch_size=2)
        >>> [c["accuracy"] for c in r["conditions"]], r["unseen"]
        ([0.6, 0.6], None)
    """
    if not isinstance(task, Task):
        raise TypeError(f"evaluate_by_condition: task must be a Task, got {type(task).__name__}")
    images = _check_images(images, "evaluate_by_condition")
    n = images.shape[0]
    if n == 0:
        raise ValueError("evaluate_by_condition: images is empty (N = 0)")
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex():
        raise TypeError("evaluate_by_condition: labels must be an integer tensor of class indices")
    if labels.shape != (n,):
        raise ValueError(
            f"evaluate_by_condition: labels must have shape [N] = [{n}], "
            f"got shape {list(labels.shape)}"
        )
    batch_size = _check_int(batch_size, "evaluate_by_condition: batch_size", 1)
    if not isinstance(ignores_s, bool):
        raise TypeError(f"evaluate_by_condition: ignores_s must be a bool, "
                        f"got {type(ignores_s).__name__}")
    if generator is None:
        generator = 0
    if isinstance(generator, torch.Generator):
        device, state = generator.device, generator.get_state()
    else:
        seed = _check_int(generator, "evaluate_by_condition: generator (seed)", 0)
        device, state = torch.device("cpu"), torch.Generator().manual_seed(seed).get_state()

    labels = labels.to(device=images.device, dtype=torch.long)
    if conditions not in ("all", "seen"):
        raise ValueError(f"evaluate_by_condition: conditions must be 'all' or 'seen', "
                         f"got {conditions!r}")
    if at is None:
        grid = task.eval_conditions(dtype=torch.float64)
    else:
        try:
            if isinstance(at, (str, bytes)):  # iterable, but not a sequence of numbers
                raise TypeError(at)
            values = list(at)
            grid = torch.tensor([float(v) for v in values], dtype=torch.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"evaluate_by_condition: at must be a sequence of numbers, "
                             f"got {at!r}") from err
        if grid.numel() == 0 or not bool(torch.isfinite(grid).all()):
            raise ValueError(f"evaluate_by_condition: at must hold at least one condition, "
                             f"each a finite number, got {values!r}")
    seen = task.seen(grid)
    if conditions == "seen":
        if not bool(seen.any()):
            raise ValueError(f"evaluate_by_condition: conditions = 'seen', but the task "
                             f"{task.name!r} evaluates no condition training uses")
        grid, seen = grid[seen], seen[seen]
    records: list[dict[str, Any]] = []
    # a point network on images no condition changes: one pass answers for every condition
    same = ignores_s and not task.transforms_input
    with torch.no_grad():
        for s_k, seen_k in zip(grid.tolist(), seen.tolist()):
            if same and records:
                records.append({**records[0], "s": float(s_k), "seen": bool(seen_k)})
                continue
            gen = torch.Generator(device=device)
            gen.set_state(state)
            correct, loss_sum = 0, 0.0
            for start in range(0, n, batch_size):
                x = images[start:start + batch_size]
                y = labels[start:start + batch_size]
                s = torch.full((x.shape[0],), s_k, dtype=images.dtype, device=images.device)
                logits = predict(task.apply(x, s, gen), s)
                if not isinstance(logits, Tensor):
                    raise ValueError(
                        f"evaluate_by_condition: predict must return a tensor of logits, "
                        f"got {type(logits).__name__}"
                    )
                if logits.ndim != 2 or logits.shape[0] != len(x):
                    got = list(logits.shape)
                    raise ValueError(
                        f"evaluate_by_condition: predict must return logits of shape "
                        f"[{len(x)}, num_classes], got {got}"
                    )
                correct += int((logits.argmax(dim=1) == y).sum())
                loss_sum += float(F.cross_entropy(logits.double(), y, reduction="sum"))
            records.append(
                {"s": float(s_k), "accuracy": correct / n, "loss": loss_sum / n,
                 "seen": bool(seen_k)}
            )

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        if not rows:
            return None
        return {
            "accuracy": sum(r["accuracy"] for r in rows) / len(rows),
            "loss": sum(r["loss"] for r in rows) / len(rows),
            "count": len(rows),
        }

    return {
        "task": task.config(),
        "num_examples": n,
        "conditions": records,
        "overall": summary(records),
        "seen": summary([r for r in records if r["seen"]]),
        "unseen": summary([r for r in records if not r["seen"]]),
    }
