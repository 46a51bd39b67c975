"""FORUM: a first-order multi-gradient method for multi-objective bilevel optimisation
(Ye, Lin, Cao, Zhang & Tsang, "A First-Order Multi-Gradient Algorithm for Multi-Objective
Bi-Level Optimization", ECAI 2024), as its authors implement it in LibMTL."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.bilevel import (INNER_LR, INNER_STEP, Batch, BilevelLoop, BilevelWeighting, flat,
                                          grads_or_zeros, unflat)
from LibMTL_rgb.weighting.simplex_qp import forum_dual_weights

#: ``∇F_i / (||∇F_i|| + NORM_EPS)`` (the authors' FORUM code; LibMTL divides by the norm alone).
NORM_EPS = 1e-8
#: ``δ`` added to ``||∇q||²`` (the authors' 1e-8).
Q_EPS = 1e-8
#: The inner steps stop early when the lower-level loss exceeds this (the authors' guard
#: against a too large ``inner_lr``/``inner_step``).
DIVERGED_LOSS = 1e5
#: ``λ`` follows ``λ ← λ + (epoch + 1)^(−EMA_POWER) (w − λ)`` (the authors' 3/4).
EMA_POWER = 0.75


@dataclass
class ForumGradients:
    """The vectors of one FORUM step over ``z = (α, ω)`` (length T + D)."""

    q: Tensor  #: ``∇q(z) = ∇f(α, ω) − (∇_α f(α, ω_K), 0)``, the constraint's gradient.
    meta: Tensor  #: ``[T, T + D]``: ``(0, ∇_ω F_i / (||∇_ω F_i|| + 1e-8))``, the normalised objectives.


def forum_gradients(loop: BilevelLoop, train_batch: Batch, meta_batch: Batch, logits: Tensor,
                    inner_lr: float, inner_step: int) -> ForumGradients:
    r"""FORUM's first-order gradients (no Hessian): the value-function constraint
    ``q(α, ω) = f(α, ω) − f(α, ω_K)`` with ``f = Σ softmax(α)_i L_i^train`` and ``ω_K`` from
    ``K = inner_step`` SGD steps (``inner_lr``) on ``f(α, ·)`` started at ω and treated as a
    constant, and the T meta-batch losses ``F_i(ω)``. Every evaluation of ``f`` replays the
    same random draws (dropout, LTB's branch samples), so ``q`` compares one function."""
    params = loop.parameters()
    seed = loop.new_seed()
    alpha = logits.detach().clone().requires_grad_(True)
    losses = loop.losses(train_batch, record=True, seed=seed)  # the training metrics, as the authors record them
    grad_f = flat(grads_or_zeros(torch.softmax(alpha, 0).to(losses.dtype) @ losses, [alpha] + params), [alpha] + params)

    weights = torch.softmax(logits.detach(), 0)
    omega = [p.detach().clone() for p in params]
    for _ in range(inner_step):
        omega = [w.requires_grad_(True) for w in omega]
        inner_loss = weights.to(losses.dtype) @ loop.losses(train_batch, omega, seed=seed)
        if float(inner_loss.detach()) > DIVERGED_LOSS:
            break
        with torch.no_grad():
            omega = [w - inner_lr * g for w, g in zip(omega, grads_or_zeros(inner_loss, omega))]
    with torch.no_grad():
        inner_losses = loop.losses(train_batch, [w.detach() for w in omega], seed=seed)
    grad_f_inner_alpha = grads_or_zeros(torch.softmax(alpha, 0).to(inner_losses.dtype) @ inner_losses, [alpha])[0]
    grad_q = grad_f.clone()
    grad_q[: len(alpha)] -= grad_f_inner_alpha.to(grad_q.dtype)

    meta_losses = loop.losses(meta_batch)
    rows = []
    for i in range(len(meta_losses)):
        g = flat(grads_or_zeros(meta_losses[i], params, retain_graph=i + 1 < len(meta_losses)), params)
        rows.append(torch.cat([torch.zeros_like(alpha, dtype=g.dtype), g / (g.norm() + NORM_EPS)]))
    return ForumGradients(q=grad_q.detach(), meta=torch.stack(rows).detach())


def forum_lambda_and_pi(grads: ForumGradients, phi: float) -> tuple[np.ndarray, np.ndarray]:
    """``(w, π)``: the solution ``w = (λ, ν)`` of the direction problem (the authors' problem (14),
    :func:`~LibMTL_rgb.weighting.simplex_qp.forum_dual_weights`) with
    ``π_i = φ − <∇q, ∇F_i> / (||∇q||² + δ)`` and linear term ``φ (||∇q||² + δ)``."""
    q = grads.q.double()
    meta = grads.meta.double()
    q_sq = float(q @ q) + Q_EPS
    pi = (phi - (meta @ q) / q_sq).cpu().numpy()
    rows = torch.cat([meta, q.unsqueeze(0)])
    gram = (rows @ rows.T).cpu().numpy()
    return forum_dual_weights(gram, pi, phi * q_sq), pi


def forum_direction(grads: ForumGradients, lam: np.ndarray, pi: np.ndarray) -> Tensor:
    """``d = Σ_i λ_i ∇F_i + ν ∇q`` with ``ν = max(Σ_i λ_i π_i, 0)`` (the update of ``z``, the
    authors' problem (12))."""
    nu = max(float(np.dot(lam, pi)), 0.0)
    lam_t = torch.as_tensor(lam, dtype=grads.meta.dtype, device=grads.meta.device)
    return lam_t @ grads.meta + nu * grads.q


@WEIGHTINGS.register
class FORUM(BilevelWeighting):
    r"""Upper level: the T meta-batch losses ``F_i(ω)``; lower level: ``f(α, ω) =
    Σ softmax(α)_i L_i^train(ω)`` (task-weight logits ``α``, starting at 0). FORUM rewrites
    the bilevel problem as ``min_z F(z)`` s.t. ``q(z) ≤ 0`` over ``z = (α, ω)`` and moves ``z``
    along ``d = Σ λ_i ∇F_i + ν ∇q`` from first-order gradients only (:func:`forum_gradients`):

    * ``(λ, ν)`` solve the direction problem with ``φ = FORUM_phi``
      (:func:`forum_lambda_and_pi`), ``λ`` is averaged across steps with rate
      ``(epoch + 1)^(−3/4)`` and ``ν = max(Σ λ_i π_i, 0)`` (:func:`forum_direction`);
    * ``α`` takes an Adam step (``outer_lr``) along ``d_α``; ω takes a step of the model's
      optimizer along ``d_ω``.

    Follows the authors' code (github.com/Baijiong-Lin/FORUM ``train_FORUM``, the same as LibMTL's
    ``bacth_forward_FORUM``), including its direction
    problem as written there, the per-task normalisation of ``∇F_i``, the epoch-wise rate
    of the λ average and the early stop of diverging inner steps; its cvxpy solve is replaced
    by SLSQP to tolerance 1e-14. Returns ``softmax(α)``, the weights of the training losses.
    """

    hyperparameters = (
        INNER_LR,
        INNER_STEP,
        Hyperparameter("FORUM_phi", 0.1, "FORUM: φ, the required decrease of the constraint q (fraction of ||∇q||²)",
                       minimum=0.0, exclusive_minimum=True),
    )

    def init_param(self) -> None:
        super().init_param()
        self.register_buffer("forum_logits", torch.zeros(self.task_num, device=self.device))
        self.register_buffer("forum_lambda", torch.zeros(self.task_num, dtype=torch.float64, device=self.device))
        self._register_adam("forum", (self.task_num,))

    def task_weights(self) -> Tensor:
        return torch.softmax(self.forum_logits, dim=0)

    def bilevel_step(self, loop: BilevelLoop, train_batch: Batch, meta_batch: Batch, outer_lr: float = 1e-3,
                     inner_lr: float = 0.1, inner_step: int = 5, FORUM_phi: float = 0.1, **kwargs) -> np.ndarray:
        weights = self.task_weights().detach().cpu().numpy()
        grads = forum_gradients(loop, train_batch, meta_batch, self.forum_logits, inner_lr, inner_step)
        solution, pi = forum_lambda_and_pi(grads, FORUM_phi)
        rate = (getattr(self, "epoch", 0) + 1) ** -EMA_POWER
        lam = self.forum_lambda.cpu().numpy()
        lam = lam + rate * (solution[:-1] - lam)
        self.forum_lambda.copy_(torch.as_tensor(lam))
        direction = forum_direction(grads, lam, pi)

        task_num = self.task_num
        self._adam_update("forum", self.forum_logits, direction[:task_num], outer_lr)
        params = loop.parameters()
        loop.optimizer.zero_grad(set_to_none=False)
        for p, g in zip(params, unflat(direction[task_num:], params)):
            p.grad = g.to(p.dtype).clone()
        loop.optimizer.step()
        return weights
