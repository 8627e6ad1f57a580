"""Time a full SGD training step of the paper CNN, plain vs manifold, as ratios in one run.

The paper CNN (conv 32/64/128, 3×3 "same", max-pool 2, dense 512, ReLU; Appendix D;
``weightmanifold.experiments.models.paper_cnn``) at batch 128 on 3×32×32 inputs.
Variants, interleaved round-robin after warm-up in this one process, each reported
as the median step time and its ratio to the plain network in the same rounds:

* ``plain``: the ordinary network, SGD with momentum;
* ``ellipse`` / ``line``: ``manifoldify(cnn, Ellipse()/Line())``, one condition
  per example, ``Preconditioned`` SGD with momentum;
* ``ellipse-output-mix``: the ellipse with every layer forced to the n×-wide
  output-mixing path (what ``mix="auto"`` avoids where the inputs are smaller);
* ``ellipse-example``: the ellipse with its convolutions on ``path="example"``
  (each example's kernels mixed by one matrix product, one grouped convolution);
* ``per-example-vmap``: the reference path — every example's weights
  materialised and the network run with ``torch.func.vmap(functional_call)``;
* ``per-example-loop``: the same, one example at a time (the tests' reference);
* ``condconv``: CondConv-style — every example's kernels materialised and each
  conv run as one grouped convolution with ``groups = batch``;
* ``plain-compiled`` / ``ellipse-compiled``: the plain network and the ellipse
  (per-example ``s``) under ``torch.compile(fullgraph=True)``, the optimiser step
  eager; the compiled ellipse is reported as a ratio to the compiled plain
  network, and the first (compiling) step's time is printed;
* ``ellipse-r4`` / ``-r8`` / ``-r16``: the low-rank ellipse,
  ``manifoldify(cnn, Ellipse(), rank=r, init=0.1)`` (the 10-way head at rank
  ``min(r, 10)``), one condition per example,
  ``Preconditioned`` SGD (the block solve of the low-rank metric);
  ``ellipse-r8-joint``: the same at rank 8 with the joint (conjugate-gradient)
  solve;
* ``bspline4`` / ``bspline12``: a clamped cubic B-spline with ``n = 4`` / ``12``
  (``init="independent"``), one condition per example, ``Preconditioned`` SGD;
  at ``n = 12`` the batch is grouped by window of ``p + 1 = 4`` non-zero
  coefficients (eager), ``bspline12-basis`` forces the basis path on all 12,
  ``bspline12-window`` keeps the dense layer off the banded path (per window
  or the basis path, as before it existed), ``bspline12-windows`` keeps the
  convolutions off the per-example path (per window, as before it existed);
  ``bspline12-sorted`` sorts the batch by ``s`` first (as the diffusion
  trainer does), so that no layer gathers or scatters its activations;
* ``precondition``: the metric preconditioning alone (part of the ellipse step);
  ``precondition-r8``: the low-rank block preconditioning alone (part of the
  ``ellipse-r8`` step);
* ``at-inference`` vs ``plain-inference``: a forward pass of ``wm.at(model, s)``
  against the plain network.

Peak memory (max RSS of a fresh process running a few steps of one variant) is
measured in subprocesses, one per variant. The parameter count of each trained
variant's model is printed with its ratio to the plain network's.

Run: ``python bench/step_time.py`` (add ``--rounds`` for more repetitions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

import weightmanifold as wm
from weightmanifold.experiments.models import capped_rank, paper_cnn
from weightmanifold.experiments.runtime import tune_malloc


class Setup:
    def __init__(self, batch: int, seed: int = 0, padding: str = "same") -> None:
        torch.manual_seed(seed)
        self.x = torch.randn(batch, 3, 32, 32)
        self.y = torch.randint(0, 10, (batch,))
        self.s = torch.rand(batch)
        self.plain = paper_cnn(padding=padding)
        self.padding = padding
        self.compile_s: dict[str, float] = {}
        self.parameters: dict[str, int] = {"plain": sum(p.numel()
                                                        for p in self.plain.parameters())}

    def sgd(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(self, model: nn.Module, opt: torch.optim.Optimizer,
             forward: Callable[[], torch.Tensor],
             y: torch.Tensor | None = None) -> Callable[[], None]:
        target = self.y if y is None else y

        def run() -> None:
            opt.zero_grad()
            F.cross_entropy(forward(), target).backward()
            opt.step()
        return run

    def variant(self, name: str) -> Callable[[], None]:
        x, s = self.x, self.s
        if name in ("plain-compiled", "ellipse-compiled"):
            net: nn.Module = paper_cnn(padding=self.padding)
            net.load_state_dict(self.plain.state_dict())
            if name == "ellipse-compiled":
                net = wm.manifoldify(net, wm.Ellipse(), init="independent")
                opt = wm.Preconditioned(self.sgd(net), net)
                compiled = torch.compile(net, fullgraph=True)
                run = self.step(net, opt, lambda: compiled(x, s=s))
            else:
                opt = self.sgd(net)
                compiled = torch.compile(net, fullgraph=True)
                run = self.step(net, opt, lambda: compiled(x))
            t0 = time.perf_counter()
            run()  # compiles forward and backward
            self.compile_s[name] = time.perf_counter() - t0
            return run
        if name == "plain":
            net = self.plain
            return self.step(net, self.sgd(net), lambda: net(x))
        if name in ("ellipse", "line", "ellipse-output-mix", "ellipse-example"):
            manifold = wm.Line() if name == "line" else wm.Ellipse()
            model = wm.manifoldify(self.plain, manifold, init="independent")
            self.parameters[name] = sum(p.numel() for p in model.parameters())
            if name == "ellipse-output-mix":  # the n×-wide output path everywhere
                for m in model.modules():
                    if isinstance(m, wm.layers.ManifoldOp):
                        m.mix = "output"
            if name == "ellipse-example":  # each example's own kernels (convolutions)
                for m in model.modules():
                    if isinstance(m, wm.ManifoldConv2d):
                        m.path = "example"
            opt = wm.Preconditioned(self.sgd(model), model)
            return self.step(model, opt, lambda: model(x, s=s))
        if name.startswith("bspline"):
            n = int(name.removeprefix("bspline").split("-")[0])
            model = wm.manifoldify(self.plain, wm.BSpline(n, degree=3), init="independent")
            opt = wm.Preconditioned(self.sgd(model), model)
            self.parameters[name] = sum(p.numel() for p in model.parameters())
            local = None if not name.endswith("-basis") else False
            if name.endswith("-window"):  # dense layers per window, as before the banded path
                for m in model.modules():
                    if isinstance(m, wm.layers.ManifoldOp):
                        m._banded = False
            if name.endswith("-windows"):  # convolutions per window, as before the
                for m in model.modules():  # per-example path
                    if isinstance(m, wm.layers.ManifoldOp):
                        m._kernel_per_example = False
            y = self.y
            if name.endswith("-sorted"):  # the batch sorted by s: no per-layer gathers
                order = s.argsort()
                x, y, s = x[order], y[order], s[order]
            return self.step(model, opt,
                             lambda: model(x, s=wm.condition(model, s, local=local)), y)
        if name.startswith("ellipse-r"):
            rank = int(name.split("-")[1][1:])
            model = wm.manifoldify(self.plain, wm.Ellipse(), rank=capped_rank(rank), init=0.1)
            opt = wm.Preconditioned(self.sgd(model), model,
                                    low_rank="joint" if name.endswith("joint") else "block")
            self.parameters[name] = sum(p.numel() for p in model.parameters())
            return self.step(model, opt, lambda: model(x, s=s))
        if name in ("precondition", "precondition-r8"):
            model = wm.manifoldify(self.plain, wm.Ellipse(), init="independent") \
                if name == "precondition" else \
                wm.manifoldify(self.plain, wm.Ellipse(), rank=8, init=0.1)
            opt = wm.Preconditioned(self.sgd(model), model)
            F.cross_entropy(model(x, s=s), self.y).backward()

            def precondition() -> None:
                opt._marked.clear()  # precondition the same gradients again each call
                opt.precondition()

            return precondition
        if name == "per-example-vmap":
            return self._per_example_vmap()
        if name == "per-example-loop":
            return self._per_example_loop()
        if name == "condconv":
            return self._condconv()
        if name == "plain-inference":
            net = self.plain.eval()
            return lambda: _no_grad(net, x)
        if name == "at-inference":
            model = wm.manifoldify(self.plain, wm.Ellipse(), init="independent")
            net = wm.at(model, 0.3).eval()
            return lambda: _no_grad(net, x)
        raise ValueError(f"unknown variant {name!r}; valid: {', '.join(VARIANTS)}")

    def _per_example_vmap(self) -> Callable[[], None]:
        model = wm.manifoldify(self.plain, wm.Ellipse(), init="independent")
        opt = wm.Preconditioned(self.sgd(model), model)
        names = [n for n, _ in model.module.named_parameters()]
        plain = self.plain

        def one(params: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
            return functional_call(plain, params, (xi[None],))[0]

        def forward() -> torch.Tensor:
            a = model.manifold.coefficients(self.s)
            params = {n: torch.einsum("bk,k...->b...", a, p)
                      for n, p in zip(names, model.module.parameters())}
            return vmap(one)(params, self.x)

        return self.step(model, opt, forward)

    def _per_example_loop(self) -> Callable[[], None]:
        model = wm.manifoldify(self.plain, wm.Ellipse(), init="independent")
        opt = wm.Preconditioned(self.sgd(model), model)
        names = [n for n, _ in model.module.named_parameters()]
        plain = self.plain

        def forward() -> torch.Tensor:
            a = model.manifold.coefficients(self.s)
            outs = []
            for i in range(len(self.x)):
                params = {n: torch.tensordot(a[i], p, 1)
                          for n, p in zip(names, model.module.parameters())}
                outs.append(functional_call(plain, params, (self.x[i : i + 1],)))
            return torch.cat(outs)

        return self.step(model, opt, forward)

    def _condconv(self) -> Callable[[], None]:
        model = wm.manifoldify(self.plain, wm.Ellipse(), init="independent")
        opt = wm.Preconditioned(self.sgd(model), model)
        layers = list(model.module)

        def forward() -> torch.Tensor:
            a = model.manifold.coefficients(self.s)
            h = self.x
            b = h.shape[0]
            for layer in layers:
                if isinstance(layer, wm.ManifoldConv2d):
                    w = torch.einsum("bk,k...->b...", a, layer.weight)  # [B, out, in, k, k]
                    bias = a @ layer.bias
                    out = F.conv2d(h.reshape(1, -1, *h.shape[2:]),
                                   w.reshape(-1, *w.shape[2:]), bias.reshape(-1),
                                   layer.stride, layer.padding, layer.dilation, groups=b)
                    h = out.reshape(b, -1, *out.shape[2:])
                elif isinstance(layer, wm.ManifoldLinear):
                    w = torch.einsum("bk,koi->boi", a, layer.weight)
                    h = torch.einsum("boi,bi->bo", w, h) + a @ layer.bias
                else:
                    h = layer(h)
            return h

        return self.step(model, opt, forward)


def _no_grad(net: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        net(x)


VARIANTS = ["plain", "ellipse", "ellipse-output-mix", "ellipse-example", "line", "ellipse-r4",
            "ellipse-r8", "ellipse-r16", "ellipse-r8-joint", "bspline4", "bspline12",
            "bspline12-basis", "bspline12-window", "bspline12-windows", "bspline12-sorted",
            "plain-compiled", "ellipse-compiled",
            "per-example-vmap", "per-example-loop", "condconv", "precondition",
            "precondition-r8", "plain-inference", "at-inference"]
#: variants timed against another reference than the eager plain step
REFERENCE = {"plain-inference": "plain-inference", "at-inference": "plain-inference",
             "ellipse-compiled": "plain-compiled"}


def peak_memory(variant: str, batch: int, padding: str, tuned: bool, steps: int = 3) -> float:
    """Peak resident memory (MiB) added by ``steps`` calls of one variant, in a fresh process.

    The kernel's high-water mark is reset (``/proc/self/clear_refs``) after the
    set-up, so the figure is the step's own working set: activations,
    gradients, intermediates and optimiser state, not torch's import.
    """
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})\n"
        "from step_time import Setup, tune_malloc\n"
        f"if {tuned}: tune_malloc()\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        "def status(key):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(key): return int(line.split()[1])\n"
        f"setup = Setup({batch}, padding={padding!r})\n"
        f"run = setup.variant({variant!r})\n"
        "base = status('VmRSS')\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        f"for _ in range({steps}): run()\n"
        "print(status('VmHWM') - base)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batch", type=int, default=128, help="batch size")
    parser.add_argument("--rounds", type=int, default=15,
                        help="timed rounds (each runs every variant once, interleaved)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS,
                        help="variants to time")
    parser.add_argument("--padding", choices=["same", "valid"], default="same",
                        help="padding of the CNN's convolutions")
    parser.add_argument("--tune-malloc", action="store_true",
                        help="apply weightmanifold.experiments.runtime.tune_malloc() first "
                             "(what the training command line does by default)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory subprocesses")
    parser.add_argument("--json", type=str, default=None, help="also write results here")
    args = parser.parse_args()

    if args.tune_malloc:
        print("malloc tuned:", tune_malloc())
    setup = Setup(args.batch, padding=args.padding)
    runs = {name: setup.variant(name) for name in args.variants}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.warmup + args.rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    results = {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.padding} padding, {args.rounds} rounds (median)")
    print(f"{'variant':<20}{'ms':>10}{'ratio':>9}{'peak MiB':>11}{'params':>11}"
          f"{'x plain':>9}")
    for name in runs:
        base = med.get(REFERENCE.get(name, "plain"))
        ratio = med[name] / base if base else float("nan")
        # compiled variants would compile again in the memory subprocess: not measured
        mem = (float("nan") if args.no_memory or name in setup.compile_s
               else peak_memory(name, args.batch, args.padding, args.tune_malloc))
        params = setup.parameters.get(name)
        p_ratio = params / setup.parameters["plain"] if params else float("nan")
        results[name] = {"median_ms": 1000 * med[name], "ratio": ratio, "peak_mib": mem,
                         "parameters": params, "parameter_ratio": p_ratio}
        print(f"{name:<20}{1000 * med[name]:>10.1f}{ratio:>9.2f}{mem:>11.0f}"
              f"{params if params else '':>11}{p_ratio:>9.3f}")
    for name, seconds in setup.compile_s.items():
        ratio = med[name] / med["plain"] if "plain" in med else float("nan")
        print(f"{name}: first step (compiling) {seconds:.1f} s; steady step {ratio:.2f}x "
              "the eager plain step")
        results[name].update({"compile_s": seconds, "ratio_to_eager_plain": ratio})
    if "precondition" in med and "ellipse" in med:
        share = med["precondition"] / med["ellipse"]
        print(f"preconditioning is {100 * share:.2f} % of an ellipse step")
        results["precondition_share_of_ellipse_step"] = share
    if "precondition-r8" in med and "ellipse-r8" in med:
        share = med["precondition-r8"] / med["ellipse-r8"]
        print(f"low-rank preconditioning is {100 * share:.2f} % of an ellipse-r8 step")
        results["precondition_share_of_ellipse_r8_step"] = share
    if "bspline4" in med:
        for other in ("bspline12", "bspline12-basis", "bspline12-window", "bspline12-windows",
                      "bspline12-sorted"):
            if other in med:
                share = med[other] / med["bspline4"]
                print(f"{other} step is {share:.2f}x the bspline4 step")
                results[f"{other}_over_bspline4"] = share
    for other in ("per-example-vmap", "per-example-loop", "condconv"):
        if other in med and "ellipse" in med:
            print(f"ellipse step is {med[other] / med['ellipse']:.1f}x faster than {other}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
