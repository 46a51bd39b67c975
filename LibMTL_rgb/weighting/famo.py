"""FAMO: Fast Adaptive Multitask Optimization (Liu, Feng, Stone & Liu, NeurIPS 2023,
Algorithm 1)."""
from __future__ import annotations

import math
import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.loss_weighting import LossWeighting, check_positive_losses

#: ε inside ``log(L_i − l_i* + ε)``; the lower bounds ``l_i*`` are 0 (as in FAMO's code).
LOG_EPS = 1e-8
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def famo_logit_gradient(logits: Tensor, previous_losses: Tensor, current_losses: Tensor) -> Tensor:
    r"""Gradient of FAMO's logit update: ``J_softmax(ξ)ᵀ δ = z ⊙ (δ − zᵀδ)``, where
    ``δ_i = log(L_i(t−1) + ε) − log(L_i(t) + ε)`` is the log-loss decrease and ``z = softmax(ξ)``."""
    delta = torch.log(previous_losses + LOG_EPS) - torch.log(current_losses + LOG_EPS)
    z = torch.softmax(logits, dim=0)
    return z * (delta - (z * delta).sum())


@WEIGHTINGS.register
class FAMO(LossWeighting):
    r"""Minimise ``Σ_i (z_i / c) log(L_i + ε)`` with ``z = softmax(ξ)`` and
    ``c = Σ_j z_j / (L_j + ε)`` (a constant), i.e. the shared gradient is
    ``Σ_i z_i g_i / (c (L_i + ε))`` with weights summing to 1 (returned).

    The logits ``ξ`` follow Adam (lr ``FAMO_w_lr``, L2 weight decay ``FAMO_w_gamma``,
    β = (0.9, 0.999)) along :func:`famo_logit_gradient`. The paper evaluates the losses after
    the model update on the same batch; a Trainer that does so calls :meth:`update_w` with
    them (LibMTL's name). Otherwise the next ``backward`` uses its own losses (the next
    batch) for the pending update. ``ξ``, the Adam moments and the pending losses are
    buffers, so they are saved with the ``state_dict``. Needs non-negative losses.
    """

    hyperparameters = (
        Hyperparameter("FAMO_w_lr", 0.025, "FAMO: learning rate of the task-weight logits", minimum=0.0, exclusive_minimum=True),
        Hyperparameter("FAMO_w_gamma", 1e-3, "FAMO: weight decay γ of the task-weight logits", minimum=0.0),
    )

    def init_param(self) -> None:
        shape = (self.task_num,)
        self.register_buffer("famo_logits", torch.zeros(shape, device=self.device))
        self.register_buffer("famo_adam_m", torch.zeros(shape, device=self.device))
        self.register_buffer("famo_adam_v", torch.zeros(shape, device=self.device))
        self.register_buffer("famo_adam_step", torch.zeros((), dtype=torch.long))
        self.register_buffer("famo_prev_losses", torch.full(shape, math.nan, device=self.device))
        defaults = self.method_options({})
        self._famo_options = (defaults["FAMO_w_lr"], defaults["FAMO_w_gamma"])

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        check_positive_losses(losses, "FAMO", allow_zero=True)
        options = self.method_options(kwargs)
        self._famo_options = (options["FAMO_w_lr"], options["FAMO_w_gamma"])
        current = losses.detach()
        self._update_logits(current)
        z = torch.softmax(self.famo_logits, dim=0).to(losses.dtype)
        shifted = losses + LOG_EPS
        c = (z / shifted.detach()).sum()
        self._backward_objective((z / c * torch.log(shifted)).sum())
        self.famo_prev_losses.copy_(current)
        return (z / (c * shifted.detach())).cpu().numpy()

    def update_w(self, curr_losses: Tensor) -> None:
        """Update the logits with the losses measured after the model step (the paper's way);
        the next ``backward`` then skips its own update."""
        self._update_logits(curr_losses.detach())
        self.famo_prev_losses.fill_(math.nan)

    def _update_logits(self, current: Tensor) -> None:
        previous = self.famo_prev_losses
        if bool(torch.isnan(previous).any()):
            return
        lr, gamma = self._famo_options
        gradient = famo_logit_gradient(self.famo_logits, previous, current.to(previous.dtype))
        adam_step(self.famo_logits, gradient, self.famo_adam_m, self.famo_adam_v, self.famo_adam_step, lr, gamma)


def adam_step(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: Tensor,
              lr: float, weight_decay: float, betas: tuple[float, float] = ADAM_BETAS,
              eps: float = ADAM_EPS) -> None:
    """One in-place step of Adam (Kingma & Ba, 2015) with L2 weight decay, as
    ``torch.optim.Adam`` computes it, on tensors that live in a module's buffers."""
    beta1, beta2 = betas
    step.add_(1)
    t = int(step)
    grad = grad + weight_decay * param
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**t))
