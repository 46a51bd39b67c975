"""What a training run records beyond ``history.csv``: TensorBoard scalars, the per-epoch MER
diagnostics (``diagnostics.csv``), the diagnostics at the best checkpoint
(``diagnostics_summary.json``, as in the paper's Figure 5) and ``summary.json`` (tasks, best
result, peak memory; read by ``python -m LibMTL_rgb.benchmark``).

All of it is off by default except ``summary.json`` (a few hundred bytes per epoch when
``save_path`` is set): the Trainer builds a :class:`RunLogger` only when ``diagnostics``,
``tensorboard`` or ``log_dir`` is given, so the default training step is untouched.

Trainer keyword arguments (CLI flags of the examples via :func:`add_logging_args`):
``diagnostics`` (bool), ``diagnostics_every`` (int), ``tensorboard`` (bool), ``log_dir`` (str).
"""
from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch

from LibMTL_rgb.atomic_io import atomic_write, atomic_write_json
from LibMTL_rgb.callbacks import Callback
from LibMTL_rgb.gradient_diagnostics import GradientDiagnostics

SUMMARY_JSON = "summary.json"
DIAGNOSTICS_CSV = "diagnostics.csv"
DIAGNOSTICS_SUMMARY_JSON = "diagnostics_summary.json"
TENSORBOARD_DIR = "tb"

__all__ = [
    "LoggingOptions", "RunLogger", "add_logging_args", "logging_kwargs", "write_run_summary", "run_summary",
    "SUMMARY_JSON", "DIAGNOSTICS_CSV", "DIAGNOSTICS_SUMMARY_JSON", "write_json",
]


@dataclass(frozen=True)
class LoggingOptions:
    """The Trainer's logging options (fields of ``TrainerOptions`` of the same names)."""

    diagnostics: bool = False
    diagnostics_every: int = 1
    tensorboard: bool = False
    log_dir: Optional[str] = None

    KEYS = ("diagnostics", "diagnostics_every", "tensorboard", "log_dir")

    @property
    def enabled(self) -> bool:
        return self.diagnostics or self.tensorboard or self.log_dir is not None


def add_logging_args(parser: argparse.ArgumentParser) -> None:
    """The ``logging`` flag group (Trainer kwargs of the same names)."""
    group = parser.add_argument_group("logging")
    group.add_argument("--diagnostics", action="store_true", default=False,
                       help="log the MER diagnostics of App. A.8 (conflict, proximity, condition number, MER balance; "
                            "GMAE/SD-MAE for RGB) per epoch to diagnostics.csv/TensorBoard; costs extra work on logged steps")
    group.add_argument("--diagnostics_every", type=int, default=1,
                       help="compute the diagnostics every N training steps (with --diagnostics)")
    group.add_argument("--tensorboard", action="store_true", default=False,
                       help="write TensorBoard scalars (metrics per epoch, diagnostics) to LOG_DIR or SAVE_PATH/tb")
    group.add_argument("--log_dir", type=str, default=None,
                       help="directory for TensorBoard files and diagnostics.csv (default: --save_path)")


def logging_kwargs(params: argparse.Namespace) -> dict[str, Any]:
    """The Trainer kwargs of the ``logging`` flags that differ from their defaults."""
    defaults = LoggingOptions()
    return {key: getattr(params, key) for key in LoggingOptions.KEYS
            if hasattr(params, key) and getattr(params, key) != getattr(defaults, key)}


