"""Time RGB's aggregation (per-task gradients G [T, D] → update direction, one
``LibMTL_rgb.rgb.rgb_step``) against one Gram product G·Gᵀ, for K = 5 and K = 50 inner steps,
and against a direct O(K·T²·D) implementation of Algorithm 1 (the paper's cost, App. A.13).

    python benchmarks/rgb_aggregation.py                         # T = 11 and 40, D = 2·10⁶
    python benchmarks/rgb_aggregation.py --tasks 11 --dim 200000 --repeats 3   # quick
    python benchmarks/rgb_aggregation.py --device cuda

Targets checked (PASS/FAIL rows at the end):
  1. rgb_step with K=50 takes at most 1.1× its time with K=5 (T=11, D=2·10⁶);
  2. rgb_step costs at most 3× one Gram product on the same G (every T given).
Memory (target 4) is measured by ``benchmarks/memory.py``.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from _timing import Check, add_common_flags, checks_table, describe, machine_line, markdown_table, setup_from_flags, time_interleaved
from LibMTL_rgb.rgb import rgb_step

TARGET1_TASKS = 11
TARGET1_LIMIT = 1.1
TARGET2_LIMIT = 3.0


def random_gradients(tasks: int, dim: int, device: torch.device, dtype: torch.dtype, seed: int) -> Tensor:
    """A [T, D] matrix of correlated per-task gradients (a shared part plus task noise) with
    norms spread over two orders of magnitude, like real multi-task gradients."""
    gen = torch.Generator(device=device).manual_seed(seed)
    grads = torch.randn(tasks, dim, generator=gen, device=device, dtype=dtype)
    grads.add_(torch.randn(1, dim, generator=gen, device=device, dtype=dtype))
    grads.mul_(torch.logspace(-1, 1, tasks, device=device, dtype=dtype).unsqueeze(1))
    return grads


def previous_ema(grads: Tensor) -> Tensor:
    """A realistic ``d_{t-1}``: the EMA after one step on ``grads`` (steady-state call pattern)."""
    return rgb_step(grads, None, steps=0).ema.clone()


def direct_rgb_direction(grads: Tensor, ema: Tensor, steps: int, mu: float = 0.9, lam: float = 0.0,
                         lr: float = 0.1, eps: float = 1e-8) -> Tensor:
    """Algorithm 1 on explicit D-vectors: every inner step forms r_i(α) ([T, D]) and R Rᵀ,
    and autograd differentiates Eq. 1 through them: O(K·T²·D), the paper's cost."""
    T = grads.shape[0]
    gbar = grads / (grads.norm(dim=1, keepdim=True) + eps)
    y = gbar.mean(dim=0)
    d = mu * ema + (1.0 - mu) * y / (y.norm() + eps)
    w = d.unsqueeze(0) - (gbar @ d).unsqueeze(1) * gbar
    w = w / (w.norm(dim=1, keepdim=True) + eps)

    def rotated(alpha: Tensor) -> Tensor:
        return torch.cos(alpha).unsqueeze(1) * gbar + torch.sin(alpha).unsqueeze(1) * w

    alpha = grads.new_zeros(T)
    for _ in range(steps):
        alpha.requires_grad_(True)
        r = rotated(alpha)
        rr = r @ r.T
        conflict = (T * (T - 1) - (rr.sum() - rr.diagonal().sum())) / (2.0 * T * (T - 1))
        objective = conflict if lam == 0 else conflict + lam / (4.0 * T) * (r - gbar).pow(2).sum()
        (grad,) = torch.autograd.grad(objective, alpha)
        alpha = (alpha.detach() - lr * grad).clamp_(0.0, math.pi / 2)
    r = rotated(alpha)
    r = r / (r.norm(dim=1, keepdim=True) + eps)
    return r.mean(dim=0)


def aggregation_cases(grads: Tensor, step_counts: Sequence[int]) -> dict[str, Callable[[], object]]:
    """One Gram product, and ``rgb_step`` (steady state: with a previous EMA) for each K."""
    ema = previous_ema(grads)
    cases: dict[str, Callable[[], object]] = {"Gram G·Gᵀ": lambda: grads @ grads.T}
    for steps in step_counts:
        cases[f"rgb_step K={steps}"] = lambda steps=steps: rgb_step(grads, ema, steps=steps)
    return cases


