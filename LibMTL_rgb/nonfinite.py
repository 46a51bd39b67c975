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
"""
from __future__ import annotations

import copy

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

#: The Trainer's ``nonfinite`` choices (``--nonfinite``).
MODES = ("raise", "skip")

__all__ = ["MODES", "NonFiniteError", "NonFiniteGuard"]


class NonFiniteError(FloatingPointError):
    """A training step produced a non-finite loss or gradient."""


class NonFiniteGuard:
    """Checks one training step; counts skipped batches in ``'skip'`` mode."""

    def __init__(self, mode: str = "raise") -> None:
        if mode not in MODES:
            raise ValueError(f"nonfinite must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.skipped = 0  # batches skipped over the whole run
        self.skipped_this_epoch = 0

    def start_epoch(self) -> None:
        self.skipped_this_epoch = 0

    def losses_problem(self, losses: torch.Tensor, task_names: Sequence[str]) -> Optional[str]:
        """None when every loss is finite, else what is wrong (one host sync per step)."""
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
        """Raise :class:`NonFiniteError` (``'raise'``) or count the skipped batch (``'skip'``)."""
        if self.mode == "raise":
            raise NonFiniteError(
                f"{problem} at epoch {epoch}, batch {batch}: training stopped before updating the model "
                "(the last epoch's checkpoints are intact). Lower --lr, check the data for NaN/inf, or "
                "pass --nonfinite skip to skip such batches")
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


def nonfinite_names(named: Sequence[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of the tensors holding a NaN or inf. The fast path sums each tensor (far
    cheaper than ``isfinite`` on CPU; NaN and inf propagate through sums) and looks element by
    element only when the total is not finite (which an overflow of finite values can cause)."""
    if not named or bool(torch.isfinite(torch.stack([t.sum(dtype=torch.float32) for _, t in named]).sum())):
        return []
    return [name for name, t in named if not bool(torch.isfinite(t).all())]


def snapshot_losses(losses: dict) -> list:
    """How many batches each of the meter's loss objects has recorded (LibMTL's ``record`` /
    ``bs`` lists), to undo a skipped batch."""
    return [(loss, len(loss.record), len(loss.bs)) for loss in losses.values()]


def restore_losses(snapshot: Optional[list]) -> None:
    """Undo the loss records made since :func:`snapshot_losses`."""
    for loss, records, sizes in snapshot or ():
        del loss.record[records:]
        del loss.bs[sizes:]
