"""``MultiSampleWeighting``: the base of methods whose step uses the losses of several
independent batches (MoDo, SDMGrad: two batches for the weight update, a third for the
model update).

``loss_samples_per_step`` tells the Trainer how many batches to draw per step; ``backward``
then receives the ``S`` loss vectors as a tuple of ``[T]`` tensors (each with its own graph,
so each per-task backward walks one batch's graph). A stacked ``[S, T]`` tensor, as LibMTL's
Trainer passes, works too, but then every backward also walks the other batches' graphs
(with zero cotangents). Given ``[T]`` losses (one batch, e.g. a custom loop), that batch plays
every role: the weight update is then biased, which the papers' double sampling avoids.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting

SampleLosses = Union[Tensor, Sequence[Tensor]]


class MultiSampleWeighting(AbsWeighting):
    """Per-task gradients of the shared parameters for each of three batches."""

    #: Batches the Trainer draws per step; the methods here use three (two for the task
    #: weights, one for the model update).
    loss_samples_per_step: int = 3
    head_rule = True
    supports_rep_grad = False
    needs_full_matrix = "the per-task gradients of three batches at once"
    #: The task-specific parameters get this times the sum over the batches of their loss
    #: gradients (1: the sum, SDMGrad's code; 1/3: the mean, MoDo's as LibMTL divides by 3).
    task_specific_batch_scale: float = 1.0

    def init_param(self) -> None:
        self._check_rep_grad_support()

    def _sample_grads(self, losses: SampleLosses) -> tuple[Tensor, Tensor, Tensor]:
        """The ``[T, D]`` gradients of the three batches (one batch's three times for ``[T]``
        losses). The task-specific parameters receive ``task_specific_batch_scale`` times the
        sum over the batches of their loss gradients (no task weights: the exception to the
        head rule, ``docs/methods.md``)."""
        samples = self._split_samples(losses)
        grads = []
        for sample in samples:
            grads.append(self._get_grads(sample, mode="autograd").detach())
            self._raise_if_nonfinite(sample, grads[-1])
        others = self._task_specific_params(self._share_param_list())
        stacked = torch.stack(list(samples))
        if others:
            scale = self.task_specific_batch_scale * (3.0 if len(samples) == 1 else 1.0)
            stacked.backward(torch.full_like(stacked, scale), inputs=others)
        return tuple(grads * 3) if len(grads) == 1 else tuple(grads)

    def _split_samples(self, losses: SampleLosses) -> list[Tensor]:
        expected = self.loss_samples_per_step
        if isinstance(losses, Tensor):
            samples = [losses] if losses.dim() == 1 else list(losses)
        else:
            samples = list(losses)
        if len(samples) not in (1, expected) or any(s.shape != (self.task_num,) for s in samples):
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else [tuple(s.shape) for s in samples]
            raise ValueError(f"{type(self).__name__} takes [T] losses or {expected} batches of them "
                             f"(T = {self.task_num}), got {shape}")
        return samples
