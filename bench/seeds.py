"""Many seeds on a CPU: sequential runs vs one batched (vmapped) ensemble, per seed-step.

The paper trained its 20 seeds as one ``jax.vmap``-ed ensemble on a GPU. On a
CPU the question is whether batching K networks into one call beats running
them one after another. This measures, for the paper CNN on 1×28×28 inputs
(Fashion-MNIST's shape) at batch 128, the time of one SGD step of K networks:

* ``sequential``: K separate models, stepped one after another (what
  ``weightmanifold train --seeds`` does, one run after the other);
* ``vmap``: the K models' parameters stacked and the step computed with
  ``torch.func.vmap(grad(...))`` over them, all K seeing the same batch (the
  paper's setting), followed by one SGD update of the stacked parameters.

Both for the plain network. The manifold network runs under ``vmap`` too since
its conditioning became a value (no distinct-value detection; tested by
per-sample gradients in ``tests/test_conditioning.py``), but a batched manifold
ensemble is only worth timing if the plain ensemble shows a gain.

Run: ``python bench/seeds.py`` (``--ensemble 4 8`` for other sizes).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, stack_module_state, vmap

from weightmanifold.experiments.models import paper_cnn


def measure(k: int, x: torch.Tensor, y: torch.Tensor, rounds: int) -> tuple[float, float]:
    """Median seconds of one step of K models: sequential, vmapped."""
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(paper_cnn(1, 28))
    opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in models]

    def sequential() -> None:
        for m, o in zip(models, opts):
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()

    params, buffers = stack_module_state(copy.deepcopy(models))
    base = copy.deepcopy(models[0]).to("meta")
    momentum = {n: torch.zeros_like(p) for n, p in params.items()}

    def loss_fn(p: dict, b: dict) -> torch.Tensor:
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    grads_fn = vmap(grad(loss_fn))

    def batched() -> None:
        g = grads_fn({n: p.detach() for n, p in params.items()}, buffers)
        with torch.no_grad():
            for n, p in params.items():
                momentum[n].mul_(0.9).add_(g[n])
                p.sub_(0.01 * momentum[n])

    times: dict[str, list[float]] = {"seq": [], "vmap": []}
    for r in range(rounds + 2):
        for name, fn in (("seq", sequential), ("vmap", batched)):
            t0 = time.perf_counter()
            fn()
            if r >= 2:
                times[name].append(time.perf_counter() - t0)
    seq, vm = statistics.median(times["seq"]), statistics.median(times["vmap"])
    return seq, vm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ensemble", type=int, nargs="+", default=[4],
                        help="numbers of seeds K to compare")
    parser.add_argument("--batch", type=int, default=128, help="batch size")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (interleaved)")
    args = parser.parse_args()

    x = torch.randn(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(f"{'K':>3}{'sequential ms':>15}{'vmap ms':>10}{'vmap/seq':>10}")
    for k in args.ensemble:
        seq, vm = measure(k, x, y, args.rounds)
        print(f"{k:>3}{1000 * seq:>15.1f}{1000 * vm:>10.1f}{vm / seq:>10.2f}")


if __name__ == "__main__":
    main()
