"""A ``transformers`` ``Trainer`` that checkpoints converted models: :class:`ManifoldTrainer`.

``Trainer`` saves a model that is not a ``PreTrainedModel`` as one safetensors
file of its state dict, which refuses tied tensors (GPT-2's embedding and
head, which stay one manifold tensor). :class:`ManifoldTrainer` saves and
resumes a :class:`~weightmanifold.ManifoldModel` with
:func:`~weightmanifold.save_pretrained` / :func:`~weightmanifold.pretrained.load_weights`
instead, and behaves as ``Trainer`` otherwise. Built on first access, so this
module imports without ``transformers``.

Examples:
    >>> from weightmanifold.hf_trainer import ManifoldTrainer  # doctest: +SKIP
    >>> ManifoldTrainer(model=model, args=args, train_dataset=rows).train()  # doctest: +SKIP
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import torch

from .conversion import ManifoldModel
from .pretrained import _META, load_weights

__all__ = ["ManifoldTrainer"]  # noqa: F822 (built on first access)


@cache
def _build() -> type:
    from transformers import Trainer

    class ManifoldTrainer(Trainer):
        """``Trainer`` whose checkpoints of a converted model are ``save_pretrained`` folders."""

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            model = self.accelerator.unwrap_model(self.model)
            if not isinstance(model, ManifoldModel):
                return super()._save(output_dir, state_dict)
            output_dir = output_dir if output_dir is not None else self.args.output_dir
            if not self.args.should_save:
                return None
            os.makedirs(output_dir, exist_ok=True)
            model.save_pretrained(output_dir)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)
            torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
            return None

        def _load_from_checkpoint(self, resume_from_checkpoint: str,
                                  model: Any = None) -> None:
            target = self.accelerator.unwrap_model(self.model if model is None else model)
            if isinstance(target, ManifoldModel) and (Path(resume_from_checkpoint)
                                                      / _META).exists():
                load_weights(target, resume_from_checkpoint)
                return
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    ManifoldTrainer.__module__ = __name__
    return ManifoldTrainer


def __getattr__(name: str) -> Any:
    if name == "ManifoldTrainer":
        return _build()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
