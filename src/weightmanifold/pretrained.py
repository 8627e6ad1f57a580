"""Saving and loading converted Hugging Face / diffusers models: :func:`save_pretrained`,
:func:`from_pretrained`.

A converted model saves as its library saves it (``config.json`` and
``*.safetensors``, through the wrapped model's own ``save_pretrained``), plus
``weightmanifold.json``, which records the manifold and the conversion. Loading
builds the plain model from the saved configuration (no weights downloaded),
converts it on the same manifold and loads the manifold tensors. Neither
``transformers``, ``diffusers`` nor ``safetensors`` is imported unless used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .conversion import ManifoldModel, manifoldify
from .layers.base import _plain_config
from .topology import Manifold

__all__ = ["from_pretrained", "load_weights", "save_pretrained"]

_META = "weightmanifold.json"


def save_pretrained(model: ManifoldModel, path: str | os.PathLike, **kwargs: Any) -> None:
    """Save a converted ``transformers``/``diffusers`` model to the folder ``path``.

    Args:
        model: a :class:`~weightmanifold.ManifoldModel` whose wrapped module has
            ``save_pretrained`` (any ``PreTrainedModel`` or diffusers ``ModelMixin``).
        path: the folder.
        **kwargs: passed to the wrapped model's ``save_pretrained``.

    Raises:
        TypeError: if the wrapped module cannot ``save_pretrained``.
    """
    inner = model.module
    if not hasattr(inner, "save_pretrained"):
        raise TypeError(f"{type(inner).__name__} has no save_pretrained; save the model's "
                        "state_dict (it holds only tensors) with torch.save or safetensors")
    inner.save_pretrained(path, **kwargs)
    ranks = {name: _rank_of_layer(inner.get_submodule(name) if name else inner)
             for name in model.converted}
    meta = {"format": 1, "manifold": repr(model.manifold),
            "config": _plain_config(model.manifold),
            "batch_dim": model.batch_dim, "converted": model.converted,
            "ranks": {k: v for k, v in ranks.items() if v is not None},
            "class": f"{type(inner).__module__}.{type(inner).__qualname__}"}
    with open(Path(path) / _META, "w") as f:
        json.dump(meta, f, indent=2)


def _rank_of_layer(module: torch.nn.Module) -> int | None:
    """The rank of a converted layer (attention: of its projections), ``None`` at full rank."""
    for m in module.modules():
        rank = getattr(m, "rank", None)
        if isinstance(rank, int):
            return rank
    return None


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors"))
    if files:
        from safetensors.torch import load_file

        out: dict[str, torch.Tensor] = {}
        for file in files:
            out.update(load_file(str(file)))
        return out
    files = sorted(path.glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"{path} holds no *.safetensors or *.bin weights")
    out = {}
    for file in files:
        out.update(torch.load(file, map_location="cpu", weights_only=True))
    return out


def _plain_from_config(model_class: type, path: Path) -> nn.Module:
    if hasattr(model_class, "config_class") and hasattr(model_class.config_class,
                                                        "from_pretrained"):
        return model_class(model_class.config_class.from_pretrained(path))  # transformers
    if hasattr(model_class, "load_config") and hasattr(model_class, "from_config"):
        return model_class.from_config(model_class.load_config(path))  # diffusers
    raise TypeError(f"{model_class!r} is neither a transformers nor a diffusers model class")


def from_pretrained(model_class: type, path: str | os.PathLike, manifold: Manifold,
                    **manifoldify_options: Any) -> ManifoldModel:
    """Load a converted model saved by :func:`save_pretrained`.

    Args:
        model_class: the wrapped model's class (``GPT2LMHeadModel``, ``UNet2DModel``, …).
        path: the folder.
        manifold: the manifold it was saved on (checked against the saved one).
        **manifoldify_options: as :func:`~weightmanifold.manifoldify` (``include``,
            ``exclude``, ``batch_dim``); ``init`` does not matter, the weights are loaded.

    Raises:
        FileNotFoundError: if ``path`` holds no converted model.
        ValueError: if it was saved on another manifold, or its tensors do not fit.
    """
    path = Path(path)
    meta = _metadata(path, manifold)
    manifoldify_options.setdefault("batch_dim", meta.get("batch_dim", 0))
    if "include" not in manifoldify_options and "exclude" not in manifoldify_options:
        # convert exactly what was converted when it was saved
        recorded = set(meta.get("converted", []))
        manifoldify_options["include"] = [lambda name, _m, recorded=recorded: name in recorded]
    if "rank" not in manifoldify_options and meta.get("ranks"):
        # low-rank layers as saved (full rank where none was recorded)
        ranks = dict(meta["ranks"])
        manifoldify_options["rank"] = lambda name, _m, ranks=ranks: ranks.get(name)
    manifoldify_options["inplace"] = True  # the plain model was just built: no copy
    model = manifoldify(_plain_from_config(model_class, path), manifold, **manifoldify_options)
    return load_weights(model, path)


def _metadata(path: Path, manifold: Manifold) -> dict[str, Any]:
    meta_file = path / _META
    if not meta_file.exists():
        raise FileNotFoundError(
            f"{path} holds no {_META}: it is not a model saved by weightmanifold's "
            "save_pretrained (a plain pretrained model converts with wm.manifoldify)")
    meta = json.loads(meta_file.read_text())
    if meta.get("config") != _plain_config(manifold):
        raise ValueError(f"{path} was saved on {meta.get('manifold')}, not on {manifold!r}")
    return meta


def load_weights(model: ManifoldModel, path: str | os.PathLike) -> ManifoldModel:
    """Load the tensors saved by :func:`save_pretrained` in ``path`` into ``model`` (in place).

    The model takes the dtype the tensors were saved in.

    Raises:
        FileNotFoundError: if ``path`` holds no converted model.
        ValueError: if it was saved on another manifold, or its tensors do not fit.
    """
    path = Path(path)
    _metadata(path, model.manifold)
    state = _state_dict(path)
    dtype = next((v.dtype for k, v in state.items()
                  if v.is_floating_point() and not k.endswith("_extra_state")), None)
    if dtype is not None:
        model = model.to(dtype)  # load in the dtype it was saved in, not the config's
    missing, unexpected = model.module.load_state_dict(state, strict=False)
    # a tied tensor is saved once: the keys left out must share a tensor with a loaded one
    current = model.module.state_dict(keep_vars=True)
    loaded = {id(t) for k, t in current.items() if k in state}
    untied = [k for k in missing if id(current.get(k)) not in loaded]
    if untied or unexpected:
        raise ValueError(f"{path} does not fit {type(model.module).__name__} on "
                         f"{model.manifold!r}: missing {untied[:5]}, "
                         f"unexpected {list(unexpected)[:5]}")
    return model
