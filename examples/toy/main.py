"""The paper's toy experiment (App. A.10, Fig. 6): optimise the two-objective CAGrad /
Nash-MTL / FAMO toy problem from five starts with any registered weighting, print how close
each end point is to the (computed) Pareto front, and save a PNG of the trajectories.

    python examples/toy/main.py --weighting RGB
    python examples/toy/main.py --compare EW,RGB --out toy_compare.png
    python examples/toy/main.py --weighting RGB --save_path runs/toy_rgb   # + history.csv, summary.json

With ``--save_path`` it also writes the files a Trainer run writes for the benchmark grid
(``python -m LibMTL_rgb.benchmark run toy``; see toy_results.py). See examples/toy/README.md
and docs/toy.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np
import torch

from LibMTL_rgb.checkpoint import CheckpointError
from LibMTL_rgb.cli_checks import check_device, check_output_dir, declare_ranges
from LibMTL_rgb.config import make_parser, method_args, prepare_args
from LibMTL_rgb_examples.run_errors import one_line_errors
from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.utils import resolve_device

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from toy_checkpoint import load_toy_progress, save_toy_progress, toy_settings  # noqa: E402
from toy_plot import plot_runs, plot_format_problem  # noqa: E402
from toy_problem import DEFAULT_LOSS_SHIFT, DEFAULT_SCALE, START_SETS, parse_starts  # noqa: E402
from toy_results import DEFAULT_EVAL_POINTS, save_toy_results  # noqa: E402
from toy_run import (  # noqa: E402
    DEFAULT_TOY_LR, DEFAULT_TOY_STEPS, ToyRun, build_toy_model, optimize_from_starts, toy_front,
)

#: ``--dtype`` choices.
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: LibMTL flags that have no meaning for the toy (kept so the flag set stays LibMTL's).
#: Ranges of the toy's own flags.
TOY_RANGES = (Hyperparameter("steps", 1, "", minimum=1), Hyperparameter("eval_points", 1, "", minimum=1),
              Hyperparameter("scale", 1.0, "", minimum=0.0, exclusive_minimum=True), Hyperparameter("loss_shift", 0.0, ""))
UNUSED_FLAGS = ("mode", "gpu_id", "multi_input", "load_path", "scheduler", "milestones",
                "step_size", "gamma", "T_max", "eta_min", "patience", "min_lr")


def build_parser() -> argparse.ArgumentParser:
    """LibMTL's flags (every registered weighting's options included) plus the toy's."""
    parser = make_parser(
        "Toy two-objective problem of CAGrad/Nash-MTL/FAMO (RGB paper App. A.10, Fig. 6): trajectories "
        "of a weighting from five starts, distances of the end points to the computed Pareto front, a PNG."
    )
    toy = parser.add_argument_group("toy")
    toy.add_argument("--steps", type=int, default=DEFAULT_TOY_STEPS,
                     help="optimiser steps per start (the paper: 50000 at --lr 1e-3)")
    toy.add_argument("--out", type=str, default=None,
                     help="PNG to write (default: toy_<weighting>.png, or toy_compare.png with --compare; "
                          "inside --save_path when given)")
    toy.add_argument("--device", type=str, default="cpu", help="'cpu', 'cuda', 'cuda:1'... (the toy is fastest on CPU)")
    toy.add_argument("--compare", type=str, default=None,
                     help="comma-separated weightings to run and plot side by side, e.g. EW,RGB (replaces --weighting)")
    toy.add_argument("--starts", type=str, default="famo",
                     help=f"initial points: a named set ({', '.join(START_SETS)}; 'famo' is the paper's) "
                          "or 'x1,x2;x1,x2;...'")
    toy.add_argument("--scale", type=float, default=DEFAULT_SCALE,
                     help="factor on f1 (0.1 in Nash-MTL/FAMO and the paper, 1 in CAGrad)")
    toy.add_argument("--loss_shift", type=float, default=DEFAULT_LOSS_SHIFT,
                     help="the weighting sees f1 + shift*scale and f2 + shift (FAMO's toy lower bounds), so "
                          "loss-based methods (FAMO, SI, DWA...) get positive losses; gradients are unchanged")
    toy.add_argument("--dtype", type=str, default="float32", choices=sorted(DTYPES),
                     help="dtype of the point x and of its gradients (float32 as in FAMO's toy)")
    toy.add_argument("--eval_points", type=int, default=DEFAULT_EVAL_POINTS,
                     help="with --save_path: evaluation points along the run written to history.csv, one 'epoch' "
                          "each, every steps/N optimiser steps (the last one at the end)")
    toy.add_argument("--resume", type=str, default=None,
                     help="continue a run from its last.pt (or the --save_path holding it): the finished starts are "
                          "kept, the others run (same flags needed); writes into --save_path (default: that directory)")
    parser.set_defaults(weighting="RGB", lr=DEFAULT_TOY_LR, weight_decay=0.0)
    declare_ranges(parser, TOY_RANGES)
    for action in parser._actions:
        if action.dest in UNUSED_FLAGS:
            action.help = f"(not used by the toy) {action.help}"
        elif action.dest == "arch":
            action.help = "must be HPS: the toy's only shared parameter is the point x"
        elif action.dest == "save_path":
            action.help = ("directory for history.csv and summary.json in the Trainer's format (tasks f1, f2 with "
                           "metric 'value', and 'front' with the distance to the Pareto front; read by "
                           "'python -m LibMTL_rgb.benchmark') and, without --out, the PNG")
    return parser


