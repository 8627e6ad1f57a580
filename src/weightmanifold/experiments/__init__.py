"""Experiments: data sets, conditioning tasks, paper models and baselines, the trainer.

Uses the library (topology, layers, optimisation) through its public API only.
Installed as an extra: ``pip install 'weightmanifold[experiments]'`` (the
library itself needs torch and numpy alone).
"""

from __future__ import annotations

import importlib.util
import sys

#: module → the package that provides it, for the experiment suite and command line
REQUIRES = {"tqdm": "tqdm", "matplotlib": "matplotlib", "PIL": "pillow"}
if sys.version_info < (3, 11):
    REQUIRES["tomli"] = "tomli"


def _missing() -> list[str]:
    out = []
    for module, package in REQUIRES.items():
        if module in sys.modules:  # imported already, or blocked (None)
            if sys.modules[module] is None:
                out.append(package)
            continue
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            out.append(package)
    return out


if _missing():
    raise ImportError(
        f"the weightmanifold experiment suite and command line need {', '.join(_missing())}, "
        "which the library alone does not install: pip install 'weightmanifold[experiments]'")
