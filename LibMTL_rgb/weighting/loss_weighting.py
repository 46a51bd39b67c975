"""``LossWeighting``: the base of methods that only rescale the losses (SI, RLW, DWA, UW, FAMO).

Such a method builds one scalar objective from the task losses and backpropagates it once.
With ``rep_grad=True`` the architecture feeds each decoder a detached copy of the shared
representation, so one ``objective.backward()`` stops there; :meth:`_backward_objective`
then pushes the collected representation gradients through the encoder. The shared
parameters receive exactly the gradient they would get with ``rep_grad=False``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting


class LossWeighting(AbsWeighting):
    """Base class: a method that backpropagates one weighted objective of the losses."""

    head_rule = True  # holds by construction: the objective's gradient is Σ_t w_t ∇L_t

    def _backward_objective(self, objective: Tensor) -> None:
        """``objective.backward()``; with ``rep_grad`` also through the shared encoder."""
        objective.backward()
        if getattr(self, "rep_grad", False):
            self._backward_rep_tasks()

    def _backward_rep_tasks(self) -> None:
        tasks = [t for t in self.task_name if self.rep_tasks[t].grad is not None]
        if isinstance(self.rep, dict):
            for index, task in enumerate(tasks):
                self.rep[task].backward(self.rep_tasks[task].grad, retain_graph=index + 1 < len(tasks))
        elif tasks:
            self.rep.backward(sum(self.rep_tasks[t].grad for t in tasks))


def check_positive_losses(losses: Tensor, method: str, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` when a method that takes ``log`` of the losses gets a bad one."""
    detached = losses.detach()
    bad = ~(detached >= 0) if allow_zero else ~(detached > 0)
    if bool(bad.any()):
        index = int(torch.nonzero(bad)[0])
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(
            f"{method} takes the log of each task loss and needs {bound} losses; "
            f"task {index} has loss {float(detached[index])}"
        )
