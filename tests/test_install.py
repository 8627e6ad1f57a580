"""The library installs lean: torch and numpy only; the experiment suite is an extra."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires

import pytest


def test_library_requires_torch_and_numpy_only():
    reqs = requires("weightmanifold") or []
    core = [r for r in reqs if "extra ==" not in r]
    names = sorted(r.split(">")[0].split("=")[0].split("<")[0].strip() for r in core)
    assert names == ["numpy", "torch"], core


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


BLOCK = ("import sys\n"
         "for m in ('tqdm', 'matplotlib', 'PIL', 'tomli'): sys.modules[m] = None\n")


def test_core_works_without_the_experiment_extra():
    out = _run(BLOCK + (
        "import torch, weightmanifold as wm\n"
        "m = wm.manifoldify(torch.nn.Linear(3, 2), wm.Ellipse())\n"
        "m(torch.randn(4, 3), s=torch.rand(4)).sum().backward()\n"
        "print(type(wm.at(m, 0.2)).__name__)\n"))
    assert out.returncode == 0 and "Linear" in out.stdout, out.stderr


@pytest.mark.parametrize("module", ["weightmanifold.experiments.trainer", "weightmanifold.cli"])
def test_missing_extra_names_the_install_command(module):
    out = _run(BLOCK + f"import {module}\n")
    assert out.returncode != 0
    assert "pip install 'weightmanifold[experiments]'" in out.stderr
    assert "tqdm" in out.stderr and "matplotlib" in out.stderr
