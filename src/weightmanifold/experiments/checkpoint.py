"""Atomic files and safe checkpoints for resumable runs."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "atomic_write_bytes", "atomic_write_csv", "atomic_write_json",
           "load_checkpoint", "save_checkpoint"]

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used for this run."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) never sees a partial file.

    The bytes go to a temporary file in the same directory, are flushed to disk,
    and replace ``path`` in one ``os.replace``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is not what a results file wants
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_write_csv(path: str | Path, rows: Iterable[dict[str, Any]],
                     columns: list[str] | None = None) -> None:
    rows = list(rows)
    if columns is None:
        columns = []
        for row in rows:
            columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_bytes(path, buf.getvalue().encode())


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save a checkpoint dict (tensors, numbers, strings, lists, dicts) atomically."""
    buf = io.BytesIO()
    torch.save({"version": CHECKPOINT_VERSION, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: no code in the file is ever run.

    Raises:
        CheckpointError: if the file is unreadable, not a weightmanifold checkpoint,
            or of another version.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several kinds for corrupt/unsafe files
        raise CheckpointError(f"cannot load checkpoint {path}: {err}") from err
    if not isinstance(state, dict) or "version" not in state:
        raise CheckpointError(f"{path} is not a weightmanifold checkpoint")
    if state["version"] != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state['version']}, "
                              f"this weightmanifold writes version {CHECKPOINT_VERSION}")
    return state
