"""MR, the mean rank of the paper's §3.1: every compared method (STL included, as in the
paper's tables) is ranked on every metric (rank 1 = best), then

    MR = 1/T Σ_i 1/M_i Σ_j R_ij          (average="task", §3.1)
    MR = 1/Σ_i M_i Σ_{i,j} R_ij          (average="metric": NYUv2 Table 1's recomputed column)

Ties share the best rank of the group (``ties="min"``, "1224" ranking); this is the rule that
reproduces Tables 1 and 2. ``ties="average"`` gives tied methods the mean of their positions.
"""
from __future__ import annotations

from typing import Literal, Mapping

import numpy as np

from LibMTL_rgb.benchmark.delta_m import Average, Result, Weight

Ties = Literal["min", "average"]

__all__ = ["metric_ranks", "mean_rank", "Ties"]


def _column_ranks(scores: np.ndarray, ties: Ties) -> np.ndarray:
    """Ranks of ``scores`` (higher is better), NaN for NaN scores."""
    ranks = np.full(scores.shape, np.nan)
    valid = ~np.isnan(scores)
    s = scores[valid]
    better = (s[None, :] > s[:, None]).sum(axis=1)
    if ties == "min":
        r = 1.0 + better
    elif ties == "average":
        equal = (s[None, :] == s[:, None]).sum(axis=1)
        r = 1.0 + better + (equal - 1) / 2.0
    else:
        raise ValueError(f"ties must be 'min' or 'average', got {ties!r}")
    ranks[valid] = r
    return ranks


def metric_ranks(results: Mapping[str, Result], weight: Weight, ties: Ties = "min") -> dict[str, dict[str, list[float]]]:
    """``{method: {task: [rank per metric]}}`` of the methods in ``results`` on each metric of ``weight``."""
    methods = list(results)
    if not methods:
        raise ValueError("mean rank needs at least one method")
    out: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    for task, task_weight in weight.items():
        higher_better = np.asarray(task_weight) == 1
        for method in methods:
            if task not in results[method]:
                raise KeyError(f"method {method!r} has no result for task {task!r}")
            if len(results[method][task]) != len(task_weight):
                raise ValueError(
                    f"method {method!r}, task {task!r}: {len(results[method][task])} values for {len(task_weight)} metrics"
                )
        values = np.array([[float(v) for v in results[m][task]] for m in methods])  # [methods, metrics]
        oriented = np.where(higher_better[None, :], values, -values)
        ranks = np.stack([_column_ranks(oriented[:, j], ties) for j in range(values.shape[1])], axis=1)
        for k, method in enumerate(methods):
            out[method][task] = ranks[k].tolist()
    return out


def mean_rank(
    results: Mapping[str, Result], weight: Weight, average: Average = "task", ties: Ties = "min"
) -> dict[str, float]:
    """``{method: MR}`` over the methods in ``results`` (see the module docstring); metrics a
    method has no value for (NaN) are left out of its mean."""
    ranks = metric_ranks(results, weight, ties)
    if average not in ("task", "metric"):
        raise ValueError(f"average must be 'task' (§3.1) or 'metric', got {average!r}")
    out = {}
    for method, per_task in ranks.items():
        if average == "task":
            out[method] = _nan_mean([_nan_mean(r) for r in per_task.values()])
        else:
            out[method] = _nan_mean([v for r in per_task.values() for v in r])
    return out


def _nan_mean(values) -> float:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")
