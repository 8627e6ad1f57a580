"""The paper's models and the conditioning baselines, all called as ``model(x, s)``.

Architectures (paper Appendix D–E):

* ``"cnn"`` — the paper CNN: three 3×3 convolutions with 32/64/128 filters, each
  followed by ReLU and 2×2 max-pooling, then a dense layer of 512 and the
  classifier. Convolutions use "same" padding: the paper's code was JAX, where
  Flax's ``nn.Conv`` pads "SAME" by default (the appendix does not say). Works
  for any number of input channels and image size.
* ``"resnet18ln"`` — ResNet-18 (four stages of two basic blocks, 64/128/256/512
  channels) with LayerNorm in place of BatchNorm: each norm normalises over the
  channels at every pixel (Flax's ``nn.LayerNorm`` on NHWC activations). The
  stem is the usual CIFAR one (3×3 convolution, stride 1, no max-pool), suited
  to 28–32 pixel images.
* ``"resnet18ln-chw"`` — the same network with each LayerNorm over the
  channels, height and width of a sample (``GroupNorm`` with one group). The
  per-pixel norm discards each pixel's overall intensity: on one-channel
  Fashion-MNIST, with its near-black backgrounds, two of three seeds of
  ``resnet18ln`` stayed at chance for two epochs of SGD (lr 0.01, momentum 0.9),
  while this variant learned at once. The CPU-scale preset uses it.

Methods:

* ``"plain"`` — the network alone; ``s`` is ignored (a point, not a manifold).
* ``"manifold"`` — :func:`weightmanifold.manifoldify` of the network on a topology.
* ``"concat"`` — the condition features are concatenated to the flattened conv
  output, before the dense layers (paper Appendix D).
* ``"embed"`` — a width-32 embedding (dense + ReLU) of the condition features is
  concatenated there instead (paper Appendix D).
* ``"film"`` — every conv output is modulated per channel,
  :math:`h \\mapsto h \\odot (1 + \\gamma(c)) + \\beta(c)` with :math:`\\gamma, \\beta` affine
  in the features ``c`` (initialised to zero: the start is the plain network).

Condition features for the conditioned baselines (``features``): ``"raw"`` gives
``s`` itself (one column per coordinate), ``"basis"`` gives the manifold's own
basis :math:`a(s)` — e.g. :math:`(1, \\cos 2\\pi s, \\sin 2\\pi s)` for the ellipse — so
that a comparison with the manifold network isolates modulation from
topology-aware input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

import weightmanifold as wm

__all__ = [
    "ARCHS",
    "FEATURES",
    "METHODS",
    "ChannelLayerNorm",
    "Classifier",
    "ConditionedCNN",
    "build_model",
    "count_parameters",
    "match_width",
    "paper_cnn",
    "resnet18_ln",
]

ARCHS = ("cnn", "resnet18ln", "resnet18ln-chw")
METHODS = ("plain", "manifold", "concat", "embed", "film")
FEATURES = ("raw", "basis")
PAPER_WIDTHS = (32, 64, 128)
#: the ResNet-18 stage widths
RESNET_WIDTHS = (64, 128, 256, 512)
PAPER_HIDDEN = 512


def _conv_stack(in_channels: int, widths: Sequence[int], padding: str = "same") -> nn.ModuleList:
    blocks = nn.ModuleList()
    c = in_channels
    for w in widths:
        blocks.append(nn.Conv2d(c, w, 3, padding=1 if padding == "same" else 0))
        c = w
    return blocks


def _flat_size(widths: Sequence[int], image_size: int, padding: str = "same") -> int:
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    size = image_size
    for _ in widths:
        size = (size - (0 if padding == "same" else 2)) // 2
    if size < 1:
        raise ValueError(f"image size {image_size} is too small for {len(widths)} poolings")
    return widths[-1] * size * size


def paper_cnn(in_channels: int = 3, image_size: int = 32, classes: int = 10,
              widths: Sequence[int] = PAPER_WIDTHS, hidden: int = PAPER_HIDDEN,
              padding: str = "same") -> nn.Sequential:
    """The paper CNN as an ``nn.Sequential`` (see the module docstring).

    Args:
        in_channels, image_size, classes: of the data.
        widths, hidden: conv channels and dense width (the paper's 32/64/128 and 512).
        padding: ``"same"`` (default, Flax's) or ``"valid"`` (no padding).

    Examples:
        >>> net = paper_cnn(1, 28)
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    layers: list[nn.Module] = []
    for conv in _conv_stack(in_channels, widths, padding):
        layers += [conv, nn.ReLU(), nn.MaxPool2d(2)]
    flat = _flat_size(widths, image_size, padding)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels at every pixel of an NCHW tensor (Flax's LayerNorm on NHWC)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int,
                 norm: Callable[[int], nn.Module] = ChannelLayerNorm) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = norm(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          norm(cout))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(h)) + self.shortcut(x))


