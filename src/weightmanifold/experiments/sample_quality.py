"""Sample quality without downloads: a cached feature classifier, Fréchet distance, class balance.

The Fréchet Inception Distance needs Inception-v3 weights, which cannot be
downloaded here. Instead the suite trains a small classifier on the data set
once (:func:`load_or_train_classifier`, cached beside the sweep with a
fingerprint of the images it was trained on) and measures

* the **Fréchet distance** between generated and real images in that
  classifier's penultimate feature space (:func:`frechet_distance`, computed by
  ``torchmetrics``' :class:`~torchmetrics.image.fid.FrechetInceptionDistance`
  with the classifier as its custom feature extractor):

  .. math:: d^2 = \\lVert \\mu_r - \\mu_g \\rVert^2
            + \\operatorname{tr}\\big(\\Sigma_r + \\Sigma_g - 2 (\\Sigma_r \\Sigma_g)^{1/2}\\big);

* the **class balance** of the samples (:func:`class_balance`): the entropy of
  the classifier's predicted-class histogram over :math:`\\log K` (1: every
  class equally often; 0: one class only).

Numbers from this feature space are comparable between methods of one sweep,
not with published FIDs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["ClassifierCacheError", "FeatureClassifier", "class_balance", "fingerprint",
           "frechet_distance", "load_or_train_classifier", "train_classifier"]


class ClassifierCacheError(ValueError):
    """A cached feature classifier that was trained on other data than this run uses."""


class FeatureClassifier(nn.Module):
    """A small CNN whose penultimate layer is the feature space of the Fréchet distance.

    Inputs are images in ``[0, 1]``, ``[B, C, H, W]``. ``forward`` returns the
    ``num_features``-dimensional features (what ``torchmetrics`` calls); the
    logits are ``head(features)``.

    Args:
        channels: image channels.
        classes: number of classes.
        num_features: width of the feature layer.
    """

    def __init__(self, channels: int = 1, classes: int = 10, num_features: int = 128) -> None:
        super().__init__()
        self.num_features = num_features
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(256, num_features), nn.ReLU())
        self.head = nn.Linear(num_features, classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images.float())

    def logits(self, images: Tensor) -> Tensor:
        return self.head(self(images))


def fingerprint(images: Tensor) -> str:
    """SHA-256 of a uint8 image tensor's shape and bytes (identifies a data set exactly)."""
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class CachedClassifier:
    """A trained :class:`FeatureClassifier` with what it was trained on."""

    model: FeatureClassifier
    dataset: str
    fingerprint: str
    test_accuracy: float


