"""Bilevel weightings (MOML, FORUM, AutoLambda) and the training step they need.

A bilevel method learns the task weights (upper level) from how a model trained with them
(lower level) does on a second, *meta* batch. One step therefore needs two batches and extra
forward/backward passes, so the ``Trainer`` hands such a method the whole step:
``BilevelLoop.for_trainer`` returns ``None`` for ordinary weightings; for a weighting with
``bilevel = True`` each training step calls :meth:`BilevelLoop.step`, which draws a training
batch and a meta batch and calls the weighting's ``bilevel_step``.

Meta batches come from ``trainer.meta_dataloaders`` when set (e.g. a held-out split, the
papers' validation data), else from a second, independent pass over the training loaders
started one batch ahead (so the meta batch is never the inner batch; the authors' code
also draws both from the training set: LibMTL's ``train_bilevel`` and Auto-Lambda's "copy
of train_loader with different data order").

Lower-level copies of the model are never built: ``functional_call`` evaluates the model at
other parameter values (BatchNorm statistics of those evaluations go to throw-away copies).
Evaluations that a formula compares (e.g. ``L(θ + εd)`` and ``L(θ − εd)``) can replay the same
random draws (``seed``), so dropout or LTB's branch sampling does not enter the differences.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.func import functional_call

from LibMTL_rgb.registry import Hyperparameter
from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting
from LibMTL_rgb.weighting.famo import adam_step

OUTER_LR = Hyperparameter(
    "outer_lr", 1e-3, "MOML, FORUM, AutoLambda: Adam learning rate of the task-weight (upper-level) variables",
    minimum=0.0, exclusive_minimum=True,
)
INNER_LR = Hyperparameter(
    "inner_lr", 0.1, "MOML, FORUM: SGD step size of the inner (lower-level) steps", minimum=0.0, exclusive_minimum=True,
)
INNER_STEP = Hyperparameter(
    "inner_step", 5, "MOML, FORUM: number of inner (lower-level) SGD steps (AutoLambda: one virtual step)",
    minimum=1,
)

#: A batch: ``(inputs, {task: target})``, or with ``multi_input`` ``{task: (inputs, target)}``.
Batch = Any


class BilevelWeighting(AbsWeighting):
    """Base class of the bilevel methods. Subclasses implement :meth:`task_weights` (the
    current weights of the training losses) and :meth:`bilevel_step`.

    Outside a bilevel training loop (``model.backward(losses)`` called directly) the model gets
    the gradient of ``Σ_i w_i L_i`` with the current weights and the weights stay as they are.
    Representation gradients (``rep_grad``) are refused: the methods differentiate through
    the whole model at other parameter values.
    """

    #: The Trainer gives the whole training step to :meth:`bilevel_step`.
    bilevel = True
    supports_rep_grad = False
    hyperparameters = (OUTER_LR,)

    def init_param(self) -> None:
        self._check_rep_grad_support()

    def task_weights(self) -> Tensor:
        """The current weights of the training losses ([T])."""
        raise NotImplementedError

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        weights = self.task_weights().detach().to(losses.dtype)
        (weights @ losses).backward()
        return weights.cpu().numpy()

    def bilevel_step(self, loop: "BilevelLoop", train_batch: Batch, meta_batch: Batch, **kwargs) -> np.ndarray:
        """Update the task weights and the model from one training and one meta batch;
        return the task weights used for the model update."""
        raise NotImplementedError

    # ----------------------------------------------------- upper-level Adam
    def _register_adam(self, prefix: str, shape: tuple[int, ...]) -> None:
        """Adam moments of an upper-level variable, as buffers (saved with the state_dict)."""
        self.register_buffer(f"{prefix}_adam_m", torch.zeros(shape, device=self.device))
        self.register_buffer(f"{prefix}_adam_v", torch.zeros(shape, device=self.device))
        self.register_buffer(f"{prefix}_adam_step", torch.zeros((), dtype=torch.long))

    def _adam_update(self, prefix: str, variable: Tensor, grad: Tensor, lr: float) -> None:
        """One ``torch.optim.Adam`` step (β = (0.9, 0.999), no weight decay) of ``variable``
        in place: the optimizer both authors' codes use for the task weights."""
        adam_step(variable, grad.to(variable.dtype), getattr(self, f"{prefix}_adam_m"),
                  getattr(self, f"{prefix}_adam_v"), getattr(self, f"{prefix}_adam_step"), lr, 0.0)


