"""Validation of conditions ``s`` and measures, with error messages that say what and where."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

_MAX_LISTED = 5


def _listed(idx: Tensor, values: Tensor) -> str:
    shown = ", ".join(
        f"s[{int(i)}]={float(v):.6g}" for i, v in zip(idx[:_MAX_LISTED], values[:_MAX_LISTED])
    )
    more = len(idx) - _MAX_LISTED
    return shown + (f" (and {more} more)" if more > 0 else "")


def as_condition_batch(s: object, dim: int, name: str) -> Tensor:
    """Bring ``s`` to a floating tensor of shape ``[B, dim]`` or raise a clear error."""
    if isinstance(s, (bool,)) or s is None:
        raise TypeError(f"{name}: s must be a floating-point tensor of conditions, got {s!r}")
    if not isinstance(s, Tensor):
        try:
            s = torch.as_tensor(s, dtype=torch.get_default_dtype())
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"{name}: s must be a floating-point tensor of conditions, "
                f"got {type(s).__name__}"
            ) from err
    if not s.is_floating_point():
        raise TypeError(
            f"{name}: s must be a floating-point tensor, got dtype {s.dtype}; "
            "convert it with s.float() or s.double()"
        )
    if s.ndim == 0:
        s = s.reshape(1)
    if s.ndim == 1 and dim <= 1:
        return s[:, None] if dim == 1 else s[:, None][:, :0]
    if s.ndim == 2 and s.shape[1] == dim:
        return s
    expected = "[B] or [B, 1]" if dim == 1 else ("[B] or [B, 0]" if dim == 0 else f"[B, {dim}]")
    raise ValueError(
        f"{name} expects s of shape {expected} (one column per coordinate), "
        f"got shape {list(s.shape)}"
    )


def tracing() -> bool:
    """Whether ``s`` is being traced (``torch.compile``, ``torch.export``, FX, TorchScript)."""
    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing()
                or torch.fx._symbolic_trace.is_fx_symbolic_tracing())


def vmapped() -> bool:
    """Whether a ``torch.func.vmap`` is running (no data-dependent checks possible)."""
    if torch._C._functorch.peek_interpreter_stack() is None:
        return False
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    return any(i.key() == TransformType.Vmap for i in retrieve_all_functorch_interpreters())


def transformed() -> bool:
    """Whether any ``torch.func`` transform (``grad``, ``vjp``, ``jvp``, ``vmap``) is running."""
    return torch._C._functorch.peek_interpreter_stack() is not None


def raise_where(bad: Tensor, message: Callable[[], str], static: str) -> None:
    """Raise ``ValueError(message())`` if any element of ``bad`` is true.

    In eager mode this reads one boolean from the device (one host sync per
    batch, at the door of a model, never inside a layer). Inside a traced
    region it becomes ``torch._assert_async`` with the fixed text ``static``:
    no graph break, no host sync, and the compiled or exported program still
    refuses the bad value when it runs. Under ``vmap`` nothing can be checked
    per element; the values pass unchecked.
    """
    if tracing():
        torch._assert_async(~bad.any(), static)
        return
    if vmapped():
        return
    if bad.any():
        raise ValueError(message())


def check_finite(s: Tensor, name: str) -> None:
    bad = ~torch.isfinite(s)

    def message() -> str:
        rows = bad.reshape(len(s), -1).any(dim=1).nonzero().flatten()
        vals = s.reshape(len(s), -1)[rows, bad.reshape(len(s), -1)[rows].float().argmax(dim=1)]
        return f"{name}: s holds NaN or inf at {_listed(rows, vals)}"

    raise_where(bad, message, f"{name}: s holds NaN or inf")


def check_unit_interval(col: Tensor, name: str, j: int, dim: int) -> None:
    bad = (col < 0) | (col > 1)
    where = "" if dim == 1 else f" (column {j})"
    hint = "; pass clamp=True when building the manifold to clamp such values instead"

    def message() -> str:
        rows = bad.nonzero().flatten()
        return (f"{name}: s lies outside the bounded domain [0, 1]{where} at "
                f"{_listed(rows, col[rows])}{hint}")

    raise_where(bad, message, f"{name}: s lies outside the bounded domain [0, 1]{where}{hint}")


def learned_indices(frozen: Sequence[int], n: int) -> list[int]:
    frozen_list = [int(i) for i in frozen]
    bad = [i for i in frozen_list if not 0 <= i < n]
    if bad:
        raise ValueError(f"frozen basis indices {bad} are out of range for n={n}")
    if len(set(frozen_list)) != len(frozen_list):
        raise ValueError(f"frozen basis indices {frozen_list} contain duplicates")
    learned = [i for i in range(n) if i not in set(frozen_list)]
    if not learned:
        raise ValueError(f"all {n} basis points are frozen: nothing left to learn")
    return learned


def measure_samples(measure: object, num_samples: int, name: str) -> tuple[Tensor, Tensor]:
    """Turn a measure (samples, ``(samples, weights)`` or a sampler) into samples and weights."""
    if callable(measure) and not isinstance(measure, Tensor):
        sampler: Callable[[int], object] = measure
        samples = sampler(num_samples)
        weights = None
    elif isinstance(measure, tuple) and len(measure) == 2:
        samples, weights = measure
    else:
        samples, weights = measure, None
    if not isinstance(samples, Tensor):
        try:
            samples = torch.as_tensor(samples, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"{name}: a measure must be a tensor of samples, a (samples, weights) pair "
                f"or a callable sampler, got {type(measure).__name__}"
            ) from err
    if samples.ndim == 0 or len(samples) == 0:
        raise ValueError(f"{name}: the measure has no samples")
    if weights is None:
        w = torch.full((len(samples),), 1.0 / len(samples), dtype=torch.float64)
    else:
        w = torch.as_tensor(weights, dtype=torch.float64).flatten()
        if len(w) != len(samples):
            raise ValueError(
                f"{name}: measure has {len(samples)} samples but {len(w)} weights"
            )
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"{name}: measure weights must be finite, non-negative, not all 0")
        w = w / w.sum()
    return samples, w