def train_classifier(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *,
                     classes: int, epochs: int = 2, batch_size: int = 128, seed: int = 0,
                     progress: bool | None = None) -> tuple[FeatureClassifier, float]:
    """Train the feature classifier (Adam, lr 1e-3) and return it with its test accuracy.

    Args:
        train_x, test_x: float images in ``[0, 1]``; train_y, test_y: labels.
        classes: number of classes.
        epochs, batch_size, seed: the training budget and its seed.
        progress: a progress bar (default: only on a terminal).
    """
    from .runtime import progress_bar

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = FeatureClassifier(train_x.shape[1], classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = epochs * math.ceil(len(train_x) / batch_size)
    bar = progress_bar(steps, "feature classifier", progress)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train_x), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(model.logits(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
    bar.close()
    model.eval().requires_grad_(False)
    with torch.no_grad():
        correct = sum(int((model.logits(test_x[i:i + 1000]).argmax(1)
                           == test_y[i:i + 1000]).sum()) for i in range(0, len(test_x), 1000))
    return model, correct / len(test_x)


def load_or_train_classifier(path: str | Path, dataset: str, train_images: Tensor,
                             train_y: Tensor, test_x: Tensor, test_y: Tensor, *,
                             classes: int, epochs: int = 2, progress: bool | None = None,
                             log: Any = print) -> CachedClassifier:
    """The cached feature classifier at ``path``, trained (and cached) if there is none.

    Args:
        path: the cache file.
        dataset: the data set's name (recorded, and checked on load).
        train_images: the uint8 training images (fingerprinted; trained on as floats).
        train_y, test_x, test_y: labels and the float test images (accuracy).
        classes: number of classes.
        epochs: training epochs (Adam, lr 1e-3, batch 128) when there is no cache.

    Raises:
        ClassifierCacheError: if the cache was trained on another data set (name or
            images differ).
    """
    path = Path(path)
    digest = fingerprint(train_images)
    if path.exists():
        state = load_checkpoint(path)
        if state.get("kind") != "feature-classifier":
            raise ClassifierCacheError(f"{path} is not a feature classifier cache")
        if state["dataset"] != dataset or state["fingerprint"] != digest:
            raise ClassifierCacheError(
                f"the feature classifier cached in {path} was trained on {state['dataset']!r} "
                f"(images {state['fingerprint'][:12]}…), but this run uses {dataset!r} "
                f"(images {digest[:12]}…); delete the file or use another runs directory")
        model = FeatureClassifier(state["channels"], state["classes"], state["num_features"])
        model.load_state_dict(state["model"])
        return CachedClassifier(model.eval().requires_grad_(False), dataset, digest,
                                state["test_accuracy"])
    log(f"training the feature classifier for sample quality on {dataset} (cached in {path})")
    model, acc = train_classifier(train_images.float() / 255, train_y, test_x, test_y,
                                  classes=classes, epochs=epochs, progress=progress)
    save_checkpoint(path, {"kind": "feature-classifier", "dataset": dataset,
                           "fingerprint": digest, "channels": train_images.shape[1],
                           "classes": classes, "num_features": model.num_features,
                           "test_accuracy": acc, "model": model.state_dict()})
    log(f"feature classifier: test accuracy {100 * acc:.2f}%")
    return CachedClassifier(model, dataset, digest, acc)


def frechet_distance(features: nn.Module, real: Tensor, fake: Tensor,
                     batch_size: int = 1000) -> float:
    """Fréchet distance between ``real`` and ``fake`` images in the space of ``features``.

    Computed by ``torchmetrics``' ``FrechetInceptionDistance`` with ``features``
    as the custom extractor (it needs an integer ``num_features`` attribute).

    Args:
        features: the feature extractor (images in ``[0, 1]`` → ``[B, num_features]``).
        real, fake: images in ``[0, 1]``, ``[N, C, H, W]``, at least 2 of each.

    Raises:
        ImportError: without ``torchmetrics`` (the extra ``diffusion``).
        ValueError: for fewer than 2 images in a set or different image shapes.
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as err:
        raise ImportError("the Fréchet distance needs torchmetrics: pip install "
                          "'weightmanifold[diffusion]'") from err
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 images per set, got "
                         f"{len(real)} real and {len(fake)} generated")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real images {tuple(real.shape[1:])} and generated images "
                         f"{tuple(fake.shape[1:])} differ in shape")
    metric = FrechetInceptionDistance(feature=features, normalize=True)
    with torch.no_grad():
        for images, is_real in ((real, True), (fake, False)):
            for i in range(0, len(images), batch_size):
                metric.update(images[i:i + batch_size], real=is_real)
        return float(metric.compute())


def class_balance(logits: Tensor) -> tuple[float, list[int]]:
    """How evenly the predicted classes of ``logits`` ``[N, K]`` are spread.

    .. math:: b = -\\frac{1}{\\log K} \\sum_k \\hat p_k \\log \\hat p_k, \\qquad
              \\hat p_k = \\frac{\\#\\{i : \\arg\\max_j z_{ij} = k\\}}{N}

    Returns:
        ``(b, counts)``: the normalised entropy in ``[0, 1]`` and the count per class.

    Raises:
        ValueError: for no rows or fewer than 2 classes.

    Examples:
        >>> class_balance(torch.eye(4))[0]
        1.0
        >>> class_balance(torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
        (0.0, [2, 0])
    """
    if logits.dim() != 2 or logits.shape[0] < 1 or logits.shape[1] < 2:
        raise ValueError(f"class balance needs logits [N >= 1, K >= 2], got "
                         f"{tuple(logits.shape)}")
    k = logits.shape[1]
    counts = torch.bincount(logits.argmax(1), minlength=k)
    p = counts.double() / counts.sum()
    nz = p[p > 0]
    entropy = float(-(nz * nz.log()).sum())
    return round(entropy / math.log(k), 12) + 0.0, [int(c) for c in counts]
