"""Where each cell of a grid stands (``benchmark status OUT``): ``pending`` / ``running`` (its
SLURM job is queued or running), ``done`` / ``failed`` / ``skipped`` (its result JSON says so)
or ``missing`` (no result and no queued job: not started yet, interrupted, or its job ended
without one — ``run`` submits it again). The grid's cells are those ``run`` planned
(``OUT/plan.json``) and any result found.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

from LibMTL_rgb.atomic_io import atomic_write_json
from LibMTL_rgb.benchmark.grid import RESULTS_DIR, RUNS_DIR, RunSpec, load_results
from LibMTL_rgb.checkpoint import LAST_CHECKPOINT

PLAN_FILE = "plan.json"
CELL_STATES = ("pending", "running", "done", "failed", "skipped", "missing")
_RESULT_STATE = {"ok": "done", "failed": "failed", "skipped": "skipped"}
_RUNNING_SLURM_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}

__all__ = ["CellState", "CELL_STATES", "record_plan", "planned_run_ids", "grid_status", "format_status"]


@dataclass(frozen=True)
class CellState:
    """One cell: its run id, state (one of :data:`CELL_STATES`), SLURM job id (if any) and a detail."""

    run_id: str
    state: str
    job_id: Optional[str] = None
    detail: str = ""


def record_plan(out_dir: str, specs: Sequence[RunSpec]) -> None:
    """Add ``specs`` to ``OUT/plan.json`` (``{run_id: config}``), so that ``status`` lists cells not started yet."""
    path = os.path.join(out_dir, PLAN_FILE)
    plan = _read_plan(out_dir)
    plan.update({spec.run_id: spec.config() for spec in specs})
    atomic_write_json(path, plan)


def _read_plan(out_dir: str) -> dict:
    path = os.path.join(out_dir, PLAN_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def planned_run_ids(out_dir: str) -> list[str]:
    """The run ids of ``OUT/plan.json``, in planning order."""
    return list(_read_plan(out_dir))


def grid_status(out_dir: str) -> list[CellState]:
    """The state of every cell of the grid in ``out_dir`` (planned or with a result)."""
    results = {r["run_id"]: r for r in load_results(out_dir)} if os.path.isdir(os.path.join(out_dir, RESULTS_DIR)) else {}
    run_ids = list(dict.fromkeys(planned_run_ids(out_dir) + sorted(results)))
    if not run_ids:
        raise FileNotFoundError(f"no grid in {out_dir}: no {PLAN_FILE} and no results (run the grid first)")
    jobs: dict[str, str] = {}
    queued: dict[str, str] = {}
    if os.path.isdir(os.path.join(out_dir, "slurm")):
        from LibMTL_rgb.benchmark import slurm

        jobs = slurm.job_ids(out_dir)
        queued = slurm.queue_states(list(jobs.values()))
    cells = []
    for run_id in run_ids:
        job = jobs.get(run_id)
        if job is not None and job in queued:
            state = "running" if queued[job] in _RUNNING_SLURM_STATES else "pending"
            cells.append(CellState(run_id, state, job, queued[job]))
            continue
        record = results.get(run_id)
        if record is not None:
            state = _RESULT_STATE.get(str(record.get("status")), "failed")
            if state == "failed":
                detail = ((record.get("error") or "").strip().splitlines() or [""])[-1]
            elif state == "skipped":
                detail = record.get("skip_reason", "")
            else:
                detail = f"{record.get('epochs_done')} epoch(s), {record.get('wall_time_s', 0):.0f} s on {record.get('host')}"
            cells.append(CellState(run_id, state, job, detail))
            continue
        has_last = os.path.isfile(os.path.join(out_dir, RUNS_DIR, run_id, LAST_CHECKPOINT))
        detail = "no result yet" + (", resumes from last.pt" if has_last else "")
        if job is not None:
            detail += f"; job {job} left the queue without one"
            from LibMTL_rgb.benchmark.slurm import job_log_tail

            tail = job_log_tail(out_dir, job)
            if tail:
                detail += f" (its log ends: {tail})"
        cells.append(CellState(run_id, "missing", job, detail))
    return cells


def format_status(cells: Sequence[CellState]) -> str:
    """A fixed-width listing of ``cells`` and a count per state."""
    width = max(len(c.run_id) for c in cells)
    lines = [f"{'run':<{width}}  {'state':<8} {'job':<12} detail"]
    lines += [f"{c.run_id:<{width}}  {c.state:<8} {c.job_id or '-':<12} {c.detail}" for c in cells]
    counts = {s: sum(c.state == s for c in cells) for s in CELL_STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" ({len(cells)} cells)")
    return "\n".join(lines)
