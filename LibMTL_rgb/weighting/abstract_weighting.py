"""``AbsWeighting``: LibMTL's weighting contract and the one place gradients are plumbed.

LibMTL's Trainer builds ``class MTLmodel(Architecture, Weighting)``; a weighting may use
``self.task_num``, ``self.task_name``, ``self.device``, ``self.rep_grad``, ``self.rep`` /
``self.rep_tasks``, ``self.get_share_params()`` and ``self.zero_grad_share_params()`` from the
architecture, and ``self.epoch``, ``self.epochs``, ``self.train_loss_buffer`` set by the Trainer.

What differs from LibMTL is inside, not on the surface: the per-task gradient matrix is
created on the model's device, flattening and writing back are single O(D) passes with
precomputed offsets (LibMTL re-sums the sizes for every parameter, O(P^2)), and nothing is
copied to the host.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.registry import Hyperparameter


class AbsWeighting(nn.Module):
    """Base class of every weighting method (LibMTL's ``AbsWeighting``)."""

    #: Method options: CLI flags ``--name`` and ``weight_args`` keys (see ``registry.py``).
    hyperparameters: tuple[Hyperparameter, ...] = ()
    #: Whether the method can work on representation gradients (``rep_grad=True``).
    supports_rep_grad: bool = True

    def __init__(self) -> None:
        super().__init__()

    def init_param(self) -> None:
        """Called once after the model is built (LibMTL contract)."""

    # ------------------------------------------------------------------ checks
    def _check_rep_grad_support(self) -> None:
        if getattr(self, "rep_grad", False) and not self.supports_rep_grad:
            raise ValueError(
                f"{type(self).__name__} manipulates shared-parameter gradients and cannot run "
                "with rep_grad=True; use rep_grad=False (drop --rep_grad)."
            )

    def _raise_if_nonfinite(self, losses: Tensor, grads: Optional[Tensor] = None) -> None:
        """Raise ``FloatingPointError`` naming the first task with a non-finite loss/gradient."""
        finite_losses = torch.isfinite(losses.detach())
        finite_grads = torch.isfinite(grads).all(dim=-1) if grads is not None else finite_losses
        ok = finite_losses & finite_grads
        if bool(ok.all()):  # one host sync
            return
        names = list(getattr(self, "task_name", range(len(losses))))
        for index in range(len(losses)):
            if not bool(finite_losses[index]):
                raise FloatingPointError(f"task {names[index]!r} has a non-finite loss ({float(losses[index].detach())})")
        for index in range(len(losses)):
            if not bool(finite_grads[index]):
                raise FloatingPointError(f"task {names[index]!r} has a non-finite gradient")

    # ------------------------------------------------------------ plumbing
    def _share_param_list(self) -> list[nn.Parameter]:
        return [p for p in self.get_share_params() if p.requires_grad]

    def _compute_grad_dim(self) -> None:
        """Set ``grad_index`` (sizes), ``grad_offsets`` (cumulative) and ``grad_dim`` (D)."""
        self.grad_index = [p.numel() for p in self._share_param_list()]
        self.grad_offsets = np.concatenate([[0], np.cumsum(self.grad_index)]).astype(int).tolist()
        self.grad_dim = int(self.grad_offsets[-1])

    def _grad2vec(self, out: Optional[Tensor] = None) -> Tensor:
        """Flatten the shared parameters' ``.grad`` into ``out`` (a [D] vector); missing grads are 0."""
        params = self._share_param_list()
        if out is None:
            out = torch.empty(self.grad_dim, device=self.device, dtype=_grad_dtype(params))
        for param, beg, end in zip(params, self.grad_offsets[:-1], self.grad_offsets[1:]):
            if param.grad is None:
                out[beg:end].zero_()
            else:
                out[beg:end].copy_(param.grad.reshape(-1))
        return out

    def _compute_grad(self, losses: Tensor, mode: str = "backward", rep_grad: bool = False):
        """Per-task gradients: a [T, D] matrix of shared-parameter gradients, or, with
        ``rep_grad``, the gradients of the representation(s) (LibMTL semantics).

        ``mode='backward'`` runs ``loss.backward()`` per task, so task-specific parameters also
        receive their own task's gradient; ``mode='autograd'`` leaves every ``.grad`` alone.
        """
        if mode not in ("backward", "autograd"):
            raise ValueError(f"mode must be 'backward' or 'autograd', got {mode!r}")
        task_num = len(losses)
        if rep_grad:
            return self._compute_rep_grad(losses, mode)
        params = self._share_param_list()
        grads = torch.empty(task_num, self.grad_dim, device=self.device, dtype=_grad_dtype(params))
        self._had_grad = [False] * len(params)
        for param in params:
            param.grad = None
        for tn in range(task_num):
            retain = tn + 1 < task_num
            if mode == "backward":
                losses[tn].backward(retain_graph=retain)
                for k, param in enumerate(params):
                    self._had_grad[k] = self._had_grad[k] or param.grad is not None
                self._grad2vec(out=grads[tn])
                for param in params:
                    param.grad = None
            else:
                task_grads = torch.autograd.grad(losses[tn], params, retain_graph=True, allow_unused=True)
                for k, (g, beg, end) in enumerate(zip(task_grads, self.grad_offsets[:-1], self.grad_offsets[1:])):
                    if g is None:
                        grads[tn, beg:end].zero_()
                    else:
                        self._had_grad[k] = True
                        grads[tn, beg:end].copy_(g.reshape(-1))
        return grads

    def _compute_rep_grad(self, losses: Tensor, mode: str):
        if not hasattr(self, "rep_tasks"):
            raise ValueError("rep_grad=True needs an architecture that stores rep/rep_tasks")
        task_num = len(losses)
        per_grads = []
        for tn, task in enumerate(self.task_name):
            rep_task = self.rep_tasks[task]
            if mode == "backward":
                losses[tn].backward(retain_graph=tn + 1 < task_num)
                grad = rep_task.grad
                per_grads.append(torch.zeros_like(rep_task) if grad is None else grad.detach().clone())
            else:
                (grad,) = torch.autograd.grad(losses[tn], rep_task, retain_graph=True, allow_unused=True)
                per_grads.append(torch.zeros_like(rep_task) if grad is None else grad)
        if isinstance(self.rep, dict):
            return per_grads
        return torch.stack(per_grads)

    def _reset_grad(self, new_grads: Tensor) -> None:
        """Write a [D] vector into the shared parameters' ``.grad`` (one O(D) pass)."""
        params = self._share_param_list()
        had_grad = getattr(self, "_had_grad", [True] * len(params))
        for param, used, beg, end in zip(params, had_grad, self.grad_offsets[:-1], self.grad_offsets[1:]):
            if not used:
                continue
            value = new_grads[beg:end].view_as(param).to(param.dtype)
            if param.grad is None:
                param.grad = value.clone()
            else:
                param.grad.copy_(value)

    def _get_grads(self, losses: Tensor, mode: str = "backward"):
        """LibMTL's ``_get_grads``: [T, D] grads, or ``[per_grads, grads]`` with ``rep_grad``."""
        if self.rep_grad:
            per_grads = self._compute_grad(losses, mode, rep_grad=True)
            if not isinstance(self.rep, dict):
                grads = per_grads.reshape(self.task_num, self.rep.size()[0], -1).sum(1)
            else:
                try:
                    grads = torch.stack(per_grads).sum(1).view(self.task_num, -1)
                except RuntimeError as err:
                    raise ValueError("the representations of different tasks must have the same shape") from err
            return [per_grads, grads]
        self._compute_grad_dim()
        return self._compute_grad(losses, mode)

    def _backward_new_grads(
        self, batch_weight: "Tensor | Sequence[float]", per_grads=None, grads: Optional[Tensor] = None
    ) -> None:
        """Apply task weights: to the representation(s) with ``rep_grad``, else to ``grads``."""
        if self.rep_grad:
            if not isinstance(self.rep, dict):
                weight = torch.as_tensor(batch_weight, device=per_grads.device, dtype=per_grads.dtype)
                transformed = torch.einsum("t,t...->...", weight, per_grads)
                self.rep.backward(transformed)
            else:
                for tn, task in enumerate(self.task_name):
                    self.rep[task].backward(batch_weight[tn] * per_grads[tn], retain_graph=tn + 1 < self.task_num)
        else:
            weight = torch.as_tensor(batch_weight, device=grads.device, dtype=grads.dtype)
            self._reset_grad(weight @ grads)

    # --------------------------------------------------------------- method
    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        """Compute gradients for ``losses`` (shape [T]) and return the task weights (length T)."""
        raise NotImplementedError


def _grad_dtype(params: Iterable[nn.Parameter]) -> torch.dtype:
    dtypes = {p.dtype for p in params}
    if not dtypes:
        return torch.get_default_dtype()
    return torch.float64 if torch.float64 in dtypes else torch.float32