def _sample_layer_norm(channels: int, eps: float = 1e-6) -> nn.Module:
    """LayerNorm over (C, H, W) of each sample, with per-channel gain and bias."""
    return nn.GroupNorm(1, channels, eps=eps)


_NORMS: dict[str, Callable[[int], nn.Module]] = {"channel": ChannelLayerNorm,
                                                  "sample": _sample_layer_norm}


def resnet18_ln(in_channels: int = 3, classes: int = 10,
                widths: Sequence[int] = RESNET_WIDTHS, norm: str = "channel"
                ) -> nn.Sequential:
    """ResNet-18 with LayerNorm and a CIFAR stem (see the module docstring).

    Args:
        in_channels, classes: of the data.
        widths: channels of the four stages.
        norm: ``"channel"`` (over the channels at each pixel, the paper's Flax
            default) or ``"sample"`` (over channels, height and width).

    Raises:
        ValueError: for an unknown ``norm``.

    Examples:
        >>> net = resnet18_ln(1, widths=(8, 8, 8, 8))
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    if norm not in _NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(_NORMS)}")
    make = _NORMS[norm]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                               make(widths[0]), nn.ReLU()]
    c = widths[0]
    for i, w in enumerate(widths):
        stride = 1 if i == 0 else 2
        layers += [_BasicBlock(c, w, stride, make), _BasicBlock(w, w, 1, make)]
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))


class ConditionedCNN(nn.Module):
    """The paper CNN with the condition given as input: ``"concat"``, ``"embed"`` or ``"film"``.

    Called as ``net(x, c)`` with condition features ``c`` of shape ``[B, cond_dim]``.

    Args:
        method: ``"concat"``, ``"embed"`` or ``"film"``.
        cond_dim: number of condition features.
        in_channels, image_size, classes, widths, hidden: as :func:`paper_cnn`.
        embed_width: width of the ``"embed"`` embedding (the paper's 32).
    """

    def __init__(self, method: str, cond_dim: int, in_channels: int = 3, image_size: int = 32,
                 classes: int = 10, widths: Sequence[int] = PAPER_WIDTHS,
                 hidden: int = PAPER_HIDDEN, embed_width: int = 32) -> None:
        super().__init__()
        if method not in ("concat", "embed", "film"):
            raise ValueError(f"unknown conditioning method {method!r}; valid: concat, embed, film")
        self.method = method
        self.convs = _conv_stack(in_channels, widths)
        extra = 0
        if method == "concat":
            extra = cond_dim
        elif method == "embed":
            self.embed = nn.Sequential(nn.Linear(cond_dim, embed_width), nn.ReLU())
            extra = embed_width
        else:
            self.film = nn.ModuleList(nn.Linear(cond_dim, 2 * w) for w in widths)
            for lin in self.film:
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)
        self.head = nn.Sequential(nn.Linear(_flat_size(widths, image_size) + extra, hidden),
                                  nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if self.method == "film":
                gamma, beta = self.film[i](c).chunk(2, dim=1)
                h = h * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
            h = torch.max_pool2d(torch.relu(h), 2)
        h = h.flatten(1)
        if self.method == "concat":
            h = torch.cat([h, c], dim=1)
        elif self.method == "embed":
            h = torch.cat([h, self.embed(c)], dim=1)
        return self.head(h)


class Classifier(nn.Module):
    """Any of the models behind one interface: ``model(x, s) -> logits``.

    Attributes:
        method: how the condition enters (see the module docstring).
        manifold: the topology (of the manifold network, or whose basis gives the
            ``"basis"`` features of a baseline), or ``None``.
        features: ``"raw"`` or ``"basis"`` for conditioned baselines.
        net: the wrapped network.
    """

    def __init__(self, net: nn.Module, method: str, manifold: wm.Manifold | None = None,
                 features: str = "raw") -> None:
        super().__init__()
        self.net = net
        self.method = method
        self.manifold = manifold
        self.features = features

    @property
    def ignores_s(self) -> bool:
        """Whether the output does not depend on ``s``: a point network (``"plain"``)."""
        return self.method == "plain"

    def condition_features(self, s: Tensor) -> Tensor:
        """The baselines' input features of the conditions, ``[B, k]``."""
        if self.features == "basis":
            assert self.manifold is not None
            return self.manifold.coefficients(s)
        return s.reshape(len(s), -1).to(torch.get_default_dtype())

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        if self.ignores_s:
            return self.net(x)
        if self.method == "manifold":
            return self.net(x, s=s)
        return self.net(x, self.condition_features(s))


def build_model(arch: str = "cnn", method: str = "plain", manifold: wm.Manifold | None = None, *,
                features: str = "raw", in_channels: int = 3, image_size: int = 32,
                classes: int = 10, init: str | float = "constant",
                widths: Sequence[int] | None = None, hidden: int = PAPER_HIDDEN,
                cond_dim: int | None = None, rank: int | None = None) -> Classifier:
    """Build one of the paper's models for a method (see the module docstring).

    Args:
        arch: ``"cnn"``, ``"resnet18ln"`` or ``"resnet18ln-chw"``.
        method: ``"plain"``, ``"manifold"``, ``"concat"``, ``"embed"`` or ``"film"``.
        manifold: the topology, required for ``"manifold"`` and ``features="basis"``.
        features: condition features of the conditioned baselines.
        in_channels, image_size, classes: of the data.
        init: initialisation of the manifold network (see :func:`manifoldify`).
        widths, hidden: channel widths and dense width (paper defaults when ``None``).
        cond_dim: columns of raw ``s`` (defaults to ``manifold.dim`` or 1).
        rank: a low-rank manifold network (``manifoldify(..., rank=)``) with rank
            ``min(rank, the layer's own rank)`` in each layer; ``None``: full rank.

    Raises:
        ValueError: for an unknown arch/method/features, or a missing manifold.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if features not in FEATURES:
        raise ValueError(f"unknown condition features {features!r}; valid: {', '.join(FEATURES)}")
    needs_manifold = method == "manifold" or (method in ("concat", "embed", "film")
                                              and features == "basis")
    if needs_manifold and manifold is None:
        raise ValueError(f"method {method!r} with features {features!r} needs a manifold")
    if arch.startswith("resnet18ln"):
        if method not in ("plain", "manifold"):
            raise ValueError(f"{arch} is built as 'plain' or 'manifold' only")
        net: nn.Module = resnet18_ln(in_channels, classes,
                                     **({"widths": widths} if widths else {}),
                                     norm="sample" if arch == "resnet18ln-chw" else "channel")
    elif method in ("plain", "manifold"):
        net = paper_cnn(in_channels, image_size, classes, widths or PAPER_WIDTHS, hidden)
    else:
        if features == "basis":
            assert manifold is not None
            dim = manifold.n
        else:
            dim = cond_dim if cond_dim is not None else (max(manifold.dim, 1) if manifold else 1)
        net = ConditionedCNN(method, dim, in_channels, image_size, classes,
                             widths or PAPER_WIDTHS, hidden)
    if method == "manifold":
        assert manifold is not None
        net = wm.manifoldify(net, manifold, init=init,
                             rank=None if rank is None else capped_rank(rank))
        # the suite trains and evaluates eagerly: group each batch by condition, so that
        # batches with few distinct conditions (few training angles, evaluation at one s,
        # piecewise-constant experts) run one plain network per condition
        net.grouped = True
    return Classifier(net, method, manifold, features)


def capped_rank(rank: int):
    """``rank(name, module)`` for ``manifoldify``: ``rank``, or a smaller layer's own rank.

    The first convolution of a one-channel network is a ``32 × 9`` matrix: rank 16
    cannot be asked of it.
    """
    def choose(name: str, module: nn.Module) -> int:
        weight = module.weight if hasattr(module, "weight") else None
        if not isinstance(weight, torch.Tensor) or weight.ndim < 2:
            return rank
        groups = getattr(module, "groups", 1)
        return min(rank, weight.shape[0] // groups, weight[0].numel())
    return choose


def count_parameters(model: nn.Module) -> int:
    """Number of learnable scalars (``Module.parameters`` yields a tied tensor once)."""
    return sum(p.numel() for p in model.parameters())


def match_width(target: int, *, arch: str = "cnn", method: str = "plain",
                manifold: wm.Manifold | None = None, features: str = "raw",
                in_channels: int = 3, image_size: int = 32, classes: int = 10,
                tolerance: float = 0.05, widths: Sequence[int] | None = None
                ) -> tuple[list[int], int]:
    """Widths that give ``method`` about ``target`` parameters.

    Every width of the architecture is scaled by one factor, found by
    bisection, so that the baseline's parameter count is within ``tolerance``
    of ``target`` — for comparing a manifold network with a baseline of equal
    capacity. For the CNN these are the channel widths (32, 64, 128) and the
    dense width (512); for the ResNets the four stages' channels (``widths``,
    64/128/256/512 when ``None``), which only ``"plain"`` builds.

    Args:
        target: the parameter count to reach.
        arch: ``"cnn"``, ``"resnet18ln"`` or ``"resnet18ln-chw"``.
        method, manifold, features: of the baseline (see :func:`build_model`).
        in_channels, image_size, classes: of the data.
        tolerance: the largest relative miss allowed.
        widths: the channel widths the factor scales (the architecture's
            defaults when ``None``).

    Returns:
        ``(widths, hidden)`` for :func:`build_model` (a ResNet has no dense
        width: ``hidden`` is then the unused default).

    Raises:
        ValueError: if no width reaches the tolerance, for an unknown ``arch``,
            or for a ResNet ``method`` other than ``"plain"``.

    Examples:
        >>> import weightmanifold as wm
        >>> target = count_parameters(build_model("cnn", "manifold", wm.Ellipse(),
        ...                                       in_channels=1, image_size=28))
        >>> widths, hidden = match_width(target, in_channels=1, image_size=28)
        >>> n = count_parameters(build_model("cnn", "plain", widths=widths, hidden=hidden,
        ...                                  in_channels=1, image_size=28))
        >>> abs(n / target - 1) <= 0.05
        True
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    resnet = arch.startswith("resnet18ln")
    if resnet and method != "plain":
        raise ValueError(f"width matching of {arch} is for 'plain' only, not {method!r}")
    base = tuple(widths) if widths else (RESNET_WIDTHS if resnet else PAPER_WIDTHS)

    def shape(scale: float) -> tuple[tuple[int, ...], int]:
        scaled = tuple(max(1, round(w * scale)) for w in base)
        return scaled, PAPER_HIDDEN if resnet else max(1, round(PAPER_HIDDEN * scale))

    counts: dict[tuple[tuple[int, ...], int], int] = {}

    def count(widths_hidden: tuple[tuple[int, ...], int]) -> int:
        if widths_hidden not in counts:
            scaled, hidden = widths_hidden
            net = build_model(arch, method, manifold, features=features,
                              in_channels=in_channels, image_size=image_size, classes=classes,
                              widths=list(scaled), hidden=hidden)
            counts[widths_hidden] = count_parameters(net)
        return counts[widths_hidden]

    lo, hi = 0.05, 1.0
    while count(shape(hi)) < target:
        hi *= 2
        if hi > 64:
            raise ValueError(f"no width reaches {target} parameters")
    # Bisect the scale. The widths are rounded, so the later steps mostly revisit
    # widths already counted: ``count`` builds each network once.
    best: tuple[tuple[tuple[int, ...], int], int] | None = None
    for _ in range(40):
        mid = (lo + hi) / 2
        candidate = shape(mid)
        n = count(candidate)
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (candidate, n)
        if n < target:
            lo = mid
        else:
            hi = mid
    assert best is not None
    (scaled, hidden), n = best
    if abs(n / target - 1) > tolerance:
        raise ValueError(f"closest width gives {n} parameters, not within "
                         f"{100 * tolerance:g} % of {target}")
    return list(scaled), hidden
