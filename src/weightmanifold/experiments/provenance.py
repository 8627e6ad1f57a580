"""Which code produced a result: versions and the git commit, recorded in every run's summary.

Archived runs outlive the code that trained them (``docs/results/``): a summary
that names its commit says which numbers a later change of the library may have
moved, and whether they were trained from uncommitted edits.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["software"]


@functools.cache
def _git(source: Path) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout holding ``source``; ``(None, None)`` outside
    one (an installed package) or without git."""
    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(source), *args], capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = run("status", "--porcelain", "--untracked-files=no", "--", ".")
    return commit, None if status is None else bool(status)


def software() -> dict[str, Any]:
    """The versions of weightmanifold, torch, numpy and Python, and the git commit of the
    weightmanifold source (``None`` outside a checkout) with whether tracked files under
    it differed from that commit (``dirty``).

    Examples:
        >>> sorted(software())
        ['dirty', 'git_commit', 'numpy', 'python', 'torch', 'weightmanifold']
    """
    from .. import __version__

    commit, dirty = _git(Path(__file__).resolve().parents[1])
    return {"weightmanifold": __version__, "git_commit": commit, "dirty": dirty,
            "torch": torch.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0]}
