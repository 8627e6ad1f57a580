"""The README's ten lines and the example script run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_readme_ten_lines_run():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Ten lines\s+```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 10
    my_cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 6 * 6, 3))
    loader = [(torch.randn(5, 1, 8, 8), torch.randint(0, 3, (5,)), torch.rand(5))
              for _ in range(3)]
    scope = {"my_cnn": my_cnn, "loader": loader}
    exec(block, scope)
    net = scope["net_at_90_degrees"]
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(net(x), scope["model"](x, s=0.25))


def test_example_script_runs():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "train_manifold.py"),
                          "--steps", "5"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "unseen angles" in out.stdout and "ellipse" in out.stdout
