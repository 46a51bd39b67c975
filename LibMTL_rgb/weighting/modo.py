"""MoDo: multi-objective gradient with double sampling (Chen, Fernando, Ying & Chen,
"Three-Way Trade-Off in Multi-Objective Learning: Optimization, Generalization and
Conflict-Avoidance", NeurIPS 2023)."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.multi_sample import MultiSampleWeighting
from LibMTL_rgb.weighting.simplex import project_to_simplex


def modo_lambda_step(lambd: Tensor, grads_1: Tensor, grads_2: Tensor, gamma: float, rho: float) -> Tensor:
    r"""``λ ← Π_Δ(λ − γ (G_1 G_2ᵀ λ + ρ λ))`` with ``G_1, G_2`` the ``[T, D]`` gradients of two
    independent batches (the double-sampled, unbiased estimate of ``∇_λ ½‖Gᵀλ‖²``) and
    ``Π_Δ`` the Euclidean projection onto the simplex."""
    products = (grads_1 @ (grads_2.T @ lambd.to(grads_2.dtype))).to(lambd.dtype)
    return project_to_simplex(lambd - gamma * (products + rho * lambd))


@WEIGHTINGS.register
class MoDo(MultiSampleWeighting):
    r"""MoDo: per step three batches; the first two update ``λ`` (:func:`modo_lambda_step`),
    the shared parameters move along ``G_3ᵀ λ`` with the new ``λ`` (returned), the
    task-specific ones along the mean of the three batches' gradients.

    This is the practical variant of the authors' code and LibMTL (three independent batches
    per step, ρ-regularised ``λ`` step); the Trainer draws the batches
    (``loss_samples_per_step``). ``λ`` (starting uniform) is a buffer, saved with the
    ``state_dict``. Shared-parameter gradients only."""

    task_specific_batch_scale = 1.0 / 3.0  # the mean of the three batches (LibMTL divides the decoders' sum by 3)

    hyperparameters = (
        Hyperparameter("MoDo_gamma", 1e-3, "MoDo: step size γ of the task weights λ", minimum=0.0, exclusive_minimum=True),
        Hyperparameter("MoDo_rho", 0.1, "MoDo: ℓ2 regularisation ρ of the λ update", minimum=0.0),
    )

    def init_param(self) -> None:
        super().init_param()
        self.register_buffer("modo_lambda", torch.full((self.task_num,), 1.0 / self.task_num, dtype=torch.float64, device=self.device))

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        options = self.method_options(kwargs)
        MoDo_gamma, MoDo_rho = options["MoDo_gamma"], options["MoDo_rho"]
        first, second, update = self._sample_grads(losses)
        with torch.no_grad():
            lambd = modo_lambda_step(self.modo_lambda, first, second, MoDo_gamma, MoDo_rho)  # λ in float64
            self.modo_lambda.copy_(lambd)
        self._reset_grad(lambd.to(update.dtype) @ update)
        return lambd.cpu().numpy()
