"""The grid on SLURM through ``submitit``: one job per grid cell (submitted together as a job
array), each running :func:`~LibMTL_rgb.benchmark.grid.run_one` inside its allocation, so a
cell writes the same ``OUT/runs/<run_id>/`` and ``OUT/results/<run_id>.json`` as a local run
and ``table`` / ``plot`` cannot tell where it ran.

Fault tolerance: each job is a :class:`GridCell`, a ``submitit.helpers.Checkpointable``. On a
timeout or a preemption SLURM sends ``USR2`` (``--signal USR2@signal_delay_s``); submitit then
calls :meth:`GridCell.checkpoint`, requeues the job, and the requeued job runs the cell again,
which continues from the run's ``last.pt`` with ``--resume`` (what ``run_one`` does whenever a
run directory holds one). A run that fails is recorded as failed with its stderr tail; the
others go on. The job id of each cell is kept in ``OUT/slurm/jobs.json`` (``status``, ``cancel``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import submitit

from LibMTL_rgb.atomic_io import atomic_write_json
from LibMTL_rgb.benchmark.grid import RUNS_DIR, RunSpec, pending_specs, run_one
from LibMTL_rgb.progress import progress_bar

SLURM_DIR = "slurm"
JOBS_FILE = "jobs.json"

__all__ = [
    "SlurmOptions", "GridCell", "submit_grid", "job_ids", "queue_states", "cancel_jobs",
    "active_jobs", "job_log_path", "job_log_tail", "wait_for_jobs", "SLURM_DIR"
]


@dataclass(frozen=True)
class SlurmOptions:
    """The resources of one grid cell's job (``benchmark run --launcher slurm`` flags)."""

    partition: Optional[str] = None
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem: Optional[str] = None
    time_min: int = 60
    account: Optional[str] = None
    qos: Optional[str] = None
    extra: Mapping[str, str] = field(default_factory=dict)
    #: seconds before the time limit at which SLURM sends USR2 (submitit checkpoints and requeues)
    signal_delay_s: int = 90
    #: requeues after a timeout before a cell is given up (preemptions do not count)
    max_timeouts: int = 3
    #: at most this many cells of one array run at a time
    array_parallelism: int = 256

    @property
    def nproc(self) -> int:
        """Processes per run: one per GPU (``torchrun``) when a run has several GPUs, else one."""
        return max(1, self.gpus_per_run)

    def executor_parameters(self) -> dict[str, Any]:
        """Keyword arguments of ``submitit.SlurmExecutor.update_parameters``."""
        params: dict[str, Any] = dict(
            time=self.time_min, nodes=1, ntasks_per_node=1, cpus_per_task=self.cpus_per_run,
            signal_delay_s=self.signal_delay_s, array_parallelism=self.array_parallelism,
            job_name="libmtl_rgb_grid", additional_parameters={"requeue": True, **dict(self.extra)},
        )
        optional = dict(partition=self.partition, mem=self.mem, account=self.account, qos=self.qos,
                        gpus_per_node=self.gpus_per_run or None)
        params.update({k: v for k, v in optional.items() if v is not None})
        return params


