"""MOML: Multi-Objective Meta Learning (Ye, Lin, Yue, Guo, Xiao & Zhang, NeurIPS 2021),
applied to multi-task learning as its authors do in LibMTL."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS
from LibMTL_rgb.weighting.bilevel import INNER_LR, INNER_STEP, Batch, BilevelLoop, BilevelWeighting, grads_or_zeros
from LibMTL_rgb.weighting.min_norm import min_norm_weights

#: Lower bound of a hyper-gradient's norm before its l2 normalisation.
NORM_FLOOR = 1e-12


def unrolled_hypergradients(loop: BilevelLoop, train_batch: Batch, meta_batch: Batch, logits: Tensor,
                            inner_lr: float, inner_step: int) -> Tensor:
    r"""``[T, T]``: row ``i`` is ``∇_α F_i(ω_K(α))``, the hyper-gradient of task ``i``'s meta
    loss, where ``ω_{k+1} = ω_k − μ ∇_ω f(ω_k, α)`` (``K = inner_step`` steps from the model's
    ω, step ``μ = inner_lr``) and ``f(ω, α) = Σ_i softmax(α)_i L_i^train(ω)`` is the
    lower-level objective. Reverse-mode differentiation through the unrolled steps (MOML's
    Algorithm 1, exact; for K = 1 it equals LibMTL's closed form
    ``−μ ∇F_i(ω_1)ᵀ [∇L_j(ω)]_j J_softmax(α)``)."""
    alpha = logits.detach().clone().requires_grad_(True)
    weights = torch.softmax(alpha, dim=0)
    omega = [p.detach().requires_grad_(True) for p in loop.parameters()]
    seed = loop.new_seed()  # every inner step sees the same draw of f (dropout, LTB's branches)
    for _ in range(inner_step):
        losses = loop.losses(train_batch, omega, seed=seed)
        grads = grads_or_zeros(weights.to(losses.dtype) @ losses, omega, create_graph=True)
        omega = [w - inner_lr * g for w, g in zip(omega, grads)]
    meta_losses = loop.losses(meta_batch, omega)
    rows = [grads_or_zeros(meta_losses[i], [alpha], retain_graph=i + 1 < len(meta_losses))[0]
            for i in range(len(meta_losses))]
    return torch.stack(rows).detach()


def moml_direction(hypergradients: Tensor) -> Tensor:
    """The upper-level update direction: each hyper-gradient scaled to unit l2 norm (the
    authors' ``_gradient_normalizers(..., 'l2')``), then their min-norm convex combination
    (MGDA's exact solver)."""
    norms = hypergradients.norm(dim=1, keepdim=True).clamp_min(NORM_FLOOR)
    normalised = hypergradients / norms
    gram = normalised.double() @ normalised.double().T
    gamma = min_norm_weights(gram).to(normalised.dtype)
    return gamma @ normalised


@WEIGHTINGS.register
class MOML(BilevelWeighting):
    r"""The task weights are ``softmax(α)``; ``α`` (starting at 0: equal weights) is the
    upper-level variable, the model ω the lower-level one. Each step:

    1. ``K = inner_step`` SGD steps (``inner_lr``) of ω on ``Σ softmax(α)_i L_i`` (training
       batch), differentiably (:func:`unrolled_hypergradients`);
    2. one hyper-gradient per task from its loss on the meta batch after those steps;
    3. ``α`` moves by Adam (``outer_lr``) along the min-norm combination of the normalised
       hyper-gradients (:func:`moml_direction`: the multi-gradient step of MOML's upper level);
    4. the model's optimizer trains ω on ``Σ softmax(α)_i L_i`` (training batch).

    Choices: the upper level of a multi-task problem is the T meta-batch losses; the inner
    steps start from the current model (warm start). LibMTL supports only ``inner_step = 1``
    (its closed form) and does step 4 on a third batch; here any ``inner_step`` is exact
    (second-order, memory grows with it), and step 4 reuses the training batch.
    """

    hyperparameters = (INNER_LR, INNER_STEP)

    def init_param(self) -> None:
        super().init_param()
        self.register_buffer("moml_logits", torch.zeros(self.task_num, device=self.device))
        self._register_adam("moml", (self.task_num,))

    def task_weights(self) -> Tensor:
        return torch.softmax(self.moml_logits, dim=0)

    def bilevel_step(self, loop: BilevelLoop, train_batch: Batch, meta_batch: Batch, outer_lr: float = 1e-3,
                     inner_lr: float = 0.1, inner_step: int = 5, **kwargs) -> np.ndarray:
        hypergradients = unrolled_hypergradients(loop, train_batch, meta_batch, self.moml_logits, inner_lr, inner_step)
        self._adam_update("moml", self.moml_logits, moml_direction(hypergradients), outer_lr)

        weights = self.task_weights()
        loop.optimizer.zero_grad(set_to_none=False)
        losses = loop.losses(train_batch, record=True)
        (weights.to(losses.dtype) @ losses).backward()
        loop.optimizer.step()
        return weights.detach().cpu().numpy()
