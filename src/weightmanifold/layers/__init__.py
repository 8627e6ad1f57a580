"""Layers: PyTorch modules whose parameters carry a leading basis axis of size ``n``."""

from .base import Conditioning, ManifoldModule, single_condition
from .parameter import ManifoldParameter

__all__ = ["Conditioning", "ManifoldModule", "ManifoldParameter", "single_condition"]
