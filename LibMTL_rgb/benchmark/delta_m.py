"""Δm% of the paper's §3.1: the relative performance drop of a multi-task model against the
single-task (STL) baseline, per task and overall.

Results are ``{task: [metric values]}`` (the Trainer's ``best_result`` / ``base_result`` format)
and ``weight`` is ``{task: [1 if higher is better else 0, ...]}`` (the ``task_dict`` format)::

    Δm_i% = 1/S_i Σ_j (-1)^{δ_j} (M_m,j - M_b,j) / M_b,j × 100,   δ_j = 1 if higher is better
    Δm%   = 1/T Σ_i Δm_i%                                         (average="task", §3.1)

Lower (more negative) is better; STL itself scores 0. The paper's NYUv2 Table 1 (and the
Nash-MTL/ConsMTL code it follows) instead averages over all metrics at once,
``Δm% = 1/Σ_i S_i Σ_{i,j} ...`` (``average="metric"``); for tables with one metric per task
(QM9, Cityscapes-3) the two coincide. ``delta_m_bounds`` gives the range of Δm% that values
rounded to the printed digits allow, to check a published Δm% column against its own table.
"""
from __future__ import annotations

from typing import Literal, Mapping, Optional, Sequence

import numpy as np

Result = Mapping[str, Sequence[float]]
Weight = Mapping[str, Sequence[int]]
Average = Literal["task", "metric"]

__all__ = ["delta_m", "delta_m_per_task", "delta_m_per_metric", "delta_m_bounds", "Average"]


def _signs(weight: Sequence[int], task: str) -> np.ndarray:
    w = np.asarray(weight)
    if not np.isin(w, (0, 1)).all():
        raise ValueError(f"weight[{task!r}] must hold 1 (higher is better) or 0 (lower is better), got {list(weight)}")
    return np.where(w == 1, -1.0, 1.0)  # (-1)^δ_j


def _aligned(result: Result, base: Result, weight: Weight, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if task not in result:
        raise KeyError(f"task {task!r} of the baseline is missing from the result (tasks: {sorted(result)})")
    if task not in weight:
        raise KeyError(f"task {task!r} has no 'weight' entry (1 = higher is better, 0 = lower is better)")
    m = np.asarray(result[task], dtype=float)
    b = np.asarray(base[task], dtype=float)
    sign = _signs(weight[task], task)
    if not (m.shape == b.shape == sign.shape):
        raise ValueError(
            f"task {task!r}: result has {m.size} metrics, baseline {b.size}, weight {sign.size}; they must match"
        )
    if np.any(b == 0):
        raise ZeroDivisionError(f"task {task!r}: a baseline metric is 0, so its relative change is undefined")
    return m, b, sign


def delta_m_per_metric(result: Result, base: Result, weight: Weight) -> dict[str, list[float]]:
    """``{task: [(-1)^δ_j (M_m,j - M_b,j) / M_b,j × 100 per metric]}`` for every task of ``base``."""
    out = {}
    for task in base:
        m, b, sign = _aligned(result, base, weight, task)
        out[task] = (sign * (m - b) / b * 100.0).tolist()
    return out


def delta_m_per_task(result: Result, base: Result, weight: Weight) -> dict[str, float]:
    """``{task: Δm_i%}`` (§3.1), every task of ``base``."""
    return {task: float(np.mean(values)) for task, values in delta_m_per_metric(result, base, weight).items()}


def delta_m(result: Result, base: Result, weight: Weight, average: Average = "task") -> float:
    """Overall Δm% of ``result`` against the baseline ``base`` (see the module docstring)."""
    per_metric = delta_m_per_metric(result, base, weight)
    if average == "task":
        return float(np.mean([np.mean(v) for v in per_metric.values()]))
    if average == "metric":
        return float(np.mean(np.concatenate([np.asarray(v) for v in per_metric.values()])))
    raise ValueError(f"average must be 'task' (§3.1) or 'metric' (all metrics at once), got {average!r}")


def delta_m_bounds(
    result: Result,
    base: Result,
    weight: Weight,
    result_halfwidth: Result,
    base_halfwidth: Optional[Result] = None,
    average: Average = "task",
) -> tuple[float, float]:
    """The smallest and largest Δm% when every value may be off by its half-width
    (e.g. half a unit of its last printed digit). Values must be positive.

    Each relative change ``M/B - 1`` grows with ``M`` and shrinks with ``B``, and Δm% is a
    positive combination of them, so the extremes take every ``M`` and ``B`` at an end of its
    interval.
    """
    if base_halfwidth is None:
        base_halfwidth = {task: [0.0] * len(base[task]) for task in base}
    low_hi: list[tuple[np.ndarray, np.ndarray]] = []
    for task in base:
        m, b, sign = _aligned(result, base, weight, task)
        hm = np.asarray(result_halfwidth[task], dtype=float)
        hb = np.asarray(base_halfwidth[task], dtype=float)
        if np.any(m - hm <= 0) or np.any(b - hb <= 0):
            raise ValueError(f"task {task!r}: delta_m_bounds needs positive values (minus their half-widths)")
        smallest = (m - hm) / (b + hb) - 1.0
        largest = (m + hm) / (b - hb) - 1.0
        lo = np.where(sign > 0, smallest, -largest) * 100.0
        hi = np.where(sign > 0, largest, -smallest) * 100.0
        low_hi.append((lo, hi))
    if average == "task":
        return float(np.mean([lo.mean() for lo, _ in low_hi])), float(np.mean([hi.mean() for _, hi in low_hi]))
    if average == "metric":
        return float(np.concatenate([lo for lo, _ in low_hi]).mean()), float(np.concatenate([hi for _, hi in low_hi]).mean())
    raise ValueError(f"average must be 'task' or 'metric', got {average!r}")
