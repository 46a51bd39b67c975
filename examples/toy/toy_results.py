"""What a toy run writes into ``--save_path``, in the files and formats of a Trainer run, so
that the benchmark grid (``python -m LibMTL_rgb.benchmark run toy``) and its tables read the
toy like any other example:

- ``history.csv``: the rows of :class:`~LibMTL_rgb.meter.PerformanceMeter` (written by its
  ``write_csv``), one ``test`` row per evaluation point along the run: the grid's "epochs";
- ``summary.json``: :func:`~LibMTL_rgb.run_logger.write_run_summary`, with the last
  evaluation point as the "best" result (the toy is judged by where the runs end).

The "tasks" are the two objectives ``f1`` and ``f2`` (metric ``value``: the objective, mean
over the starts, lower is better) and one extra entry ``front`` (metric ``distance``: the
Euclidean distance in the (f1, f2) plane to the computed Pareto front, mean over the starts,
lower is better). ``front`` is not an objective; it is listed as a task because a task entry
is how the grid's format carries a metric, so the tables show it as the column
``front distance ↓`` and count it in MR like a third task.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch

from LibMTL_rgb.meter import PerformanceMeter
from LibMTL_rgb.run_logger import SUMMARY_JSON, write_run_summary
from LibMTL_rgb.trainer import HISTORY_CSV

from pareto import ParetoFront, distance_to_front
from toy_problem import TASKS
from toy_run import ToyRun

#: Evaluation points along a run written to ``history.csv`` by default (``--eval_points``).
DEFAULT_EVAL_POINTS = 10
#: The metric of each objective: its value (mean over the starts).
VALUE_METRIC = "value"
#: The extra "task" that carries the distance to the Pareto front.
FRONT_TASK = "front"
FRONT_METRIC = "distance"


def toy_task_dict() -> dict[str, dict[str, Any]]:
    """The toy's ``task_dict`` as the Trainer's files describe it: ``f1``, ``f2`` (metric
    ``value``) and ``front`` (metric ``distance``), all lower-is-better (``weight`` 0). There
    are no loss or metric objects: the toy evaluates f1 and f2 directly."""
    tasks = {task: {"metrics": [VALUE_METRIC], "weight": [0]} for task in TASKS}
    tasks[FRONT_TASK] = {"metrics": [FRONT_METRIC], "weight": [0]}
    return {task: {**spec, "loss_fn": None, "metrics_fn": None} for task, spec in tasks.items()}


def evaluation_steps(steps: int, points: int = DEFAULT_EVAL_POINTS) -> list[int]:
    """The optimiser steps after which the run is evaluated: ``min(points, steps)`` steps
    evenly spread over ``1..steps``, the last one ``steps`` (e.g. 20, 40, ..., 200)."""
    if steps < 1 or points < 1:
        raise ValueError(f"steps and points must be >= 1, got steps={steps}, points={points}")
    points = min(points, steps)
    return [(k + 1) * steps // points for k in range(points)]


def history_rows(runs: Sequence[ToyRun], front: ParetoFront, eval_steps: Sequence[int]) -> list[dict[str, Any]]:
    """One ``PerformanceMeter``-style row per evaluation step (``epoch`` = its index): ``mode``
    ``test``; ``time``, the optimisation seconds since the previous row (summed over the
    starts); ``<task>_loss`` and ``<task>_value`` = the mean of f_i over the starts;
    ``front_distance``, the mean distance to the front; and ``step``, the optimiser step."""
    if not runs:
        raise ValueError("no runs to record")
    index = np.asarray(eval_steps)
    losses = np.stack([run.losses[index] for run in runs])  # [starts, points, 2]
    distances = np.stack([distance_to_front(torch.from_numpy(run.losses[index]), front).numpy() for run in runs])
    elapsed = np.stack([run.elapsed[np.concatenate([[0], index])] for run in runs]).sum(axis=0)
    mean_losses, mean_distances = losses.mean(axis=0), distances.mean(axis=0)
    rows = []
    for epoch, step in enumerate(eval_steps):
        row: dict[str, Any] = {"epoch": epoch, "mode": "test", "time": round(float(elapsed[epoch + 1] - elapsed[epoch]), 4)}
        for t, task in enumerate(TASKS):
            row[f"{task}_loss"] = row[f"{task}_{VALUE_METRIC}"] = float(mean_losses[epoch, t])
        row[f"{FRONT_TASK}_{FRONT_METRIC}"] = float(mean_distances[epoch])
        row["step"] = int(step)
        rows.append(row)
    return rows


def row_result(row: dict[str, Any]) -> dict[str, list[float]]:
    """A history row as the Trainer's ``{task: [metric values]}`` result."""
    return {task: [row[f"{task}_{name}"] for name in spec["metrics"]] for task, spec in toy_task_dict().items()}


def save_toy_results(
    save_path: str, runs: Sequence[ToyRun], front: ParetoFront, eval_points: int = DEFAULT_EVAL_POINTS,
    device: "torch.device | str" = "cpu",
) -> list[dict[str, Any]]:
    """Write ``history.csv`` and ``summary.json`` of one weighting's ``runs`` (all starts, same
    number of steps) into ``save_path``; returns the history rows."""
    steps = len(runs[0].losses) - 1 if runs else 0
    if any(len(run.losses) - 1 != steps for run in runs):
        raise ValueError("every run must have the same number of steps")
    rows = history_rows(runs, front, evaluation_steps(steps, eval_points))
    os.makedirs(save_path, exist_ok=True)
    meter = PerformanceMeter(toy_task_dict(), multi_input=False)
    meter.history = rows
    meter.write_csv(os.path.join(save_path, HISTORY_CSV))
    final = row_result(rows[-1])
    # No "improvement": LibMTL's relative improvement divides by the base values, and f1, f2
    # are negative near the front, so it has no meaning here.
    best = {"improvement": None, "epoch": rows[-1]["epoch"], "result": final, "test": final}
    write_run_summary(os.path.join(save_path, SUMMARY_JSON), toy_task_dict(), best, torch.device(device), len(rows))
    return rows
