"""A small synthetic image data set for tests and quick checks (no files needed)."""

from __future__ import annotations

import torch

from .datasets import ImageDataset

__all__ = ["make_synthetic"]


def make_synthetic(split: str = "train", *, size: int = 12, channels: int = 1,
                   classes: int = 4, per_class: int | None = None,
                   seed: int = 0) -> ImageDataset:
    """A learnable ``ImageDataset``: each class is a smooth random template plus noise.

    The templates depend only on ``seed`` (shared by both splits); the examples on
    ``seed`` and ``split``. Images are asymmetric, so rotations change them.

    Args:
        split: ``"train"`` (64 images per class by default) or ``"test"`` (16).
        size, channels, classes: image size, channels and number of classes.
        per_class: images per class (overrides the split's default).
        seed: seed of the templates and examples.

    Examples:
        >>> ds = make_synthetic("test")
        >>> ds.images.shape, ds.images.dtype
        (torch.Size([64, 1, 12, 12]), torch.uint8)
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    count = per_class if per_class is not None else (64 if split == "train" else 16)
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(classes, channels, 4, 4, generator=gen)
    templates = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                                align_corners=False)
    templates[:, :, : size // 3, : size // 3] += 0.5  # a bright corner: rotation matters
    gen = torch.Generator().manual_seed(seed * 2 + (1 if split == "train" else 2))
    labels = torch.arange(classes).repeat_interleave(count)
    noise = 0.15 * torch.randn(len(labels), channels, size, size, generator=gen)
    images = (templates[labels] + noise).clamp(0, 1)
    order = torch.randperm(len(labels), generator=gen)
    return ImageDataset(
        images=(images[order] * 255).round().to(torch.uint8),
        labels=labels[order],
        classes=tuple(f"class{k}" for k in range(classes)),
        name=f"synthetic-{split}",
    )