class RunLogger(Callback):
    """TensorBoard + CSV logging of one Trainer run, with optional MER diagnostics: a component
    on the step protocol (``callbacks.py``): :meth:`before_backward` / :meth:`after_backward`
    around each ``model.backward``, :meth:`end_epoch` after each epoch and :meth:`close` at the
    end. Its checkpoint entry (``run_logger``) holds the per-epoch diagnostics rows and how many
    history rows TensorBoard has seen, so a resumed run's ``diagnostics.csv`` keeps the earlier
    epochs and TensorBoard gets no duplicate rows."""

    state_key = "run_logger"

    def __init__(self, log_dir: Optional[str], tensorboard: bool = False,
                 diagnostics: Optional[GradientDiagnostics] = None) -> None:
        if tensorboard and log_dir is None:
            raise ValueError("tensorboard logging needs a directory: give save_path or log_dir")
        self.log_dir = log_dir
        self.diagnostics = diagnostics
        self.diagnostics_history: list[dict[str, Any]] = []  # one row per epoch
        self._logged_history_rows = 0
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported only when asked for

            self.writer = SummaryWriter(os.path.join(log_dir, TENSORBOARD_DIR) if log_dir else None)

    @classmethod
    def from_options(cls, options: LoggingOptions, model: torch.nn.Module, save_path: Optional[str],
                     weight_args: Optional[Mapping[str, Any]] = None) -> Optional["RunLogger"]:
        """A logger for ``options``, or None when all logging is off."""
        if not options.enabled:
            return None
        log_dir = options.log_dir or save_path
        diagnostics = GradientDiagnostics(model, weight_args, options.diagnostics_every) if options.diagnostics else None
        return cls(log_dir, options.tensorboard, diagnostics)

    # ------------------------------------------------------------ step protocol
    def on_before_backward(self, trainer: Any, losses: Any) -> None:
        self.before_backward(losses[-1] if isinstance(losses, tuple) else losses)

    def on_after_backward(self, trainer: Any) -> None:
        self.after_backward()

    def on_epoch_end(self, trainer: Any, epoch: int) -> None:
        self.end_epoch(epoch, trainer.meter.history)

    def on_fit_end(self, trainer: Any) -> None:
        self.close(trainer.meter.history, trainer.meter.best_result.get("epoch"), trainer.task_name)

    def on_save_checkpoint(self, trainer: Any, state: dict[str, Any]) -> None:
        state[self.state_key] = {"diagnostics_history": [dict(row) for row in self.diagnostics_history],
                                 "logged_history_rows": self._logged_history_rows,
                                 "diagnostics_step": None if self.diagnostics is None else self.diagnostics.step}

    def on_load_checkpoint(self, trainer: Any, state: dict[str, Any]) -> None:
        entry = state.get(self.state_key)
        if not entry:
            return
        self.diagnostics_history = [dict(row) for row in entry["diagnostics_history"]]
        self._logged_history_rows = int(entry["logged_history_rows"])
        if self.diagnostics is not None and entry.get("diagnostics_step") is not None:
            self.diagnostics.step = int(entry["diagnostics_step"])

    # ------------------------------------------------------------ training
    def before_backward(self, losses: torch.Tensor) -> None:
        if self.diagnostics is not None:
            self.diagnostics.before_backward(losses)

    def after_backward(self) -> None:
        if self.diagnostics is None:
            return
        row = self.diagnostics.after_backward()
        if row is not None and self.writer is not None:
            self._scalars("diagnostics_step", row, row["step"])

    def end_epoch(self, epoch: int, history: Sequence[Mapping[str, Any]]) -> None:
        """Log the history rows added since the last call, and the epoch's diagnostics."""
        if self.writer is not None:
            for row in history[self._logged_history_rows:]:
                self._scalars(str(row.get("mode", "")), row, epoch if row.get("epoch") is None else int(row["epoch"]))
        self._logged_history_rows = len(history)
        if self.diagnostics is not None:
            summary = self.diagnostics.end_epoch()
            if summary:
                self.diagnostics_history.append({"epoch": epoch, **summary})
                if self.writer is not None:
                    self._scalars("diagnostics", summary, epoch)
                self._write_diagnostics_csv()
        if self.writer is not None:
            self.writer.flush()

    def close(self, history: Sequence[Mapping[str, Any]], best_epoch: Optional[int], task_names: Sequence[str]) -> None:
        """Write ``diagnostics_summary.json`` (diagnostics at the best checkpoints) and close
        TensorBoard."""
        if self.diagnostics_history and self.log_dir is not None:
            summary = best_checkpoint_diagnostics(self.diagnostics_history, history, best_epoch, task_names)
            write_json(os.path.join(self.log_dir, DIAGNOSTICS_SUMMARY_JSON), summary)
        if self.writer is not None:
            self.writer.close()

    # ----------------------------------------------------------------- helpers
    def _scalars(self, prefix: str, values: Mapping[str, Any], step: int) -> None:
        for key, value in values.items():
            if key in ("epoch", "mode", "step") or isinstance(value, (str, bool)) or value is None:
                continue
            self.writer.add_scalar(f"{prefix}/{key}", float(value), step)

    def _write_diagnostics_csv(self) -> None:
        if self.log_dir is None:
            return
        columns = list(dict.fromkeys(k for row in self.diagnostics_history for k in row))
        with atomic_write(os.path.join(self.log_dir, DIAGNOSTICS_CSV), newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.diagnostics_history)


