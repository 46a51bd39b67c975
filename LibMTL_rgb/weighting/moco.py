"""MoCo: multi-objective gradient correction (Fernando et al.,
"Mitigating Gradient Bias in Multi-objective Learning: A Provably Convergent Approach",
ICLR 2023, Algorithm 1)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting
from LibMTL_rgb.weighting.simplex import project_to_simplex
from LibMTL_rgb.weighting.state_buffers import ResizableBuffers

#: How λ leaves the simplex step: the paper's Euclidean projection, or LibMTL's softmax.
MOCO_LAMBDA_UPDATES = ("projection", "softmax")
#: Gradients fed to the tracker: as computed (paper), or ``L_i g_i / ‖g_i‖`` (LibMTL).
MOCO_GRAD_SCALINGS = ("none", "loss")
#: ε in LibMTL's ``g_i / (‖g_i‖ + ε)``.
NORM_EPS = 1e-8


def moco_update(
    tracker: Tensor, lambd: Tensor, grads: Tensor, step: int, beta: float, beta_sigma: float,
    gamma: float, gamma_sigma: float, rho: float, lambda_update: str = "projection", in_place: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""One step of MoCo's Algorithm 1 on ``[T, D]`` gradients ``H`` (step ``t ≥ 1``):

    * tracking: ``Y ← Y − β_t (Y − H)`` with ``β_t = β / t^{σ_β}`` (the projection of each
      row on a ball of the Lipschitz radius is left out, as in the authors' code);
    * weights: ``λ ← Π_Δ(λ − γ_t (Y Yᵀ + ρ I) λ)`` with ``γ_t = γ / t^{σ_γ}``; ``Π_Δ`` is the
      Euclidean projection onto the simplex, or ``softmax`` with ``lambda_update='softmax'``.

    Returns the new ``(Y, λ)``; the update direction is ``Yᵀ λ``. ``in_place``: ``Y`` is
    updated in ``tracker`` itself and ``grads`` is overwritten (the same numbers, no [T, D]
    temporaries)."""
    rate = beta / step**beta_sigma
    if in_place:
        tracker = tracker.sub_(torch.sub(tracker, grads, out=grads).mul_(rate))
    else:
        tracker = tracker - rate * (tracker - grads)
    regularised = tracker @ tracker.T + rho * torch.eye(len(lambd), dtype=tracker.dtype, device=tracker.device)
    moved = lambd - (gamma / step**gamma_sigma) * (regularised @ lambd)
    if lambda_update == "projection":
        return tracker, project_to_simplex(moved)
    if lambda_update == "softmax":
        return tracker, F.softmax(moved, dim=0)
    raise ValueError(f"MoCo_lambda_update must be one of {MOCO_LAMBDA_UPDATES}, got {lambda_update!r}")


def loss_scaled_unit_grads(grads: Tensor, losses: Tensor) -> Tensor:
    """LibMTL's preprocessing for MoCo: each row ``g_i`` becomes ``L_i g_i / (‖g_i‖ + 1e-8)``."""
    return grads / (grads.norm(dim=1, keepdim=True) + NORM_EPS) * losses.unsqueeze(1)


@WEIGHTINGS.register
class MoCo(ResizableBuffers, AbsWeighting):
    r"""MoCo (:func:`moco_update`): the shared parameters move along ``Yᵀ λ``, where ``Y``
    tracks the per-task gradients (a moving average that removes the stochastic bias of
    MGDA-type weights) and ``λ`` takes one projected-gradient step on ``½ λᵀ(YYᵀ + ρI)λ``
    per iteration. Returns ``λ`` (weights on the tracked gradients).

    Defaults follow the paper's algorithm; ``--MoCo_lambda_update softmax --MoCo_grad_scaling
    loss`` give LibMTL's variant (from the authors' code). ``Y`` ([T, D]), ``λ`` and the step
    count are buffers (saved with the ``state_dict``). Shared-parameter gradients only."""

    supports_rep_grad = False
    head_rule = True
    #: λ weights the tracked gradients y_i, not the current ones: the heads get Σ_i ∇L_i (LibMTL)
    heads_take_returned_weights = False
    needs_full_matrix = "its tracked gradients Y are a second [T, D] matrix, kept between steps"
    hyperparameters = (
        Hyperparameter("MoCo_beta", 0.5, "MoCo: step size β of the gradient tracker Y", minimum=0.0, maximum=1.0),
        Hyperparameter("MoCo_beta_sigma", 0.5, "MoCo: decay exponent σ_β (β_t = β / t^σ_β)", minimum=0.0),
        Hyperparameter("MoCo_gamma", 0.1, "MoCo: step size γ of the task weights λ", minimum=0.0, exclusive_minimum=True),
        Hyperparameter("MoCo_gamma_sigma", 0.5, "MoCo: decay exponent σ_γ (γ_t = γ / t^σ_γ)", minimum=0.0),
        Hyperparameter("MoCo_rho", 0.0, "MoCo: ℓ2 regularisation ρ of the λ update", minimum=0.0),
        Hyperparameter("MoCo_lambda_update", "projection",
                       "MoCo: keep λ on the simplex by Euclidean projection (paper) or softmax (LibMTL)", choices=MOCO_LAMBDA_UPDATES),
        Hyperparameter("MoCo_grad_scaling", "none",
                       "MoCo: track the gradients as computed (paper) or L_i g_i/‖g_i‖ (LibMTL)", choices=MOCO_GRAD_SCALINGS),
    )

    def init_param(self) -> None:
        self._check_rep_grad_support()
        self.register_resizable_buffer("moco_tracker")
        self.register_buffer("moco_lambda", torch.full((self.task_num,), 1.0 / self.task_num, dtype=torch.float64, device=self.device))
        self.register_buffer("moco_step", torch.zeros((), dtype=torch.long, device=self.device))

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        options = self.method_options(kwargs)
        MoCo_beta, MoCo_beta_sigma = options["MoCo_beta"], options["MoCo_beta_sigma"]
        MoCo_gamma, MoCo_gamma_sigma, MoCo_rho = options["MoCo_gamma"], options["MoCo_gamma_sigma"], options["MoCo_rho"]
        MoCo_lambda_update, MoCo_grad_scaling = options["MoCo_lambda_update"], options["MoCo_grad_scaling"]
        if MoCo_grad_scaling not in MOCO_GRAD_SCALINGS:
            raise ValueError(f"MoCo_grad_scaling must be one of {MOCO_GRAD_SCALINGS}, got {MoCo_grad_scaling!r}")
        grads = self._get_grads(losses, mode="backward")
        self._raise_if_nonfinite(losses, grads)
        with torch.no_grad():
            if MoCo_grad_scaling == "loss":
                grads = loss_scaled_unit_grads(grads, losses.detach().to(grads.dtype))
            if self.moco_tracker.shape != grads.shape:
                self.moco_tracker = torch.zeros_like(grads)
            self.moco_step += 1
            # Y in place (the buffer itself when dtypes agree); G, ours alone, is the scratch space
            tracker, lambd = moco_update(
                self.moco_tracker.to(grads.dtype), self.moco_lambda.to(grads.dtype), grads, int(self.moco_step),
                MoCo_beta, MoCo_beta_sigma, MoCo_gamma, MoCo_gamma_sigma, MoCo_rho, MoCo_lambda_update, in_place=True,
            )
            if tracker is not self.moco_tracker:
                self.moco_tracker.copy_(tracker)
            self.moco_lambda.copy_(lambd)
        self._reset_grad(tracker.T @ lambd)
        return lambd.cpu().numpy()
