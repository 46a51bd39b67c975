"""``PerformanceMeter``: per-epoch losses, metrics, improvement, best epoch and the printed table."""
from __future__ import annotations

import csv
import time
from typing import Any, Mapping, Optional

import numpy as np
import torch

from LibMTL_rgb.atomic_io import atomic_write
from LibMTL_rgb.libmtl_log_lines import libmtl_best_result, libmtl_header, libmtl_row
from LibMTL_rgb.utils import count_improvement

#: Above this many tasks, the per-epoch line is a summary when the full table goes to a CSV
#: (``csv_written``); without one every row is printed in full, as LibMTL does.
WIDE_TABLE_TASKS = 8


class PerformanceMeter:
    """Tracks one epoch's losses and metrics for each mode and keeps the best epoch.

    The best epoch is the one with the highest improvement (``count_improvement``) over the
    base result (``base_result`` if given, else the first evaluated epoch), measured on the
    validation set when there is one and on the test set otherwise (LibMTL's rule).
    ``best_result`` has LibMTL's keys: ``epoch``, ``improvement`` and ``result``, the TEST
    results of the best epoch (with a validation set: the test results at the best validation
    epoch); ``test`` repeats ``result`` and, with a validation set, ``val`` holds the
    validation results that chose the epoch.
    """

    def __init__(self, task_dict: Mapping[str, Mapping[str, Any]], multi_input: bool, base_result=None) -> None:
        self.task_dict = task_dict
        self.task_name = list(task_dict)
        self.task_num = len(self.task_name)
        self.multi_input = multi_input
        self.weight = {t: task_dict[t]["weight"] for t in self.task_name}
        self.losses = {t: task_dict[t]["loss_fn"] for t in self.task_name}
        self.metrics = {t: task_dict[t]["metrics_fn"] for t in self.task_name}
        self.base_result = base_result
        self.best_result: dict[str, Any] = {"improvement": -float("inf"), "epoch": 0, "result": None}
        self.has_val = False
        self.results: dict[str, list[float]] = {}
        self.loss_item = np.zeros(self.task_num)
        self.improvement: Optional[float] = None
        self.history: list[dict[str, Any]] = []
        self._begin = 0.0
        self._elapsed = 0.0
        self._header_printed = False
        #: Whether the Trainer writes the history to a CSV (``save_path``): then many tasks get a summary line.
        self.csv_written = False
        #: 'rgb' (our lines) or 'libmtl' (LibMTL's exact lines, ``libmtl_log_lines.py``).
        self.log_format = "rgb"

    # ----------------------------------------------------------- collection
    def record_time(self, mode: str) -> None:
        if mode == "begin":
            self._begin = time.perf_counter()
        else:
            self._elapsed = time.perf_counter() - self._begin

    def update(self, preds, gts, task_name: Optional[str] = None) -> None:
        """Each task's ``update_fun`` under ``torch.no_grad()`` (as LibMTL's recorder calls it)."""
        with torch.no_grad():
            if task_name is None:
                for task in self.task_name:
                    self.metrics[task].update_fun(preds[task], gts[task])
            else:
                self.metrics[task_name].update_fun(preds, gts)

    def get_score(self) -> None:
        with torch.no_grad():
            self.results = {t: list(map(float, self.metrics[t].score_fun())) for t in self.task_name}
            self.loss_item = np.array([self.losses[t]._average_loss() for t in self.task_name])

    def reinit(self) -> None:
        for task in self.task_name:
            self.losses[task]._reinit()
            self.metrics[task].reinit()
        self.results = {}
        self.loss_item = np.zeros(self.task_num)

    # ------------------------------------------------------------- results
    def _track_best(self, mode: str, epoch: Optional[int]) -> None:
        """Set ``improvement`` for an evaluation row; with an ``epoch``, track the best one."""
        selecting = "val" if self.has_val else "test"
        if mode == "train":
            return
        if epoch is None:  # a stand-alone evaluation (``--mode test``)
            self.improvement = None if self.base_result is None else count_improvement(
                self.base_result, self.results, self.weight)
            return
        if mode == selecting and self.base_result is None:
            self.base_result = {t: list(v) for t, v in self.results.items()}
        self.improvement = None
        if self.base_result is not None:
            self.improvement = count_improvement(self.base_result, self.results, self.weight)
        if mode == selecting:
            if self.improvement > self.best_result["improvement"]:
                self.best_result.update(improvement=self.improvement, epoch=epoch)
                if self.has_val:
                    self.best_result["val"] = self.results
                else:
                    self.best_result.update(result=self.results, test=self.results)
        elif mode == "test" and self.has_val and epoch == self.best_result["epoch"]:
            self.best_result.update(result=self.results, test=self.results)

    def display(self, mode: str, epoch: Optional[int]) -> None:
        """Record this mode's row for ``epoch`` and print it."""
        self._track_best(mode, epoch)
        row: dict[str, Any] = {"epoch": epoch, "mode": mode, "time": round(self._elapsed, 4)}
        for tn, task in enumerate(self.task_name):
            row[f"{task}_loss"] = float(self.loss_item[tn])
            for name, value in zip(self.task_dict[task]["metrics"], self.results[task]):
                row[f"{task}_{name}"] = value
        if self.improvement is not None and mode in ("val", "test"):
            row["improvement"] = self.improvement
        self.history.append(row)
        if self.log_format == "libmtl":
            if not self._header_printed:
                print(libmtl_header(self.task_dict))
                self._header_printed = True
            print(libmtl_row(mode, epoch, self.loss_item, self.results, self._elapsed), end="", flush=True)
            return
        print(self._format_row(mode, epoch), flush=True)

    def _format_row(self, mode: str, epoch: Optional[int]) -> str:
        full = self.task_num <= WIDE_TABLE_TASKS or not self.csv_written
        if not self._header_printed and full:
            parts = [f"{t}_LOSS " + " ".join(self.task_dict[t]["metrics"]) for t in self.task_name]
            print("LOG FORMAT | " + " | ".join(parts) + " | TIME")
        self._header_printed = True
        prefix = f"Epoch: {epoch:04d} | {mode.upper()}:" if epoch is not None else f"{mode.upper()}:"
        if full:
            cells = []
            for tn, task in enumerate(self.task_name):
                values = [self.loss_item[tn], *self.results[task]]
                cells.append(" ".join(f"{v:.4f}" for v in values))
            body = " | ".join(cells)
        else:
            body = f"mean loss {np.mean(self.loss_item):.4f} ({self.task_num} tasks; every metric in history.csv)"
        if self.improvement is not None and mode != "train":
            body += f" | impr {100 * self.improvement:+.2f}%"
        return f"{prefix} {body} | Time: {self._elapsed:.2f}s"

    def display_best_result(self) -> None:
        best = self.best_result
        if self.log_format == "libmtl":
            print(libmtl_best_result(best["epoch"], best["result"]))
            return
        if best["result"] is None:
            return
        print("=" * 40)
        print(f"Best Result: Epoch {best['epoch']}, improvement {100 * best['improvement']:+.2f}%")
        for task in self.task_name:
            shown = best["result"][task]
            metrics = ", ".join(f"{n} {v:.4f}" for n, v in zip(self.task_dict[task]["metrics"], shown))
            print(f"  {task}: {metrics}")
        print("=" * 40)

    def write_csv(self, path: str) -> None:
        """Write every recorded row (all epochs and modes) to ``path``."""
        if not self.history:
            return
        columns: list[str] = []
        for row in self.history:
            columns += [k for k in row if k not in columns]
        with atomic_write(path, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.history)
