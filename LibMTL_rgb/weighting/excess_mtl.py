"""ExcessMTL: task weights from estimated excess risks (He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.loss_weighting import LossWeighting
from LibMTL_rgb.weighting.state_buffers import ResizableBuffers

#: ε in ``sqrt(Σ_s g_s² + ε)`` (the authors' code / LibMTL).
ADAGRAD_EPS = 1e-7


def row_scratch(grads: Tensor, scratch: Optional[Tensor] = None) -> Tensor:
    """``scratch`` when it is a ``[2, D]`` tensor of ``grads``' dtype and device, else a new one."""
    if scratch is None or scratch.shape != (2, grads.shape[1]) or scratch.dtype != grads.dtype or scratch.device != grads.device:
        return grads.new_empty(2, grads.shape[1])
    return scratch


def accumulate_excess_risks(grads: Tensor, squared_grad_sum: Tensor, scratch: Optional[Tensor] = None) -> Tensor:
    r"""Add ``g²`` to ``squared_grad_sum`` (in place) and return ``e_i = g_iᵀ H_i^{-1} g_i``
    with the diagonal AdaGrad-style curvature ``H_i = diag(sqrt(Σ_{s≤t} g_{i,s}² + ε))`` (the
    paper's second-order Taylor estimate of the excess risk, up to the factor ½ that the
    normalisation by the first estimate removes): ``e_i = Σ_d g_{i,d}² / sqrt(S_{i,d} + ε)``.

    One task row at a time, through a ``[2, D]`` ``scratch`` (allocated when not given): the
    same operations on the same numbers as the ``[T, D]`` expressions, whose temporaries would
    each be a pass through memory (and fresh pages) instead of a row that stays in cache."""
    squared, curvature = row_scratch(grads, scratch)
    excess = grads.new_empty(grads.shape[0])
    for row, (grad, total) in enumerate(zip(grads, squared_grad_sum)):
        torch.mul(grad, grad, out=squared)
        total.add_(squared)
        torch.add(total, ADAGRAD_EPS, out=curvature).sqrt_()
        excess[row] = squared.div_(curvature).sum()
    return excess


def excess_mtl_weights(weights: Tensor, excess: Tensor, baseline: Tensor, step_size: float) -> Tensor:
    r"""Exponentiated-gradient step on the simplex: ``w_i ∝ w_i exp(η e_i / e_i^0)``."""
    moved = weights * torch.exp(step_size * excess / baseline)
    return moved / moved.sum()


@WEIGHTINGS.register
class ExcessMTL(ResizableBuffers, LossWeighting):
    r"""Minimise ``Σ_i w_i L_i`` (all parameters, as the paper's weighted objective: the shared
    ones by ``wᵀG`` from the per-task gradients, the others by the head rule); every
    step the per-task gradients of the shared parameters (or of the representation with
    ``rep_grad``) update the excess-risk estimates (:func:`accumulate_excess_risks`), and from
    the second step on ``w`` takes an exponentiated-gradient step (:func:`excess_mtl_weights`)
    on the estimates divided by those of the first step (the paper's scale normalisation).
    Returns ``w``.

    Choices: ``w`` starts uniform on the simplex (the paper; LibMTL keeps ``Σ w = T``, i.e.
    LibMTL's gradients are ``T`` times ours); the first step sets the baseline and keeps
    ``w`` (LibMTL / the authors' code). ``Σ g²``, the baseline, ``w`` and the step count are
    buffers (saved with the ``state_dict``)."""

    needs_full_matrix = "its sums of squared gradients Σ g² are a second [T, D] matrix, kept between steps"
    hyperparameters = (
        Hyperparameter("robust_step_size", 1e-2, "ExcessMTL: step size η of the exponentiated task-weight update",
                       minimum=0.0, exclusive_minimum=True),
    )

    def init_param(self) -> None:
        self.register_resizable_buffer("excess_squared_grad_sum")
        self.register_buffer("excess_baseline", torch.zeros(self.task_num, dtype=torch.float64, device=self.device))
        self.register_buffer("excess_weights", torch.full((self.task_num,), 1.0 / self.task_num, dtype=torch.float64, device=self.device))
        self.register_buffer("excess_step", torch.zeros((), dtype=torch.long, device=self.device))

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        robust_step_size = self.method_options(kwargs)["robust_step_size"]
        grads = self._get_grads(losses, mode="backward")
        matrix = grads[1] if self.rep_grad else grads
        self._raise_if_nonfinite(losses, matrix)
        with torch.no_grad():
            matrix = matrix.detach()
            if self.excess_squared_grad_sum.shape != matrix.shape:
                self.excess_squared_grad_sum = torch.zeros_like(matrix)
            # the scratch rows are not state (no buffer): kept between steps to reuse their pages
            self._excess_scratch = row_scratch(matrix, getattr(self, "_excess_scratch", None))
            excess = accumulate_excess_risks(matrix, self.excess_squared_grad_sum, self._excess_scratch).to(self.excess_weights.dtype)
            if int(self.excess_step) == 0:
                self.excess_baseline.copy_(excess)
            else:
                weights = excess_mtl_weights(self.excess_weights, excess, self.excess_baseline, robust_step_size)
                if not bool(torch.isfinite(weights).all()):
                    raise FloatingPointError(
                        f"ExcessMTL's task weights became non-finite ({weights.tolist()}): a first-step excess-risk "
                        f"estimate is 0 ({self.excess_baseline.tolist()}) or robust_step_size is too large")
                self.excess_weights.copy_(weights)
            self.excess_step += 1
        # ∇_shared Σ_i w_i L_i = wᵀG from the gradients at hand (no second backward pass); the
        # head rule gives the task-specific parameters ∇ Σ_i w_i L_i
        if self.rep_grad:
            self._backward_new_grads(self.excess_weights, per_grads=grads[0])
        else:
            self._backward_new_grads(self.excess_weights, grads=matrix)
        return self.excess_weights.detach().cpu().numpy().copy()  # not a view of the buffer