def _weightings(params: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    names = [n.strip() for n in params.compare.split(",") if n.strip()] if params.compare else [params.weighting]
    if not names:
        parser.error("--compare needs at least one weighting name")
    for name in names:
        try:
            WEIGHTINGS.get(name)
        except ValueError as err:
            parser.error(str(err))
    return names


def _check_supported(params: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if params.arch != "HPS":
        parser.error(f"the toy's shared parameter is the point x itself, so only --arch HPS applies, got {params.arch}")
    if params.mode != "train" or params.multi_input or params.scheduler is not None or params.load_path:
        parser.error("the toy supports none of --mode test, --multi_input, --scheduler, --load_path")
    if params.save_path and params.compare:
        parser.error("--save_path records one weighting: use --weighting, not --compare")
    problem = check_device(params.device)
    if problem:
        parser.error(f"argument --device: {problem}")
    if params.resume:
        if params.compare:
            parser.error("--resume continues one weighting's run: use --weighting, not --compare")
        params.save_path = params.save_path or (params.resume if os.path.isdir(params.resume) else os.path.dirname(params.resume))
    params.out = _output_file(params, parser)
    try:
        params.start_points = parse_starts(params.starts)
    except ValueError as err:
        parser.error(str(err))


def _output_file(params: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """The PNG (or other matplotlib format) to write: ``--out`` (inside it when it is a
    directory), else the default name (inside ``--save_path`` when given); refused early when
    matplotlib cannot write its extension or its directory is not writable."""
    default = "toy_compare.png" if params.compare else f"toy_{params.weighting}.png"
    out = params.out or (os.path.join(params.save_path, default) if params.save_path else default)
    if os.path.isdir(out):
        out = os.path.join(out, default)
    problem = plot_format_problem(out) or check_output_dir(os.path.dirname(out))
    if problem:
        parser.error(f"argument --out: {problem}")
    return out


def print_runs(name: str, runs: Sequence[ToyRun], weight_args: dict) -> None:
    """One line per start: start point, final (f1, f2), distance to the front (start -> end)."""
    print(f"\n{name}  options: {weight_args or '{}'}")
    print(f"  {'start (x1, x2)':>16}  {'final f1':>9}  {'final f2':>9}  {'distance to front: start -> end':>31}")
    for run in runs:
        f1, f2 = run.final_losses
        start = f"({run.start[0]:g}, {run.start[1]:g})"
        print(f"  {start:>16}  {f1:9.4f}  {f2:9.4f}  {run.start_distance:14.4f} -> {run.end_distance:<12.4g}")
    mean_losses = np.mean([run.final_losses for run in runs], axis=0)
    mean_distance = float(np.mean([run.end_distance for run in runs]))
    seconds = sum(run.seconds for run in runs)
    print(f"  {'mean':>16}  {mean_losses[0]:9.4f}  {mean_losses[1]:9.4f}  {'':>14} -> {mean_distance:<12.4g}"
          f"({seconds:.1f} s)")


def main(argv: Optional[Sequence[str]] = None) -> dict[str, list[ToyRun]]:
    """Run the toy for ``--weighting`` (or each of ``--compare``); returns the runs by name."""
    parser = build_parser()
    params = parser.parse_args(argv)
    names = _weightings(params, parser)
    _check_supported(params, parser)
    device = resolve_device(params.device)
    for name in names:  # fail before any long run: e.g. RGB refuses --rep_grad
        try:
            build_toy_model(name, params.start_points[0], params.scale, device, params.rep_grad)  # cheap
        except ValueError as err:
            parser.error(f"{name}: {err}")
    _, optim_param, _ = prepare_args(params, verbose=False)
    front = toy_front(params.scale)
    print(f"Toy problem: {len(params.start_points)} starts, {params.steps} steps, optimizer {optim_param}, "
          f"f1 scale {params.scale:g}, {params.dtype} on {device}; Pareto front: {len(front)} computed samples")
    with one_line_errors(params.save_path):  # non-finite values, a full or read-only disk: one line
        return _run_and_save(params, parser, names, optim_param, front, device)


def _run_and_save(params: argparse.Namespace, parser: argparse.ArgumentParser, names: Sequence[str], optim_param: dict,
                  front, device) -> dict[str, list[ToyRun]]:
    results: dict[str, list[ToyRun]] = {}
    for name in names:
        weight_args = method_args(params, WEIGHTINGS.get(name))
        settings = toy_settings(params, optim_param, weight_args)
        done = _resumed_runs(params, parser, settings)
        record = (lambda runs: save_toy_progress(params.save_path, settings, runs)) if params.save_path else None
        results[name] = optimize_from_starts(  # a NonFiniteError keeps the finished starts in last.pt
            name, params.start_points, params.steps, front, optim_param=optim_param, weight_args=weight_args,
            scale=params.scale, device=device, rep_grad=params.rep_grad, shift=params.loss_shift,
            dtype=DTYPES[params.dtype], seed=params.seed, done=done, on_run=record,
        )
        print_runs(name, results[name], weight_args)
    out = params.out
    if params.save_path:
        rows = save_toy_results(params.save_path, results[names[0]], front, params.eval_points, device)
    plot_runs(results, front, params.scale, out)
    print(f"\nSaved the trajectories to {out}")
    if params.save_path:
        print(f"Saved history.csv ({len(rows)} evaluation points) and summary.json to {params.save_path}")
    return results


def _resumed_runs(params: argparse.Namespace, parser: argparse.ArgumentParser, settings: dict) -> list[ToyRun]:
    """The finished starts of ``--resume`` (none without it)."""
    if not params.resume:
        return []
    try:
        done = load_toy_progress(params.resume, settings)
    except CheckpointError as err:
        parser.error(f"argument --resume: {err}")
    print(f"Resuming: {len(done)} of {len(params.start_points)} starts already finished in {params.resume}")
    return done


if __name__ == "__main__":
    main()
