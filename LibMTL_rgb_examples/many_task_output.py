"""Where and how results of many-task example runs (QM9: 11 tasks, CelebA: 40) are shown.

With more than a handful of tasks the per-epoch line is a summary, so the per-task table must
land in a file by default: without ``--save_path`` a run writes ``best.pt``, ``last.pt`` and
``history.csv`` to ``runs/<example>/<weighting>_<arch>_seed<seed>``; ``--mode test`` prints
each task's metrics on its own line and writes them to ``test.csv`` there.
"""
from __future__ import annotations

import argparse
import os

from LibMTL_rgb.cli_checks import check_output_dir
from LibMTL_rgb_examples.example_runner import run
from LibMTL_rgb_examples.run_errors import one_line_errors
from LibMTL_rgb.trainer import HISTORY_CSV

TEST_CSV = "test.csv"


def default_save_path(example: str, params: argparse.Namespace) -> str:
    """``runs/<example>/<weighting>_<arch>_seed<seed>`` (relative to the working directory),
    with ``_stl_<task>`` appended for a single-task baseline (``--stl_task``)."""
    name = f"{params.weighting}_{params.arch}_seed{params.seed}"
    stl_task = getattr(params, "stl_task", None)
    if stl_task is not None:
        name += f"_stl_{stl_task}"
    return os.path.join("runs", example, name)


def ensure_save_path(example: str, params: argparse.Namespace) -> None:
    """Set ``params.save_path`` to :func:`default_save_path` when unset, and say where the
    per-task table goes."""
    if params.save_path is None:
        params.save_path = default_save_path(example, params)
        problem = check_output_dir(params.save_path)
        if problem:
            raise SystemExit(f"{example}: cannot write the default --save_path: {problem}")
    table = HISTORY_CSV if params.mode == "train" else TEST_CSV
    print(f"Per-task results of every evaluation: {os.path.join(params.save_path, table)}")


def run_and_report(trainer, params: argparse.Namespace, train_loader, test_loader, val_loader=None) -> None:
    """:func:`LibMTL_rgb_examples.example_runner.run`; after ``--mode test`` also print one line per
    task and write ``<save_path>/test.csv``."""
    run(trainer, params, train_loader, test_loader, val_loader)
    if params.mode != "test":
        return
    row = trainer.meter.history[-1]
    for task in trainer.task_name:
        metrics = trainer.task_dict[task]["metrics"]
        print(f"  {task}: " + ", ".join(f"{name} {row[f'{task}_{name}']:.4f}" for name in metrics))
    path = os.path.join(params.save_path, TEST_CSV)
    with one_line_errors(params.save_path):  # a full or read-only disk: one line naming the file
        trainer.meter.write_csv(path)
    print(f"Per-task test results written to {path}")
