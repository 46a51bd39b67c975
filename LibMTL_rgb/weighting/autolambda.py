"""Auto-Lambda (Liu, Liang, Davison & Johns, "Auto-Lambda: Disentangling Dynamic Task
Relationships", TMLR 2022), as its authors' code (github.com/lorenmt/auto-lambda) runs it."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.bilevel import Batch, BilevelLoop, BilevelWeighting, grads_or_zeros

#: The finite-difference step is ``FD_SCALE / ||∇_θ' L_val||`` (the authors' 0.01).
FD_SCALE = 0.01


def virtual_step(loop: BilevelLoop, params: list[Tensor], grads: list[Tensor], lr: float) -> list[Tensor]:
    """``θ' = θ − α (m + g + wd θ)``: one step of the model's optimizer as SGD sees it, with the
    momentum term ``m`` of its buffer and its weight decay (the authors' ``virtual_step``).
    For optimizers without ``momentum`` (Adam...) ``m = 0``."""
    group = loop.optimizer.param_groups[0]
    weight_decay = float(group.get("weight_decay", 0.0) or 0.0)
    stepped = []
    with torch.no_grad():
        for p, g in zip(params, grads):
            momentum = 0.0
            if "momentum" in group:
                buffer = loop.optimizer.state.get(p, {}).get("momentum_buffer")
                momentum = 0.0 if buffer is None else group["momentum"] * buffer
            stepped.append((p - lr * (momentum + g + weight_decay * p)).detach().requires_grad_(True))
    return stepped


def meta_gradient(loop: BilevelLoop, train_batch: Batch, meta_batch: Batch, weights: Tensor, lr: float) -> Tensor:
    """``∂/∂λ Σ_i L_i^meta(θ'(λ))`` with ``θ'(λ) = θ − α ∇_θ Σ_i λ_i L_i^train(θ)`` (Eq. 3 with
    one virtual step): ``−α ∇²_{λ,θ} L^train(θ) · d`` with ``d = ∇_θ' L^meta(θ')``, the
    mixed second derivative by central finite differences as the authors compute it:
    ``[L_i^train(θ + εd) − L_i^train(θ − εd)] / 2ε`` with ``ε = 0.01 / ||d||``. The three
    training-batch evaluations replay the same random draws (dropout, LTB's branch samples),
    so the difference measures the parameters' effect only (the authors' code does not)."""
    params = loop.parameters()
    seed = loop.new_seed()
    train_losses = loop.losses(train_batch, seed=seed)
    grads = grads_or_zeros(weights.to(train_losses.dtype) @ train_losses, params)
    stepped = virtual_step(loop, params, grads, lr)
    meta_loss = loop.losses(meta_batch, stepped).sum()  # every task is a primary task (MTL)
    direction = grads_or_zeros(meta_loss, stepped)
    norm = torch.sqrt(sum((d.double() ** 2).sum() for d in direction))
    if not bool(norm > 0) or not math.isfinite(float(norm)):
        return torch.zeros_like(weights)
    eps = FD_SCALE / norm
    with torch.no_grad():
        plus = loop.losses(train_batch, [p + eps * d for p, d in zip(params, direction)], seed=seed)
        minus = loop.losses(train_batch, [p - eps * d for p, d in zip(params, direction)], seed=seed)
    return (-lr * (plus - minus) / (2 * eps)).to(weights.dtype)


@WEIGHTINGS.register
class AutoLambda(BilevelWeighting):
    r"""Task weights ``λ`` learned by meta-gradient: each step makes a virtual SGD step of the
    model on ``Σ λ_i L_i`` (training batch), measures the summed task losses of the virtual
    model on a meta batch, moves ``λ`` by Adam (lr ``outer_lr``) along its gradient w.r.t.
    ``λ`` (:func:`meta_gradient`), then trains the model with ``Σ λ_i L_i`` on the same
    training batch (the model's optimizer).

    Choices (the authors' code): ``λ`` are unconstrained raw weights initialised to
    ``AutoLambda_init`` (0.1); the virtual step uses the model optimizer's current learning
    rate, its SGD momentum buffer and weight decay; the meta-gradient's Hessian-vector product
    is a central finite difference; in multi-task learning every task is primary (meta loss =
    sum of all task losses). LibMTL's variant differs: softmax-normalised weights starting
    at 1/T, a plain SGD virtual step, and the model update on a third batch.
    ``inner_step`` must be 1 (one virtual step), as in LibMTL.
    """

    hyperparameters = (
        Hyperparameter("AutoLambda_init", 0.1, "AutoLambda: initial value of every task weight λ (authors' autol_init)",
                       minimum=0.0, exclusive_minimum=True),
    )

    def init_param(self) -> None:
        super().init_param()
        self.register_buffer("autol_weights", torch.full((self.task_num,), math.nan, device=self.device))
        self._register_adam("autol", (self.task_num,))

    def task_weights(self) -> Tensor:
        if bool(torch.isnan(self.autol_weights).any()):
            return torch.full_like(self.autol_weights, 0.1)
        return self.autol_weights

    def bilevel_step(self, loop: BilevelLoop, train_batch: Batch, meta_batch: Batch, outer_lr: float = 1e-3,
                     AutoLambda_init: float = 0.1, inner_step: int = 1, **kwargs) -> np.ndarray:
        if inner_step != 1:
            raise ValueError(f"AutoLambda makes one virtual step per update: inner_step must be 1, got {inner_step}")
        if bool(torch.isnan(self.autol_weights).any()):
            self.autol_weights.fill_(AutoLambda_init)
        lr = loop.learning_rate()
        grad = meta_gradient(loop, train_batch, meta_batch, self.autol_weights, lr)
        self._adam_update("autol", self.autol_weights, grad, outer_lr)

        loop.optimizer.zero_grad(set_to_none=False)
        losses = loop.losses(train_batch, record=True)
        (self.autol_weights.to(losses.dtype) @ losses).backward()
        loop.optimizer.step()
        return self.autol_weights.detach().cpu().numpy().copy()
