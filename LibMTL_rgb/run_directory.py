"""The run directory (``save_path``) as one transaction: a component on the step protocol.

At the end of each epoch :class:`RunDirectory` asks the Trainer for its training state (which
calls every component's ``on_save_checkpoint``) and commits it: ``best.pt`` (the model's
weights when the epoch is the best), then ``last.pt``, which carries everything the epoch
produced — model, optimiser, history rows, best result, the ``summary.json`` content and
each component's state. ``history.csv`` and ``summary.json`` are derived files, rewritten
from ``last.pt``: after a kill anywhere in between, ``resume`` rebuilds them, so nothing of a
committed epoch is lost (and a resume after the final epoch only rebuilds them and says the
run is complete).

The directory is locked while a run writes to it (:data:`LOCK_FILE`, holding the pid and host):
a second run into it fails at once; a lock whose process is gone (same host) is taken over.
Temporary files of interrupted atomic writes are removed at the start. A fresh run into a
directory that holds a run is refused unless the Trainer resumes it or ``overwrite=True``
(the examples' ``--overwrite``), which removes the old run's files first.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import Any, Optional

from LibMTL_rgb.atomic_io import atomic_save, remove_stale_temporaries
from LibMTL_rgb.callbacks import Callback
from LibMTL_rgb.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, CheckpointError, with_metadata
from LibMTL_rgb.run_logger import DIAGNOSTICS_CSV, DIAGNOSTICS_SUMMARY_JSON, SUMMARY_JSON, run_summary, write_json

HISTORY_CSV = "history.csv"
LOCK_FILE = ".lock"
#: The files of a run; a fresh run refuses a directory holding any of them (unless overwrite).
RUN_FILES = (LAST_CHECKPOINT, BEST_CHECKPOINT, HISTORY_CSV, SUMMARY_JSON, DIAGNOSTICS_CSV, DIAGNOSTICS_SUMMARY_JSON)

__all__ = ["RunDirectory", "RunDirectoryError", "RunLock", "check_run_directory", "check_fresh_run_directory",
           "HISTORY_CSV", "LOCK_FILE", "RUN_FILES"]


class RunDirectoryError(CheckpointError):
    """A run directory that does not fit this run: in use by another run, or holding a run
    that a fresh run would replace (a ``CheckpointError``: the examples print it as one line)."""


class RunLock:
    """An exclusive lock on a directory: a file created with ``O_EXCL`` holding ``{"pid", "host"}``."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, LOCK_FILE)
        self.held = False

    def check(self) -> None:
        """:class:`RunDirectoryError` when a live process holds the lock (nothing is taken)."""
        holder = self._holder() if os.path.exists(self.path) else None
        if os.path.exists(self.path) and (holder is None or not self._is_stale(holder)):
            raise RunDirectoryError(self._in_use(holder))

    def _in_use(self, holder: Optional[dict[str, Any]]) -> str:
        who = f"process {holder['pid']} on {holder['host']}" if holder else "another process"
        return (f"{os.path.dirname(self.path)} is in use by {who} (lock file {self.path}): two runs cannot write one "
                "run directory; wait for it to finish or give another --save_path (delete the lock file only if "
                "that process is gone)")

    def acquire(self) -> None:
        """Take the lock; :class:`RunDirectoryError` naming the holder when a live process has it."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and self._is_stale(holder):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self.path)
                    continue
                raise RunDirectoryError(self._in_use(holder)) from None
            with os.fdopen(fd, "w") as handle:
                json.dump({"pid": os.getpid(), "host": socket.gethostname()}, handle)
            self.held = True
            return
        raise RunDirectoryError(f"could not take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
            self.held = False

    def _holder(self) -> Optional[dict[str, Any]]:
        try:
            with open(self.path) as handle:
                holder = json.load(handle)
            return holder if isinstance(holder, dict) and "pid" in holder and "host" in holder else None
        except (OSError, ValueError):
            return None

    @staticmethod
    def _is_stale(holder: dict[str, Any]) -> bool:
        """The holder is this process (a run that ended without releasing) or a dead process of this host."""
        if holder["host"] != socket.gethostname():
            return False  # cannot tell: refuse
        pid = int(holder["pid"])
        if pid == os.getpid():
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def check_fresh_run_directory(save_path: str, overwrite: bool = False) -> list[str]:
    """The run files in ``save_path`` (which ``overwrite`` replaces); :class:`RunDirectoryError`
    when it holds a run and ``overwrite`` is not given."""
    present = [name for name in RUN_FILES if os.path.exists(os.path.join(save_path, name))]
    if present and not overwrite:
        raise RunDirectoryError(
            f"{save_path} already holds a run ({', '.join(present)}): resume it with --resume {save_path}, give "
            "another --save_path, or pass --overwrite (Trainer option overwrite=True) to replace it")
    return present


def check_run_directory(save_path: str, resuming: bool, overwrite: bool = False) -> None:
    """What :class:`RunDirectory` refuses when ``train`` starts, checked early (e.g. before the
    data is read): a directory locked by a live run; one holding a run unless ``resuming`` or
    ``overwrite``. Nothing is taken or changed."""
    RunLock(save_path).check()
    if not resuming:
        check_fresh_run_directory(save_path, overwrite)


class RunDirectory(Callback):
    """Writes ``best.pt``, ``last.pt``, ``history.csv`` and ``summary.json`` into the Trainer's
    ``save_path`` as it is when ``train`` starts (nothing without one; one process: the main
    one of a distributed run). ``last.pt`` is written every ``save_every`` epochs and after
    the last one (a resume then restarts after the last written epoch)."""

    state_key = "run_directory"

    def __init__(self, overwrite: bool = False, save_every: int = 1) -> None:
        self.overwrite = overwrite
        self.save_every = save_every
        self.save_path: Optional[str] = None
        self.lock: Optional[RunLock] = None
        self._resumed_summary: Optional[dict[str, Any]] = None
        self._resumed = False

    def path(self, name: str) -> str:
        assert self.save_path is not None
        return os.path.join(self.save_path, name)

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: Any) -> None:
        self.save_path = trainer.save_path
        if self.save_path is None:
            return
        self.lock = RunLock(self.save_path)
        self.lock.acquire()
        removed = remove_stale_temporaries(self.save_path)
        if removed:
            print(f"{self.save_path}: removed {len(removed)} temporary file(s) of an interrupted write")
        if self._resumed:
            self.write_derived_files(trainer, self._resumed_summary)
            if trainer.start_epoch >= trainer.epochs:
                print(f"The run in {self.save_path} is complete ({trainer.start_epoch} epochs): nothing left to train; "
                      f"{HISTORY_CSV} and {SUMMARY_JSON} rebuilt from {LAST_CHECKPOINT} (pass a larger --epochs to continue)")
            return
        try:
            present = check_fresh_run_directory(self.save_path, self.overwrite)
        except RunDirectoryError:
            self._release()
            raise
        for name in present:
            os.remove(self.path(name))

    def on_epoch_end(self, trainer: Any, epoch: int) -> None:
        """Commit the epoch: ``best.pt`` (if best), ``last.pt``, then the derived files."""
        if self.save_path is None:
            return
        state = trainer.training_state(epoch)
        if trainer.meter.best_result.get("epoch") == epoch:
            atomic_save(with_metadata(trainer.model.state_dict(), trainer.metadata), self.path(BEST_CHECKPOINT))
            if getattr(trainer.meter, "log_format", "rgb") == "libmtl":
                print(f"Save Model {epoch} to {self.path(BEST_CHECKPOINT)}")  # LibMTL's line
        if (epoch + 1) % self.save_every == 0 or epoch + 1 >= trainer.epochs:
            atomic_save(state, self.path(LAST_CHECKPOINT))
        self.write_derived_files(trainer, state[self.state_key]["summary"])

    def on_fit_end(self, trainer: Any) -> None:
        self._release()

    def on_exception(self, trainer: Any, error: BaseException) -> None:
        self._release()

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def on_save_checkpoint(self, trainer: Any, state: dict[str, Any]) -> None:
        summary = run_summary(trainer.task_dict, trainer.meter.best_result, trainer.device, int(state["epoch"]) + 1)
        state[self.state_key] = {"summary": summary}

    def on_load_checkpoint(self, trainer: Any, state: dict[str, Any]) -> None:
        self._resumed = True
        entry = state.get(self.state_key) or {}
        self._resumed_summary = entry.get("summary")
        if self._resumed_summary is None:  # a last.pt written before the summary was part of it
            self._resumed_summary = run_summary(trainer.task_dict, trainer.meter.best_result, trainer.device,
                                                int(state["epoch"]) + 1)

    # ---------------------------------------------------------------- files
    def write_derived_files(self, trainer: Any, summary: Optional[dict[str, Any]]) -> None:
        """``history.csv`` (the meter's rows, all epochs) and ``summary.json``."""
        trainer.meter.write_csv(self.path(HISTORY_CSV))
        if summary is not None:
            write_json(self.path(SUMMARY_JSON), summary)
