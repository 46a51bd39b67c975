"""The Trainer's guard against non-finite losses and gradients, for every weighting.

Each training step is checked twice: the task losses before the weighting's ``backward``,
and every parameter's gradient after it (before ``optimizer.step``). Weightings that compute
per-task gradients also stop inside ``backward`` at a non-finite task gradient
(``FloatingPointError``). With ``nonfinite='raise'`` (the default) the run stops with
:class:`NonFiniteError` naming the task, the epoch and the batch; the parameters are not
updated and the checkpoints of the last finished epoch stay as they were. With
``nonfinite='skip'`` the batch is dropped instead (no update, its losses not counted in the
epoch's average) and the number of skipped batches is reported. Before an epoch's checkpoints
are written the parameters are checked too (an optimiser step can overflow with finite
gradients), so no checkpoint holds a non-finite parameter.

A skipped batch leaves no trace: before each training batch (``'skip'`` mode only) the guard
takes a :class:`StepSnapshot` of what a forward pass and ``backward`` change besides the
parameters' ``.grad`` — every model buffer (BatchNorm running statistics, the weightings'
state buffers: FAMO, STCH, RGB...), the weighting's Python-side scalars and the attributes it
lists in ``step_state_attributes``, the meter's loss and metric records, and the random
generator of the device — and restores it when the batch is skipped. Parameters and the
optimiser are never copied (a skipped batch never reaches ``optimizer.step``).
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from LibMTL_rgb.callbacks import Callback

#: The Trainer's ``nonfinite`` choices (``--nonfinite``).
MODES = ("raise", "skip")

__all__ = ["MODES", "NonFiniteError", "NonFiniteGuard", "StepSnapshot"]


class NonFiniteError(FloatingPointError):
    """A training step produced a non-finite loss or gradient."""


class NonFiniteGuard(Callback):
    """The non-finite guard as a component of the step protocol. The loop asks it
    :meth:`losses_problem` / :meth:`gradients_problem` and hands a problem to :meth:`handle`;
    the hooks take and restore the snapshot, check the parameters before a checkpoint and
    report the skipped batches."""

    state_key = "nonfinite"

    def __init__(self, mode: str = "raise") -> None:
        if mode not in MODES:
            raise ValueError(f"nonfinite must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.skipped = 0  # batches skipped over the whole run
        self.skipped_this_epoch = 0
        self._snapshot: Optional[StepSnapshot] = None

    # ------------------------------------------------------------------ hooks
    def on_train_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.skipped_this_epoch = 0

    def on_train_batch_start(self, trainer: Any, epoch: int, batch: int) -> None:
        if self.mode == "skip":
            self._snapshot = StepSnapshot.take(trainer.model, trainer.meter)

    def on_train_epoch_end(self, trainer: Any, epoch: int) -> None:
        report = self.epoch_report(epoch)
        if report:
            print(report)

    def on_fit_end(self, trainer: Any) -> None:
        if self.skipped:
            print(f"Skipped {self.skipped} training batch(es) with non-finite losses/gradients in all")

    def on_save_checkpoint(self, trainer: Any, state: dict[str, Any]) -> None:
        self.check_parameters(trainer.model, int(state["epoch"]))  # never a NaN best.pt/last.pt
        state[self.state_key] = {"skipped": self.skipped}

    def on_load_checkpoint(self, trainer: Any, state: dict[str, Any]) -> None:
        entry = state.get(self.state_key) or {}
        self.skipped = int(entry.get("skipped", state.get("nonfinite_skipped", 0)))

    # ----------------------------------------------------------------- checks
    def losses_problem(self, losses: torch.Tensor, task_names: Sequence[str]) -> Optional[str]:
        """None when every loss is finite, else what is wrong (one host sync per step).
        ``losses``: ``[T]``, or a tuple of them (a task's losses summed: a non-finite one
        keeps the sum non-finite)."""
        if isinstance(losses, tuple):
            losses = torch.stack(losses).sum(0)
        finite = torch.isfinite(losses.detach())
        if bool(finite.all()):
            return None
        bad = [f"{task!r} ({float(losses[i].detach())})" for i, task in enumerate(task_names) if not bool(finite[i])]
        return f"non-finite loss of task {', '.join(bad)}"

    def gradients_problem(self, model: nn.Module, task_names: Sequence[str]) -> Optional[str]:
        """None when every gradient is finite, else which gradient is not: of a task-specific
        parameter (naming its task) if any, else of a shared parameter."""
        bad = nonfinite_names([(name, p.grad) for name, p in model.named_parameters() if p.grad is not None])
        if not bad:
            return None
        for name in bad:
            owner = next((t for t in task_names if f".{t}." in f".{name}."), None)
            if owner is not None:
                return f"non-finite gradient of task {owner!r} (parameter {name})"
        return f"non-finite gradient of shared parameter {bad[0]} (all task losses finite)"

    def check_parameters(self, model: nn.Module, epoch: int) -> None:
        """Raise :class:`NonFiniteError` when a parameter became non-finite (finite gradients
        with too large a step), before the epoch's checkpoints are written. (Buffers are not
        checked: some weightings keep NaN in theirs as "not yet set".)"""
        bad = nonfinite_names([(n, p.detach()) for n, p in model.named_parameters()])
        if bad:
            raise NonFiniteError(
                f"parameter {bad[0]} is non-finite after epoch {epoch} (the optimiser step overflowed?): stopped "
                "before writing this epoch's checkpoints (the previous epoch's are intact). Lower --lr")

    def handle(self, problem: str, epoch: int, batch: int) -> None:
        """Raise :class:`NonFiniteError` (``'raise'``), or undo the batch (restore the
        snapshot taken at its start) and count it (``'skip'``)."""
        if self.mode == "raise":
            raise NonFiniteError(
                f"{problem} at epoch {epoch}, batch {batch}: training stopped before updating the model "
                "(the last epoch's checkpoints are intact). Lower --lr, check the data for NaN/inf, or "
                "pass --nonfinite skip to skip such batches")
        if self._snapshot is not None:
            self._snapshot.restore()
            self._snapshot = None
        self.skipped += 1
        self.skipped_this_epoch += 1

    def guarded_step(self, step: Callable[[], Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                     epoch: int, batch: int) -> Any:
        """Run ``step`` (a step that does its own forward passes and updates: the bilevel
        methods') under the guard. A step that fails numerically or leaves a non-finite
        parameter is undone (model state and optimiser state restored) and then handled like a
        non-finite loss. Returns ``step()``'s value, or None for a skipped step."""
        saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        saved_optimizer = copy.deepcopy(optimizer.state_dict())
        try:
            result, problem = step(), None
        except FloatingPointError as err:  # a non-finite loss the step found (names the task)
            result, problem = None, str(err)
        except np.linalg.LinAlgError as err:
            result, problem = None, f"non-finite values in the step ({err})"
        bad = nonfinite_names([(n, p.detach()) for n, p in model.named_parameters()]) if problem is None else []
        if bad:
            problem = f"non-finite parameter {bad[0]} after the step (a non-finite loss or gradient)"
        if problem is None:
            return result
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        self.handle(problem, epoch, batch)
        return None

    def epoch_report(self, epoch: int) -> Optional[str]:
        if self.skipped_this_epoch == 0:
            return None
        return f"epoch {epoch}: skipped {self.skipped_this_epoch} batch(es) with non-finite losses/gradients (--nonfinite skip)"


class StepSnapshot:
    """What one training batch changes besides parameters, gradients and the optimiser, taken
    before the batch and restored when it is skipped (cost: a copy of the buffers, which are
    small, and of the meter's per-batch lists' lengths).

    - every buffer of the model (BatchNorm statistics, weighting state buffers);
    - the model's Python scalars (``int``/``float``/``bool``/``str``/None attributes, e.g.
      RGB's step counter) and deep copies of the attributes a weighting names in its
      ``step_state_attributes`` (mutable Python state);
    - each loss and metric object of the meter: list attributes (LibMTL's ``record``/``bs``)
      by length, tensors and arrays by copy, other values by reference;
    - the random generator of the model's device (dropout masks drawn by the batch).
    """

    def __init__(self) -> None:
        self._buffers: list[tuple[nn.Module, str, torch.Tensor]] = []
        self._model: Optional[nn.Module] = None
        self._scalars: dict[str, Any] = {}
        self._declared: dict[str, Any] = {}
        self._records: list[tuple[Any, dict[str, Any]]] = []
        self._rng: Optional[tuple[str, torch.Tensor]] = None

    @classmethod
    def take(cls, model: nn.Module, meter: Any) -> "StepSnapshot":
        snap = cls()
        snap._model = model
        for module in model.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    snap._buffers.append((module, name, buffer.detach().clone()))
        snap._scalars = {k: v for k, v in vars(model).items() if v is None or isinstance(v, (bool, int, float, str))}
        snap._declared = {k: copy.deepcopy(getattr(model, k)) for k in getattr(model, "step_state_attributes", ())
                          if hasattr(model, k)}
        for owner in [*meter.losses.values(), *meter.metrics.values()]:
            snap._records.append((owner, _record_state(owner)))
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        if device.type == "cuda":
            snap._rng = ("cuda", torch.cuda.get_rng_state(device))
        else:
            snap._rng = ("cpu", torch.get_rng_state())
        return snap

    def restore(self) -> None:
        with torch.no_grad():
            for module, name, saved in self._buffers:
                current = module._buffers.get(name)
                if current is not None and current.shape == saved.shape and current.dtype == saved.dtype:
                    current.copy_(saved)
                else:
                    module._buffers[name] = saved
        model = self._model
        if model is not None:
            for key, value in self._scalars.items():
                model.__dict__[key] = value
            for key, value in self._declared.items():
                setattr(model, key, value)
        for owner, saved_state in self._records:
            _restore_record_state(owner, saved_state)
        if self._rng is not None:
            kind, state = self._rng
            if kind == "cuda" and model is not None:
                torch.cuda.set_rng_state(state, next(p.device for p in model.parameters()))
            else:
                torch.set_rng_state(state)


def _record_state(owner: Any) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for key, value in vars(owner).items():
        if isinstance(value, list):
            state[key] = ("list", value, len(value))
        elif isinstance(value, torch.Tensor):
            state[key] = ("value", value.detach().clone())
        elif isinstance(value, np.ndarray):
            state[key] = ("value", value.copy())
        else:
            state[key] = ("value", value)
    return state


def _restore_record_state(owner: Any, state: dict[str, Any]) -> None:
    for key in [k for k in vars(owner) if k not in state]:
        del owner.__dict__[key]
    for key, saved in state.items():
        if saved[0] == "list":
            _, lst, length = saved
            del lst[length:]
            owner.__dict__[key] = lst
        else:
            owner.__dict__[key] = saved[1]


def nonfinite_names(named: Sequence[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of the tensors holding a NaN or inf. The fast path sums each tensor (far
    cheaper than ``isfinite`` on CPU; NaN and inf propagate through sums) and looks element by
    element only when the total is not finite (which an overflow of finite values can cause)."""
    if not named or bool(torch.isfinite(torch.stack([t.sum(dtype=torch.float32) for _, t in named]).sum())):
        return []
    return [name for name, t in named if not bool(torch.isfinite(t).all())]