class BilevelLoop:
    """What a bilevel step needs from the Trainer: batches, losses at any parameter values,
    the model's optimizer; it uses the Trainer's public methods only (``loader_iterators``,
    ``next_batch``, ``record_losses``, ``process_preds``) and the public ``nonfinite`` check."""

    def __init__(self, trainer, meta_loader) -> None:
        self.trainer = trainer
        self.model: nn.Module = trainer.model
        self.optimizer: torch.optim.Optimizer = trainer.optimizer
        self.task_name: list[str] = trainer.task_name
        self.multi_input: bool = trainer.multi_input
        self.meta_loader = meta_loader

    @classmethod
    def for_trainer(cls, trainer, train_dataloaders) -> Optional["BilevelLoop"]:
        """``None`` unless the trainer's weighting is bilevel; then a loop whose meta batches
        come from ``trainer.meta_dataloaders`` or, by default, from the training loaders."""
        if not getattr(trainer.model, "bilevel", False):
            return None
        meta = getattr(trainer, "meta_dataloaders", None)
        meta_loader, _ = trainer.loader_iterators(train_dataloaders if meta is None else meta)
        loop = cls(trainer, meta_loader)
        if meta is None:
            loop.draw(meta_loader)  # one batch ahead of the training pass
        return loop

    # ---------------------------------------------------------------- steps
    def step(self, train_loader) -> np.ndarray:
        """One bilevel training step (called by the Trainer for every training batch)."""
        train_batch = self.draw(train_loader)
        meta_batch = self.draw(self.meta_loader)
        return self.model.bilevel_step(self, train_batch, meta_batch, **self.trainer.kwargs["weight_args"])

    def draw(self, loader) -> Batch:
        if not self.multi_input:
            return self.trainer.next_batch(loader)
        return {task: self.trainer.next_batch(loader[task]) for task in self.task_name}

    # ------------------------------------------------------------- parameters
    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The model's trainable parameters (the lower-level variables ω), by name."""
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_parameters()]

    def learning_rate(self) -> float:
        """The model optimizer's current learning rate (first parameter group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    # ----------------------------------------------------------------- losses
    def new_seed(self) -> int:
        """A seed for :meth:`losses` (drawn from torch's generator, so runs stay reproducible)."""
        return int(torch.randint(0, 2**62, ()))

    def losses(self, batch: Batch, params: Optional[list[Tensor]] = None, record: bool = False,
               seed: Optional[int] = None) -> Tensor:
        """The [T] task losses of ``batch`` with the model's parameters replaced by ``params``
        (same order as :meth:`parameters`; ``None``: the model's own). ``record``: count the
        predictions and losses in the trainer's meter (the training-set metrics). ``seed``:
        evaluate with the random draws of that seed (the same for every call with it), leaving
        the global random state as it was."""
        if seed is None:
            return self._losses(batch, params, record)
        with self._replayed_randomness(seed):
            return self._losses(batch, params, record)

    @contextlib.contextmanager
    def _replayed_randomness(self, seed: int) -> Iterator[None]:
        device = torch.device(self.trainer.device)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.default_generator.manual_seed(seed)
            if devices:
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
            yield

    def _losses(self, batch: Batch, params: Optional[list[Tensor]], record: bool) -> Tensor:
        """The [T] losses of ``batch``; ``FloatingPointError`` naming the task when one is not
        finite (the Trainer's non-finite guard undoes the step)."""
        losses = self._task_losses(batch, params, record)
        problem = self.trainer.nonfinite.losses_problem(losses, self.task_name)
        if problem is not None:
            raise FloatingPointError(problem)
        return losses

    def _task_losses(self, batch: Batch, params: Optional[list[Tensor]], record: bool) -> Tensor:
        forward = self._forward(params)
        trainer = self.trainer
        if not self.multi_input:
            inputs, gts = batch
            preds = trainer.process_preds(forward(inputs, None))
            if record:
                trainer.meter.update(preds, gts)
                return trainer.record_losses(preds, gts)
            return torch.stack([self._loss(task, preds[task], gts[task]) for task in self.task_name])
        per_task = []
        for task in self.task_name:
            inputs, gt = batch[task]
            pred = trainer.process_preds(forward(inputs, task)[task], task)
            if record:
                trainer.meter.update(pred, gt, task)
                per_task.append(trainer.record_losses(pred, gt, task))
            else:
                per_task.append(self._loss(task, pred, gt))
        return torch.stack(per_task)

    def _loss(self, task: str, pred: Tensor, gt: Tensor) -> Tensor:
        return self.trainer.meter.losses[task].compute_loss(pred, gt)

    def _forward(self, params: Optional[list[Tensor]]):
        model = self.model
        if params is None:
            return lambda inputs, task: model(inputs) if task is None else model(inputs, task)
        names = [n for n, _ in self.named_parameters()]
        values = dict(zip(names, params))
        # throw-away buffers: BatchNorm statistics of evaluations at other parameters are not kept
        values.update({n: b.clone() for n, b in model.named_buffers()})

        def forward(inputs, task):
            args = (inputs,) if task is None else (inputs, task)
            return functional_call(model, values, args)

        return forward


def flat(tensors: "list[Optional[Tensor]]", like: list[Tensor]) -> Tensor:
    """Concatenate ``tensors`` (``None`` counts as zeros shaped like ``like``) into one vector."""
    return torch.cat([(torch.zeros_like(p) if t is None else t).reshape(-1) for t, p in zip(tensors, like)])


def unflat(vector: Tensor, like: list[Tensor]) -> Iterator[Tensor]:
    """Split a flat vector into tensors shaped like ``like``."""
    offset = 0
    for p in like:
        yield vector[offset : offset + p.numel()].view_as(p)
        offset += p.numel()


def grads_or_zeros(output: Tensor, inputs: list[Tensor], **kwargs) -> list[Tensor]:
    """``torch.autograd.grad(output, inputs)`` with zeros for inputs the output does not reach."""
    grads = torch.autograd.grad(output, inputs, allow_unused=True, **kwargs)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, inputs)]