def mean_loss_by_epoch(history: Sequence[Mapping[str, Any]], task_names: Sequence[str]) -> tuple[str, dict[int, float]]:
    """``(mode, {epoch: mean task loss})`` of the validation rows (test rows without validation)."""
    modes = {row.get("mode") for row in history}
    mode = "val" if "val" in modes else "test"
    out = {}
    for row in history:
        if row.get("mode") == mode and row.get("epoch") is not None:
            losses = [float(row[f"{t}_loss"]) for t in task_names if f"{t}_loss" in row]
            if losses:
                out[int(row["epoch"])] = sum(losses) / len(losses)
    return mode, out


def best_checkpoint_diagnostics(diagnostics_history: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]],
                                best_epoch: Optional[int], task_names: Sequence[str]) -> dict[str, Any]:
    """The epoch diagnostics at the epoch of minimum mean validation loss (Figure 5's
    "Mean Validation Loss" checkpoint) and at the Trainer's best epoch (best improvement)."""
    by_epoch = {int(row["epoch"]): dict(row) for row in diagnostics_history}
    mode, losses = mean_loss_by_epoch(history, task_names)
    out: dict[str, Any] = {"epochs": sorted(by_epoch)}
    candidates = {e: loss for e, loss in losses.items() if e in by_epoch}
    if candidates:
        epoch = min(candidates, key=candidates.get)
        out["at_min_mean_val_loss"] = {"selected_on": mode, "mean_loss": candidates[epoch], **by_epoch[epoch]}
    if best_epoch is not None and best_epoch in by_epoch:
        out["at_best_epoch"] = by_epoch[best_epoch]
    return out


def write_run_summary(path: str, task_dict: Mapping[str, Mapping[str, Any]], best_result: Mapping[str, Any],
                      device: torch.device, epochs_done: int) -> None:
    """Write :func:`run_summary` to ``path`` (``summary.json``)."""
    write_json(path, run_summary(task_dict, best_result, device, epochs_done))


def run_summary(task_dict: Mapping[str, Mapping[str, Any]], best_result: Mapping[str, Any],
                device: torch.device, epochs_done: int) -> dict[str, Any]:
    """``summary.json``'s content: the tasks (metric names, ``weight``), the Trainer's best result
    (epoch, improvement, its metrics and the test metrics at that epoch), epochs done and, on
    CUDA, the peak allocated memory."""
    summary: dict[str, Any] = {
        "tasks": {task: {"metrics": list(spec["metrics"]), "weight": [int(w) for w in spec["weight"]]}
                  for task, spec in task_dict.items()},
        "best": {key: _jsonable(value) for key, value in best_result.items()},
        "epochs_done": epochs_done,
        "peak_cuda_memory_mb": None,
    }
    if device.type == "cuda" and torch.cuda.is_available():
        summary["peak_cuda_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return _jsonable(summary)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def write_json(path: str, payload: Mapping[str, Any]) -> None:
    """``payload`` as JSON (tensors and arrays as numbers), atomically."""
    atomic_write_json(path, _jsonable(payload))
