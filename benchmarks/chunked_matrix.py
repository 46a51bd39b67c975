"""Peak host memory and step time of the chunked matrix path against the matrix path (CPU).

A shared MLP of ``--layers`` 1024×1024 layers (D ≈ layers × 1.05 M parameters), T tasks with
one linear head each, float32. For each method (GradDrop; GradVac per parameter tensor) and
path (the whole ``[T, D]`` matrix; chunks of ``--budget_mb``), a fresh process builds the
model, runs one summed-loss step (the baseline peak: model, graph, ``.grad``), then one step
of the method; it reports the growth of the peak resident set (``ru_maxrss``) over that
baseline and the step's time. Printed: both paths and their ratios, measured in one run.
GradVac's ``gradient_path()`` beyond the budget is ``"gramian"`` (its group type 0 takes it);
per tensor its groups take the chunks.

    python benchmarks/chunked_matrix.py --layers 16 --tasks 8 --budget_mb 64
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn as nn

from LibMTL_rgb.trainer import build_mtl_model


def encoder(layers: int, width: int) -> nn.Module:
    modules: list[nn.Module] = []
    for _ in range(layers):
        modules += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*modules)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def one_run(method: str, budget: int | None, layers: int, tasks: int, width: int, weight_args: dict) -> dict:
    torch.manual_seed(0)
    names = [f"t{i}" for i in range(tasks)]
    decoders = nn.ModuleDict({t: nn.Linear(width, 1) for t in names})
    model = build_mtl_model(method, "HPS", names, lambda: encoder(layers, width), decoders, False, False, torch.device("cpu"))
    model.grad_method = "loop"
    model.grad_memory_budget = budget
    model.train()
    x = torch.randn(32, width)

    def losses() -> torch.Tensor:
        out = model(x)
        return torch.stack([out[t].pow(2).mean() for t in names])

    losses().sum().backward()  # baseline: graph and .grad of every parameter
    model.zero_grad(set_to_none=False)
    baseline = peak_mb()
    step = losses()
    start = time.perf_counter()
    model.backward(step, **weight_args)
    seconds = time.perf_counter() - start
    return {"path": model.gradient_path(), "extra_mb": peak_mb() - baseline, "seconds": seconds,
            "dim": model.grad_dim, "matrix_mb": tasks * model.grad_dim * 4 / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--budget_mb", type=float, default=64.0)
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        method, budget, weight_args = json.loads(args.child)
        print(json.dumps(one_run(method, budget, args.layers, args.tasks, args.width, weight_args)))
        return
    budget = int(args.budget_mb * 1e6)
    print(f"T = {args.tasks}, {args.layers} shared {args.width}x{args.width} layers, float32, CPU, budget {args.budget_mb:g} MB")
    print(f"{'method':<22} {'path':<8} {'extra peak MB':>14} {'step s':>8}")
    for method, weight_args in (("GradDrop", {}), ("GradVac", {"GradVac_group_type": 2})):
        results = []
        for path_budget in (None, budget):
            child = json.dumps([method, path_budget, weight_args])
            out = subprocess.run([sys.executable, __file__, "--layers", str(args.layers), "--width", str(args.width),
                                  "--tasks", str(args.tasks), "--child", child], check=True, capture_output=True, text=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(result)
            label = method + ("" if not weight_args else " (per tensor)")
            print(f"{label:<22} {result['path']:<8} {result['extra_mb']:>14.0f} {result['seconds']:>8.2f}")
        matrix, chunked = results
        print(f"  [T, D] = [{args.tasks}, {matrix['dim']}] takes {matrix['matrix_mb']:.0f} MB; chunked/matrix: "
              f"extra peak {chunked['extra_mb'] / matrix['extra_mb']:.2f}, step time {chunked['seconds'] / matrix['seconds']:.2f}")


if __name__ == "__main__":
    main()
