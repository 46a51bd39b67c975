"""The Trainer's step protocol: named hooks, in the manner of PyTorch Lightning's ``Callback``.

The Trainer's loop (``trainer.py``) calls these hooks, in this order, on every component in
``trainer.callbacks`` (distributed training, the non-finite guard, run logging with the MER
diagnostics, the run directory, then any a user adds; a bilevel method runs its whole step
through the Trainer's public ``loader_iterators``/``next_batch``/``record_losses``)::

    transform_model                    (at construction: e.g. SyncBatchNorm, rank 0's weights)
    transform_loaders                  (the training loaders)
    on_fit_start
      for each epoch:
        on_train_epoch_start
          for each batch:
            on_train_batch_start
            transform_losses            (returns the losses the weighting sees)
            on_before_backward
            on_after_backward
            on_before_optimizer_step
            on_after_optimizer_step
            on_train_batch_end         (not for a skipped batch: --nonfinite skip)
        on_train_epoch_end
        on_before_scores('train')      (before the meter computes the epoch's scores)
        for each evaluated split ('val', 'test'):
          transform_loaders
          on_before_scores(mode)
          on_evaluation_end(mode)
        on_epoch_end                   (after the scheduler step; the run directory saves here,
                                        which calls on_save_checkpoint on every component)
    on_fit_end
    on_exception                       (instead of the rest, when the loop raises)

``transform_loaders`` is called on the loaders ``train`` and ``test`` are given, before any
batch is drawn. ``on_load_checkpoint`` is called by ``Trainer.resume``. A component may raise
from any hook to end the run (every component's ``on_exception`` runs first).

Rules every component keeps: it holds its own state and saves it under its own
:attr:`Callback.state_key` in ``on_save_checkpoint`` / restores it in ``on_load_checkpoint``;
it reads the Trainer's public attributes only (``model``, ``optimizer``, ``meter``,
``task_name``, ``device``...) and never another component's private attributes. Every hook
has a do-nothing default, so a component overrides only the hooks it needs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from LibMTL_rgb.trainer import Trainer

__all__ = ["Callback"]


class Callback:
    """One component of a training run; override the hooks it needs (all default to no-ops)."""

    #: Key of this component's entry in a checkpoint (``None``: it saves nothing).
    state_key: Optional[str] = None

    # ------------------------------------------------------------------ fit
    def on_fit_start(self, trainer: "Trainer") -> None:
        """Before the first epoch of ``train`` (after a resume has been loaded)."""

    def on_fit_end(self, trainer: "Trainer") -> None:
        """After the last epoch of ``train``."""

    def on_exception(self, trainer: "Trainer", error: BaseException) -> None:
        """The loop raised ``error`` (it is re-raised after every component has seen it)."""

    # --------------------------------------------------------------- model
    def transform_model(self, trainer: "Trainer", model: Any) -> Any:
        """The model the Trainer trains (called once, at construction); identity by default."""
        return model

    # ---------------------------------------------------------------- data
    def transform_loaders(self, trainer: "Trainer", loaders: Any, train: bool) -> Any:
        """The loaders ``train``/``test`` use (e.g. each process's shard); identity by default."""
        return loaders

    # ------------------------------------------------------------- training
    def on_train_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        """Before the first batch of ``epoch`` (model in train mode)."""

    def on_train_batch_start(self, trainer: "Trainer", epoch: int, batch: int) -> None:
        """Before the batch's forward pass."""

    def transform_losses(self, trainer: "Trainer", losses: Tensor) -> Tensor:
        """The task losses ``[T]`` the weighting sees (e.g. averaged over processes); identity
        by default."""
        return losses

    def on_before_backward(self, trainer: "Trainer", losses: Tensor) -> None:
        """Before the weighting's ``backward(losses, **weight_args)``."""

    def on_after_backward(self, trainer: "Trainer") -> None:
        """After the weighting's ``backward``: every ``.grad`` holds the update direction."""

    def on_before_optimizer_step(self, trainer: "Trainer") -> None:
        """Just before ``optimizer.step()``."""

    def on_after_optimizer_step(self, trainer: "Trainer") -> None:
        """Just after ``optimizer.step()``."""

    def on_train_batch_end(self, trainer: "Trainer", epoch: int, batch: int, weights: Any) -> None:
        """After the batch's step (``weights``: what the weighting's ``backward`` returned)."""

    def on_before_scores(self, trainer: "Trainer", mode: str) -> None:
        """Before ``trainer.meter`` computes the scores of a finished pass (``mode``: 'train',
        'val' or 'test'), e.g. to sum its records over processes."""

    def on_train_epoch_end(self, trainer: "Trainer", epoch: int) -> None:
        """After the last batch of ``epoch``, before evaluation."""

    # ----------------------------------------------------------- evaluation
    def on_evaluation_end(self, trainer: "Trainer", mode: str, epoch: Optional[int]) -> None:
        """After one evaluation (``mode``: 'val' or 'test'), its scores computed."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int) -> None:
        """After training, evaluation and the scheduler step of ``epoch``."""

    # ---------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, trainer: "Trainer", state: dict[str, Any]) -> None:
        """Add this component's state to ``state`` (under :attr:`state_key`)."""

    def on_load_checkpoint(self, trainer: "Trainer", state: dict[str, Any]) -> None:
        """Restore this component's state from ``state`` (its :attr:`state_key` entry)."""
