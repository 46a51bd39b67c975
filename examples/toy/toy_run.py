"""Optimising the toy problem with any registered weighting, through the library's own
composition: ``build_mtl_model(weighting, 'HPS', ...)`` and LibMTL's step
``optimizer.zero_grad(); model.backward(losses, **weight_args); optimizer.step()``."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from LibMTL_rgb.progress import progress_bar

from LibMTL_rgb.nonfinite import NonFiniteError, NonFiniteGuard
from LibMTL_rgb.trainer import OPTIMIZERS, build_mtl_model
from LibMTL_rgb.utils import set_random_seed

from pareto import ParetoFront, distance_to_front, pareto_front
from toy_problem import DEFAULT_LOSS_SHIFT, DEFAULT_SCALE, DOMAIN_LIMIT, TASKS, ToyPoint, toy_decoders, toy_losses

#: Optimiser steps per start by default: the five starts take well under a minute on CPU.
DEFAULT_TOY_STEPS = 2000
#: Adam's step size by default. FAMO/Nash-MTL use 1e-3 for 50000/35000 steps; Adam moves
#: about ``lr`` per step, so 2e-2 x 2000 steps allows a similar path length (docs/toy.md).
DEFAULT_TOY_LR = 2e-2


@dataclass
class ToyRun:
    """One optimisation from one start: ``path`` ``[steps + 1, 2]`` (x-space, start first),
    ``losses`` ``[steps + 1, 2]`` (f1, f2 along the path), distances to the Pareto front of
    the start and of the end point (loss space), the wall time, and ``elapsed``
    ``[steps + 1]``: the seconds spent up to each point of the path (0 at the start)."""

    weighting: str
    start: tuple[float, float]
    path: np.ndarray
    losses: np.ndarray
    start_distance: float
    end_distance: float
    seconds: float
    elapsed: np.ndarray

    @property
    def final_losses(self) -> np.ndarray:
        return self.losses[-1]


def toy_front(scale: float = DEFAULT_SCALE) -> ParetoFront:
    """The toy's Pareto front over the plotted square (computed afresh, about a second)."""
    return pareto_front(lambda points: toy_losses(points, scale), DOMAIN_LIMIT)


def build_toy_model(
    weighting: str, start: Sequence[float], scale: float = DEFAULT_SCALE,
    device: "torch.device | str" = "cpu", rep_grad: bool = False, shift: float = DEFAULT_LOSS_SHIFT,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """``MTLmodel(HPS, weighting)`` whose shared parameter is the point x (``ToyPoint``, of
    ``dtype``) and whose decoders evaluate f1 and f2 plus ``shift`` (no parameters)."""
    return build_mtl_model(
        weighting, "HPS", list(TASKS), encoder_class=lambda: ToyPoint(start, dtype), decoders=toy_decoders(scale, shift),
        rep_grad=rep_grad, multi_input=False, device=torch.device(device), arch_args={},
    )


def make_optimizer(model: nn.Module, optim_param: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The Trainer's optimizers, from ``prepare_args``' ``optim_param`` (``{'optim': 'adam', ...}``)."""
    options = dict(optim_param)
    name = options.pop("optim", "adam")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](model.parameters(), **options)


def optimize_toy(
    weighting: str,
    start: Sequence[float],
    steps: int,
    optim_param: Mapping[str, Any],
    weight_args: Mapping[str, Any],
    front: ParetoFront,
    scale: float = DEFAULT_SCALE,
    device: "torch.device | str" = "cpu",
    rep_grad: bool = False,
    shift: float = DEFAULT_LOSS_SHIFT,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    progress: Optional[tqdm] = None,
) -> ToyRun:
    """Run ``steps`` optimiser steps from ``start`` and measure the end point against ``front``.

    Each step is treated as one "epoch" for methods that read the Trainer's bookkeeping
    (``self.epoch``, ``self.epochs``, ``self.train_loss_buffer[:, epoch]`` = that step's
    losses, as DWA expects), because the toy is deterministic and full-batch. The weighting
    sees the losses plus ``shift`` (:data:`~toy_problem.DEFAULT_LOSS_SHIFT`); the recorded
    losses and distances are of f1, f2 themselves.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    set_random_seed(seed)
    model = build_toy_model(weighting, start, scale, device, rep_grad, shift, dtype)
    optimizer = make_optimizer(model, optim_param)
    guard = NonFiniteGuard()  # the Trainer's checks: no silent NaN path
    model.epochs = steps
    model.train_loss_buffer = np.zeros([len(TASKS), steps])
    point = model.encoder.x
    path = np.empty((steps + 1, 2))
    path[0] = point.detach().cpu().numpy()
    elapsed = np.zeros(steps + 1)
    began = time.perf_counter()
    model.train()
    for step in range(steps):
        model.epoch = step
        out = model(None)
        losses = torch.stack([out[task] for task in TASKS])
        optimizer.zero_grad(set_to_none=False)
        problem = guard.losses_problem(losses, TASKS)
        if problem is None:
            model.backward(losses, **weight_args)
            problem = guard.gradients_problem(model, TASKS)
        if problem is not None:
            raise NonFiniteError(f"{weighting}: {problem} at step {step} from start {tuple(start)}")
        optimizer.step()
        model.train_loss_buffer[:, step] = losses.detach().cpu().numpy()
        path[step + 1] = point.detach().cpu().numpy()
        elapsed[step + 1] = time.perf_counter() - began
        if progress is not None:
            progress.update(1)
    path_losses = toy_losses(torch.from_numpy(path), scale)  # float64
    start_distance, end_distance = distance_to_front(path_losses[[0, -1]], front).tolist()
    return ToyRun(weighting, (float(start[0]), float(start[1])), path, path_losses.numpy(),
                  start_distance, end_distance, float(elapsed[-1]), elapsed)


def optimize_from_starts(
    weighting: str, starts: Sequence[Sequence[float]], steps: int, front: ParetoFront,
    show_progress: bool = True, done: Sequence[ToyRun] = (),
    on_run: Optional[Callable[[list[ToyRun]], None]] = None, **options: Any,
) -> list[ToyRun]:
    """:func:`optimize_toy` from every start, under one tqdm bar (``options`` are passed on).
    ``done``: runs of the first starts already finished (a resumed run; each start is seeded
    afresh, so the rest ends as an uninterrupted run); ``on_run(runs)`` is called after each."""
    runs = list(done)
    with progress_bar(total=steps * len(starts), initial=steps * len(runs), desc=f"{weighting} toy",
                      disable=not show_progress, leave=False) as bar:
        for start in starts[len(runs):]:
            runs.append(optimize_toy(weighting, start, steps, front=front, progress=bar, **options))
            if on_run is not None:
                on_run(runs)
    return runs