def direct_comparison(tasks: int, dim: int, steps: int, device: torch.device, dtype: torch.dtype,
                      args: argparse.Namespace) -> str:
    """The paper's O(K·T²·D) form against the Gram form at one (T, D): a table, plus their gap."""
    grads = random_gradients(tasks, dim, device, dtype, args.seed)
    ema = previous_ema(grads)
    cases = {
        f"rgb_step K={steps} (Gram form)": lambda: rgb_step(grads, ema, steps=steps),
        f"direct O(K·T²·D) K={steps}": lambda: direct_rgb_direction(grads, ema, steps),
    }
    timings = time_interleaved(cases, device, args.direct_repeats, 1, desc="direct")
    gap = (direct_rgb_direction(grads, ema, steps) - rgb_step(grads, ema, steps=steps).direction).abs().max()
    first = next(iter(cases))
    rows = [[tasks, f"{dim:,}", name, *describe(timings, name, first)] for name in cases]
    table = markdown_table(["T", "D", "case", "median ms", "spread", "× Gram form"], rows)
    return f"{table}\n(the two directions differ by at most {float(gap):.1e})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tasks", type=int, nargs="+", default=[11, 40], help="numbers of tasks T to measure")
    parser.add_argument("--dim", type=int, default=2_000_000, help="number of shared parameters D")
    parser.add_argument("--small_steps", type=int, default=5, help="the small K")
    parser.add_argument("--large_steps", type=int, default=50, help="the large K")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="dtype of G")
    parser.add_argument("--direct", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the direct O(K·T²·D) Algorithm 1 with the large K against rgb_step "
                             "(at the first T and --direct_dim)")
    parser.add_argument("--direct_dim", type=int, default=200_000,
                        help="D of the direct comparison (the direct form needs minutes per call at D = 2·10⁶ on a CPU)")
    parser.add_argument("--direct_repeats", type=int, default=3, help="timed rounds of the direct comparison")
    add_common_flags(parser, repeats=9)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> list[Check]:
    args = build_parser().parse_args(argv)
    device = setup_from_flags(args)
    if args.dim < 1 or min(args.tasks) < 2 or min(args.small_steps, args.large_steps) < 0:
        raise SystemExit("need --dim >= 1, every --tasks >= 2 and step counts >= 0")
    dtype = getattr(torch, args.dtype)
    k_small, k_large = args.small_steps, args.large_steps
    print(machine_line(device))
    print(f"D = {args.dim:,}, dtype {args.dtype}, device {device}, median of {args.repeats} interleaved rounds\n")

    rows, checks = [], []
    for tasks in args.tasks:
        cases = aggregation_cases(random_gradients(tasks, args.dim, device, dtype, args.seed), (k_small, k_large))
        timings = time_interleaved(cases, device, args.repeats, args.warmup, desc=f"T={tasks}")
        del cases  # frees this T's G before the next one is drawn
        for name in timings:
            rows.append([tasks, name, *describe(timings, name, "Gram G·Gᵀ")])
        gram = timings["Gram G·Gᵀ"].median
        small, large = timings[f"rgb_step K={k_small}"].median, timings[f"rgb_step K={k_large}"].median
        if tasks == TARGET1_TASKS:
            checks.append(Check("1", f"rgb_step K={k_large} / K={k_small}, T={tasks}, D={args.dim:,}", large / small, TARGET1_LIMIT))
        checks.append(Check("2", f"rgb_step K={k_small} / Gram, T={tasks}, D={args.dim:,}", small / gram, TARGET2_LIMIT))
        checks.append(Check("2", f"rgb_step K={k_large} / Gram, T={tasks}, D={args.dim:,}", large / gram, TARGET2_LIMIT))

    print(markdown_table(["T", "case", "median ms", "spread", "× Gram"], rows))
    print()
    if args.direct:
        print(direct_comparison(args.tasks[0], min(args.dim, args.direct_dim), k_large, device, dtype, args))
        print()
    print(checks_table(checks))
    return checks


if __name__ == "__main__":
    sys.exit(0 if all(c.passed for c in main()) else 1)