class GridCell(submitit.helpers.Checkpointable):
    """One grid cell as a SLURM job: ``run_one(spec, ...)`` inside the allocation. Requeued
    after a timeout or preemption, it starts again with the same arguments and ``run_one``
    resumes from the run's ``last.pt``."""

    def __init__(self, spec: RunSpec, out_dir: str, python: str = sys.executable, timeout: Optional[float] = None,
                 nproc: int = 1, threads: int = 1) -> None:
        self.spec, self.out_dir, self.python, self.timeout = spec, out_dir, python, timeout
        self.nproc, self.threads = nproc, threads

    def __call__(self) -> dict[str, Any]:
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(self.threads))
        return run_one(self.spec, self.out_dir, self.python, self.timeout, env, self.nproc)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on USR2: the same cell again (the run's ``last.pt`` is its state)."""
        return submitit.helpers.DelayedSubmission(GridCell(self.spec, self.out_dir, self.python, self.timeout,
                                                           self.nproc, self.threads))


# ------------------------------------------------------------------ job registry
def _jobs_path(out_dir: str) -> str:
    return os.path.join(out_dir, SLURM_DIR, JOBS_FILE)


def job_ids(out_dir: str) -> dict[str, str]:
    """``{run_id: SLURM job id}`` of the cells this grid submitted (the latest job per cell)."""
    path = _jobs_path(out_dir)
    if not os.path.isfile(path):
        return {}
    with open(path) as handle:
        return dict(json.load(handle))


def _record_jobs(out_dir: str, new: Mapping[str, str]) -> None:
    atomic_write_json(_jobs_path(out_dir), {**job_ids(out_dir), **new})


def queue_states(ids: Sequence[str]) -> dict[str, str]:
    """``{job id: SLURM state}`` of those of ``ids`` still in the queue (``squeue``; array
    tasks expanded, ids as ``JOB_TASK``). Jobs that ended are absent."""
    if not ids:
        return {}
    try:
        listing = subprocess.run(["squeue", "--noheader", "--array", "--format=%i|%T"], check=True,
                                 capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise ChildProcessError(f"squeue failed: {err}") from err
    wanted = set(ids)
    states = {}
    for line in listing.splitlines():
        job, _, state = line.strip().partition("|")
        if job in wanted:
            states[job] = state
    return states


def active_jobs(out_dir: str) -> dict[str, str]:
    """``{run_id: job id}`` of this grid's cells whose job is still pending or running."""
    ids = job_ids(out_dir)
    queued = queue_states(list(ids.values()))
    return {run_id: job for run_id, job in ids.items() if job in queued}


def submit_grid(specs: Sequence[RunSpec], out_dir: str, options: SlurmOptions, *, python: str = sys.executable,
                timeout: Optional[float] = None, retry_failed: bool = False, dry_run: bool = False,
                echo: Callable[[str], None] = print) -> dict[str, str]:
    """Submit one job per cell that has no result (or a failed one, with ``retry_failed``) and
    no job in the queue, as one job array; returns ``{run_id: job id}`` of the jobs submitted."""
    active = active_jobs(out_dir) if os.path.isdir(os.path.join(out_dir, SLURM_DIR)) else {}
    todo = [s for s in pending_specs(specs, out_dir, retry_failed) if s.run_id not in active]
    echo(f"{len(todo)} run(s) to submit, {len(active)} already in the queue, "
         f"{len(specs) - len(todo) - len(active)} with results")
    if dry_run:
        for spec in todo:
            echo("  " + " ".join(spec.command(os.path.join(out_dir, RUNS_DIR, spec.run_id), python, options.nproc)))
        return {}
    if not todo:
        return {}
    executor = submitit.SlurmExecutor(folder=os.path.join(out_dir, SLURM_DIR, "%j"),
                                      max_num_timeout=options.max_timeouts)
    executor.update_parameters(**options.executor_parameters())
    cells = [GridCell(spec, os.path.abspath(out_dir), python, timeout, options.nproc, options.cpus_per_run)
             for spec in todo]
    with executor.batch():
        jobs = [executor.submit(cell) for cell in cells]
    submitted = {spec.run_id: str(job.job_id) for spec, job in zip(todo, jobs)}
    _record_jobs(out_dir, submitted)
    first, last = jobs[0].job_id, jobs[-1].job_id
    echo(f"submitted {len(jobs)} job(s) ({first}{' … ' + last if len(jobs) > 1 else ''}); "
         f"follow them with: python -m LibMTL_rgb.benchmark status {out_dir}")
    return submitted


def job_log_path(out_dir: str, job: str, stream: str = "err") -> str:
    """submitit's log of ``job`` (``stream`` ``out`` or ``err``): ``OUT/slurm/<job>/<job>_0_log.<stream>``."""
    return os.path.join(out_dir, SLURM_DIR, job, f"{job}_0_log.{stream}")


def job_log_tail(out_dir: str, job: str, lines: int = 1) -> str:
    """The last ``lines`` non-empty lines of submitit's stderr log of ``job`` ('' if none)."""
    path = job_log_path(out_dir, job)
    if not os.path.isfile(path):
        return ""
    with open(path, errors="replace") as handle:
        kept = [line.strip() for line in handle if line.strip()]
    return " | ".join(kept[-lines:])


def cancel_jobs(out_dir: str, run_ids: Optional[Sequence[str]] = None) -> list[str]:
    """``scancel`` this grid's queued jobs (all, or those of ``run_ids``); returns the ids cancelled."""
    active = active_jobs(out_dir)
    chosen = [job for run_id, job in active.items() if run_ids is None or run_id in run_ids]
    if chosen:
        done = subprocess.run(["scancel", *chosen], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:  # e.g. "Job can not be altered now" for a task in transition
            print(f"scancel: {done.stderr.strip()} (see 'status')", file=sys.stderr)
    return chosen


def wait_for_jobs(out_dir: str, run_ids: Sequence[str], poll_s: float = 10.0) -> None:
    """Block until no job of ``run_ids`` is queued any more (a progress bar counts the cells whose
    job has left the queue; a requeued job stays queued)."""
    ids = job_ids(out_dir)
    watched = [ids[r] for r in run_ids if r in ids]
    with progress_bar(total=len(watched), desc="slurm", unit="run") as bar:
        while True:
            left = len(queue_states(watched))
            bar.n = len(watched) - left
            bar.refresh()
            if not left:
                return
            time.sleep(poll_s)
