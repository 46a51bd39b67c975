"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018, Eq. 1-2 and Algorithm 1)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting

#: Floor of GradNorm's task weights (before renormalisation to Σ w = T): keeps them positive.
MIN_WEIGHT = 1e-6


def gradnorm_loss(weights: Tensor, grad_norms: Tensor, loss_ratios: Tensor, alpha: float) -> Tensor:
    r"""Eq. 2: ``L_grad = Σ_i | w_i ‖g_i‖ − Ḡ · r_i^α |`` with ``Ḡ = mean_i w_i ‖g_i‖`` and
    ``r_i = L̃_i / mean_j L̃_j`` (``L̃_i = L_i(t) / L_i(0)``); the target ``Ḡ r_i^α`` is a
    constant, so only ``w`` receives gradient."""
    norms = weights * grad_norms
    relative = loss_ratios / loss_ratios.mean()
    target = (norms.mean() * relative.pow(alpha)).detach()
    return (norms - target).abs().sum()


@WEIGHTINGS.register
class GradNorm(AbsWeighting):
    r"""Learnable task weights ``w`` (parameter ``gradnorm_weights``, initialised to 1) that
    scale the shared gradient ``Σ_i w_i g_i``; every step ``w.grad`` receives
    ``∇_w L_grad`` (:func:`gradnorm_loss`) and the Trainer's optimizer updates ``w`` with the
    model. At the start of every step (i.e. after the previous update) ``w`` is kept valid as
    the paper requires: positive (clipped below at ``MIN_WEIGHT``, so a step that overshoots
    zero cannot flip a task's gradient) and renormalised to ``Σ_i w_i = T`` (Algorithm 1).

    Choices: ``g_i`` are the gradients of all shared parameters (or, with ``rep_grad``, of
    the representation — the paper uses the last shared layer); ``L_i(0)`` are the losses of
    the first step (buffer ``gradnorm_initial_losses``, kept in the ``state_dict``; LibMTL
    uses the first epoch's mean and trains with EW during that epoch). Returns ``w``."""

    head_rule = True
    needs_full_matrix = "the gradient norms ‖g_i‖ and the update wᵀG are taken from it (no Gramian path yet)"
    hyperparameters = (Hyperparameter("alpha", 1.5, "GradNorm: strength α of the restoring force toward equal training rates", minimum=0.0),)

    def init_param(self) -> None:
        self.gradnorm_weights = nn.Parameter(torch.ones(self.task_num, device=self.device))
        self.register_buffer("gradnorm_initial_losses", torch.full((self.task_num,), math.nan, device=self.device))

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        alpha = self.method_options(kwargs)["alpha"]
        self._renormalize_weights()
        grads = self._get_grads(losses, mode="backward")
        per_grads, matrix = grads if self.rep_grad else (None, grads)
        self._raise_if_nonfinite(losses, matrix)
        current = losses.detach().to(self.gradnorm_initial_losses.dtype)
        if bool(torch.isnan(self.gradnorm_initial_losses).any()):
            self.gradnorm_initial_losses.copy_(current)
        weights = self.gradnorm_weights
        grad_norms = matrix.norm(dim=1).to(weights.dtype)
        ratios = current / self.gradnorm_initial_losses
        gradnorm_loss(weights, grad_norms, ratios, alpha).backward(inputs=[weights])
        task_weights = weights.detach().to(matrix.dtype)
        self._backward_new_grads(task_weights, per_grads=per_grads, grads=matrix)
        return task_weights.cpu().numpy()

    def _renormalize_weights(self) -> None:
        """``w ← T · max(w, MIN_WEIGHT) / Σ_j max(w_j, MIN_WEIGHT)``: positive, summing to T."""
        with torch.no_grad():
            if not bool(torch.isfinite(self.gradnorm_weights).all()):
                raise FloatingPointError(f"GradNorm's task weights are not finite: {self.gradnorm_weights.tolist()}")
            self.gradnorm_weights.clamp_(min=MIN_WEIGHT)
            self.gradnorm_weights.mul_(self.task_num / self.gradnorm_weights.sum())
