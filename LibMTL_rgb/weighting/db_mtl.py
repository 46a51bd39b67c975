"""DB-MTL: dual-balancing multi-task learning (Lin et al., "Dual-Balancing for Multi-Task
Learning", arXiv:2308.12029, 2023)."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting
from LibMTL_rgb.weighting.loss_weighting import check_positive_losses
from LibMTL_rgb.weighting.state_buffers import ResizableBuffers

#: ε in ``log(L_i + ε)`` and in ``max_j ‖ĝ_j‖ / (‖ĝ_i‖ + ε)`` (the authors' code / LibMTL).
LOG_EPS = 1e-8
NORM_EPS = 1e-8


def db_mtl_scales(ema_grads: Tensor) -> Tensor:
    r"""Gradient-magnitude balancing: ``α_i = max_j ‖ĝ_j‖ / (‖ĝ_i‖ + ε)``, so every
    ``α_i ĝ_i`` has the largest task's norm."""
    norms = ema_grads.norm(dim=1)
    return norms.max() / (norms + NORM_EPS)


@WEIGHTINGS.register
class DB_MTL(ResizableBuffers, AbsWeighting):
    r"""DB-MTL. Loss-scale balancing: the task losses enter as ``log(L_i + ε)``.
    Gradient-magnitude balancing: ``ĝ_i ← β_t ĝ_i + (1 − β_t) ∇ log(L_i + ε)`` (an EMA,
    ``β_t = β / t^{σ}``; σ = 0 is the paper's constant β; ``ĝ`` starts at 0), and the shared
    parameters move along ``Σ_i α_i ĝ_i`` with :func:`db_mtl_scales`. Returns ``α``.

    As the paper and LibMTL. ``ĝ`` ([T, D]) and the step count are buffers (saved with the
    ``state_dict``). Shared-parameter gradients only (an EMA of per-batch representation
    gradients is meaningless)."""

    supports_rep_grad = False
    head_rule = True
    #: α weights the EMA gradients ĝ_i, not the current ones: the heads get Σ_i ∇ log L_i (the paper, LibMTL)
    heads_take_returned_weights = False
    needs_full_matrix = "its EMA gradients ĝ are a second [T, D] matrix, kept between steps"
    hyperparameters = (
        Hyperparameter("DB_beta", 0.9, "DB_MTL: EMA rate β of the log-loss gradients", minimum=0.0, maximum=1.0),
        Hyperparameter("DB_beta_sigma", 0.0, "DB_MTL: decay exponent σ (β_t = β / t^σ)", minimum=0.0),
    )

    def init_param(self) -> None:
        self._check_rep_grad_support()
        self.register_resizable_buffer("db_ema_grads")
        self.register_buffer("db_step", torch.zeros((), dtype=torch.long, device=self.device))

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        options = self.method_options(kwargs)
        DB_beta, DB_beta_sigma = options["DB_beta"], options["DB_beta_sigma"]
        check_positive_losses(losses, "DB_MTL", allow_zero=True)
        grads = self._get_grads(torch.log(losses + LOG_EPS), mode="backward")
        self._raise_if_nonfinite(losses, grads)
        with torch.no_grad():
            if self.db_ema_grads.shape != grads.shape:
                self.db_ema_grads = torch.zeros_like(grads)
            self.db_step += 1
            beta = DB_beta / int(self.db_step) ** DB_beta_sigma
            if self.db_ema_grads.dtype == grads.dtype:  # g + β(ĝ − g) in the buffer, no [T, D] temporaries
                ema = self.db_ema_grads.sub_(grads).mul_(beta).add_(grads)
            else:
                ema = grads + beta * (self.db_ema_grads.to(grads.dtype) - grads)
                self.db_ema_grads.copy_(ema)
            scales = db_mtl_scales(ema)
        self._reset_grad(scales @ ema)
        return scales.cpu().numpy()
