"""A short example: a network on an ellipse manifold generalises to unseen rotation angles.

Points of two interleaved half-moons are rotated by an angle 2πs; the label does
not change. Training sees only a few angles (``--train-angles``). Two networks
with the same architecture are trained with SGD + momentum:

* ``ellipse``: every weight on the ellipse W(s) = W1 + W2 cos 2πs + W3 sin 2πs,
  trained with the metric-preconditioned step;
* ``concat``: a plain network that gets (cos 2πs, sin 2πs) as two extra inputs.

Both are evaluated on every angle. The first layer of the ellipse network can
represent W0·R(-2πs) exactly, so it needs few training angles; the concat
network has to learn the rotation from them.

Run: ``python examples/train_manifold.py`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

import weightmanifold as wm


def moons(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, 2, (n,), generator=gen)
    t = torch.rand(n, generator=gen) * math.pi
    x = torch.stack([torch.cos(t), torch.sin(t)], 1)
    x[y == 1] = torch.stack([1 - torch.cos(t[y == 1]), 0.5 - torch.sin(t[y == 1])], 1)
    x = x - torch.tensor([0.5, 0.25])
    return x + 0.1 * torch.randn(n, 2, generator=gen), y


def rotate(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    c, sn = torch.cos(2 * math.pi * s), torch.sin(2 * math.pi * s)
    return torch.stack([c * x[:, 0] - sn * x[:, 1], sn * x[:, 0] + c * x[:, 1]], 1)


def mlp(inputs: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--train-angles", type=int, default=6,
                        help="number of distinct rotation angles seen in training (of 36)")
    parser.add_argument("--steps", type=int, default=1500, help="SGD steps per network")
    parser.add_argument("--batch-size", type=int, default=128, help="examples per step")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and weights")
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(args.seed)
    grid = torch.arange(36) / 36  # the discretised circle
    seen = grid[torch.randperm(36, generator=gen)[: args.train_angles]]
    x_test, y_test = moons(4000, gen)

    torch.manual_seed(args.seed)
    manifold = wm.Ellipse()
    models = {
        "ellipse": wm.manifoldify(mlp(2), manifold, init="independent"),
        "concat": mlp(4),
    }

    def forward(name: str, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if name == "ellipse":
            return models[name](x, s=s)
        phase = torch.stack([torch.cos(2 * math.pi * s), torch.sin(2 * math.pi * s)], 1)
        return models[name](torch.cat([x, phase], 1))

    for name, model in models.items():
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
        if name == "ellipse":
            opt = wm.Preconditioned(opt, model)
        for _ in range(args.steps):
            x, y = moons(args.batch_size, gen)
            s = seen[torch.randint(0, len(seen), (args.batch_size,), generator=gen)]
            loss = nn.functional.cross_entropy(forward(name, rotate(x, s), s), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    print(f"training angles: {sorted(round(float(a) * 360) for a in seen)} degrees")
    print(f"{'model':<10}{'seen angles':>14}{'unseen angles':>16}")
    seen_set = set(seen.tolist())
    for name in models:
        acc = {True: [], False: []}
        with torch.no_grad():
            for a in grid:
                s = torch.full((len(x_test),), float(a))
                pred = forward(name, rotate(x_test, s), s).argmax(1)
                acc[float(a) in seen_set].append((pred == y_test).float().mean().item())
        print(f"{name:<10}{100 * sum(acc[True]) / len(acc[True]):>13.1f}%"
              f"{100 * sum(acc[False]) / len(acc[False]):>15.1f}%")


if __name__ == "__main__":
    main()
