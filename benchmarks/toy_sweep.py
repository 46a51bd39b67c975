"""Sweep RGB's inner solver (``rgb_lr`` × ``rgb_steps``) on the toy problem (paper App. A.10)
and print a markdown table: how close the five runs end to the Pareto front, how fast they
get there, the final mean loss and the cost per step. EW is the reference row.

    python benchmarks/toy_sweep.py                      # the grid in docs/toy.md
    python benchmarks/toy_sweep.py --rgb_lrs 0.1 --rgb_steps_grid 5 --steps 200   # quick

Every run uses the toy example's defaults (Adam, lr, steps, starts, f1 scale) unless told.
The chosen values become ``DEFAULT_LR`` / ``DEFAULT_STEPS`` in ``LibMTL_rgb/weighting/rgb.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "toy"))
from pareto import ParetoFront, distance_to_front  # noqa: E402
from toy_problem import DEFAULT_SCALE, parse_starts  # noqa: E402
from toy_run import DEFAULT_TOY_LR, DEFAULT_TOY_STEPS, ToyRun, optimize_from_starts, toy_front  # noqa: E402

COLUMNS = ("method", "rgb_lr", "rgb_steps", "mean dist. end", "max dist. end", "mean dist. at 1/4",
           "mean final loss", "ms/step")


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rgb_lrs", type=_floats, default=[0.01, 0.05, 0.1, 0.3, 1.0],
                        help="comma-separated values of --rgb_lr (inner projected-gradient step size)")
    parser.add_argument("--rgb_steps_grid", type=_ints, default=[1, 5, 10, 30, 50],
                        help="comma-separated values of --rgb_steps (inner steps K)")
    parser.add_argument("--steps", type=int, default=DEFAULT_TOY_STEPS, help="optimiser steps per start")
    parser.add_argument("--lr", type=float, default=DEFAULT_TOY_LR, help="Adam's learning rate on x")
    parser.add_argument("--starts", type=str, default="famo", help="start points (as the toy's --starts)")
    parser.add_argument("--scale", type=float, default=DEFAULT_SCALE, help="factor on f1")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--dtype", type=str, default="float32", choices=["float32", "float64"],
                        help="dtype of the point x and its gradients")
    return parser


def summarize(runs: Sequence[ToyRun], front: ParetoFront) -> dict[str, float]:
    """The table's numbers for one method/configuration over all starts."""
    end = np.array([run.end_distance for run in runs])
    quarter = max(1, (len(runs[0].losses) - 1) // 4)
    early = distance_to_front(torch.from_numpy(np.stack([run.losses[quarter] for run in runs])), front).numpy()
    steps = sum(len(run.losses) - 1 for run in runs)
    return {
        "mean dist. end": float(end.mean()),
        "max dist. end": float(end.max()),
        "mean dist. at 1/4": float(early.mean()),
        "mean final loss": float(np.mean([run.final_losses.mean() for run in runs])),
        "ms/step": 1000.0 * sum(run.seconds for run in runs) / steps,
    }


def format_row(values: dict) -> str:
    cells = []
    for column in COLUMNS:
        value = values.get(column, "")
        cells.append(f"{value:.3g}" if isinstance(value, float) else str(value))
    return "| " + " | ".join(cells) + " |"


def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    params = build_parser().parse_args(argv)
    torch.set_num_threads(1)  # 2-vectors: threads only add overhead
    starts = parse_starts(params.starts)
    front = toy_front(params.scale)
    options = dict(optim_param={"optim": "adam", "lr": params.lr, "weight_decay": 0.0},
                   scale=params.scale, seed=params.seed, dtype=getattr(torch, params.dtype), show_progress=False)
    configs = [("EW", None, None)] + [("RGB", lr, k) for lr in params.rgb_lrs for k in params.rgb_steps_grid]
    rows = []
    for method, rgb_lr, rgb_steps in tqdm(configs, desc="toy sweep", dynamic_ncols=True):
        weight_args = {} if method == "EW" else {"rgb_lr": rgb_lr, "rgb_steps": rgb_steps}
        runs = optimize_from_starts(method, starts, params.steps, front, weight_args=weight_args, **options)
        rows.append({"method": method, "rgb_lr": rgb_lr if rgb_lr is not None else "-",
                     "rgb_steps": rgb_steps if rgb_steps is not None else "-", **summarize(runs, front)})
    print(f"\nToy sweep: {len(starts)} starts ({params.starts}), {params.steps} Adam steps at lr {params.lr:g}, "
          f"{params.dtype}, f1 scale {params.scale:g}; distances in (f1, f2) space to the computed Pareto front ({len(front)} samples)\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print(format_row(row))
    return rows


if __name__ == "__main__":
    main()
