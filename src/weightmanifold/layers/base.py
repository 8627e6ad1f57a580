"""The base of manifold layers: :class:`ManifoldModule`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..topology import Manifold
from .conditioning import Conditioning, Groups, condition
from .context import active

__all__ = ["ManifoldModule", "single_condition"]


def single_condition(
    manifold: Manifold, s: object, dtype: torch.dtype, device: torch.device | str | None = None
) -> Tensor:
    """Basis coefficients ``[1, n]`` of one condition ``s`` (a number, or a ``dim``-vector).

    Raises:
        ValueError: if ``s`` is more than one condition or invalid for ``manifold``.
    """
    t = torch.as_tensor(s, dtype=dtype, device=device)
    if manifold.dim > 1 or t.ndim == 2:
        t = t.reshape(1, -1) if t.ndim <= 1 else t
    elif t.ndim == 0:
        t = t.reshape(1)
    if t.shape[0] != 1:
        raise ValueError(f"expected a single condition s, got {t.shape[0]} ({list(t.shape)})")
    return manifold.coefficients(t)


class ManifoldModule(nn.Module):
    """A module some of whose parameters carry a leading basis axis of size ``manifold.n``.

    Subclasses register those parameters with :meth:`register_manifold_parameter`;
    :class:`~weightmanifold.Preconditioned` finds them through
    :meth:`manifold_parameters` and multiplies their gradients by the metric's
    inverse along that axis.
    """

    manifold: Manifold

    def __init__(self, manifold: Manifold) -> None:
        super().__init__()
        if not isinstance(manifold, Manifold):
            raise TypeError(
                f"manifold must be a weightmanifold Manifold, got {type(manifold).__name__}")
        self.manifold = manifold
        self._manifold_param_names: list[str] = []

    def register_manifold_parameter(self, name: str, param: nn.Parameter | None) -> None:
        """Register ``param`` (shape ``[n, ...]``) as a parameter living on the manifold."""
        if param is not None and (param.ndim == 0 or param.shape[0] != self.manifold.n):
            raise ValueError(
                f"manifold parameter {name!r} must have a leading basis axis of size "
                f"n={self.manifold.n}, got shape {list(param.shape)}"
            )
        self.register_parameter(name, param)
        if param is not None:
            self._manifold_param_names.append(name)

    def manifold_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The ``(name, parameter)`` pairs of this module that carry a basis axis."""
        for name in self._manifold_param_names:
            yield name, getattr(self, name)

    def conditioning(self, s: object) -> Conditioning:
        """``s`` as a :class:`Conditioning` of this layer (passed through when it already is one).

        Raises:
            ValueError: if ``s`` is missing or invalid, or a conditioning built
                for another manifold.
        """
        if isinstance(s, Conditioning):
            s.basis_of(self.manifold, self._who())
            return s
        if s is None:
            raise ValueError(
                f"{self._who()} lives on {self.manifold!r}: call it with the "
                "conditions s (one per example)"
            )
        return condition(self.manifold, s)

    def _who(self) -> str:
        return type(self).__name__

    def _resolve(self, s: object) -> Conditioning:
        """The conditioning of this call: ``s`` itself, built from ``s``, or the ambient one."""
        if s is None:
            ctx = active()
            if ctx is None:
                raise ValueError(
                    f"{self._who()} lives on {self.manifold!r} and was called without "
                    "conditions: pass s (layer(x, s) or model(x, s=s)), or make a "
                    "conditioning ambient with wm.conditioned(wm.condition(model, s))"
                )
            s = ctx
        return self.conditioning(s)

    def _coefficients(self, cond: Conditioning) -> tuple[Tensor, Groups | None]:
        return cond.basis_of(self.manifold, self._who())

    def _check_batch(self, x: Tensor, cond: Conditioning) -> Tensor:
        """``x`` ready for ``B`` conditions: checked by shape, a batch axis of size 1 broadcast.

        An input shared by the whole batch (HF's ``position_ids`` of shape
        ``[1, T]``, a shared mask, a learned query) gives ``B`` outputs, each the
        network at its own ``s``.

        Raises:
            ValueError: if the batch axis holds neither ``B`` examples nor 1.
        """
        b, batch_dim = cond.batch_size, cond.batch_dim
        if b == 1:
            return x
        if x.ndim <= batch_dim or x.shape[batch_dim] not in (b, 1):
            got = x.shape[batch_dim] if x.ndim > batch_dim else "no"
            raise ValueError(
                f"{self._who()}: s holds {b} conditions but the input of shape "
                f"{list(x.shape)} has {got} examples along its batch axis (dim {batch_dim}); "
                "give one condition per example (or a single one for the whole batch); "
                + ("for sequence-first models convert with batch_dim=1" if batch_dim == 0
                   else "this model was converted with batch_dim=1 (sequence-first)")
            )
        if x.shape[batch_dim] == 1:
            shape = list(x.shape)
            shape[batch_dim] = b
            x = x.expand(shape)
        return x

    def get_extra_state(self) -> Tensor:
        """The manifold's identity, saved in the state dict as a tensor (UTF-8 JSON bytes).

        A tensor, not a dict, so that ``safetensors`` and ``save_pretrained``
        accept the state dict; loading it into a model on another manifold
        fails clearly. State dicts saved by earlier versions (a dict here) load too.
        """
        return _encode_identity(self.manifold)

    def set_extra_state(self, state: object) -> None:
        """Nothing to restore: the manifold is checked in ``_load_from_state_dict``."""

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:  # type: ignore[override]
        saved = _decode_identity(state_dict.get(prefix + "_extra_state"))
        if saved is not None and saved.get("config") != _plain_config(self.manifold):
            where = prefix.rstrip(".") or type(self).__name__
            error_msgs.append(
                f"{where}: the state dict was saved from a model on {saved.get('manifold')}, "
                f"but this model lives on {self.manifold!r} (n={self.manifold.n})"
            )
        elif getattr(self, "rank", None) is None and (
                (saved is not None and saved.get("rank") is not None)
                or prefix + "weight_up" in state_dict):
            where = prefix.rstrip(".") or type(self).__name__
            rank = (saved or {}).get("rank", "?")
            error_msgs.append(
                f"{where}: the state dict was saved from a low-rank manifold model (rank "
                f"{rank}), but this model is full-rank; build it with "
                f"manifoldify(..., rank={rank})")
            return
        else:
            for name in self._manifold_param_names:
                got = state_dict.get(prefix + name)
                if got is not None and (got.ndim == 0 or got.shape[0] != self.manifold.n):
                    error_msgs.append(
                        f"{prefix + name}: the state dict holds a tensor of shape "
                        f"{list(got.shape)}, "
                        f"but this model lives on {self.manifold!r} with n={self.manifold.n} "
                        "basis points"
                    )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


def _as_json(value: object) -> object:
    """``value`` as JSON gives it back (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


def _plain_config(manifold: Manifold) -> object:
    """The manifold's config as saved (see :func:`_as_json`)."""
    return _as_json(manifold._config())


def _encode_identity(manifold: Manifold, **more: object) -> Tensor:
    text = json.dumps({"manifold": repr(manifold), "config": manifold._config(), **more},
                      default=str)
    return torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8).clone()


def _decode_identity(extra: object) -> dict | None:
    """The saved identity from a tensor (this version) or a dict (earlier versions)."""
    if isinstance(extra, Tensor):
        try:
            out = json.loads(bytes(extra.cpu().to(torch.uint8).tolist()).decode())
        except (ValueError, UnicodeDecodeError):
            return None
        return out if isinstance(out, dict) else None
    if isinstance(extra, dict):  # saved before 0.2: config as a tuple
        return {**extra, "config": _as_json(extra.get("config"))}
    return None
