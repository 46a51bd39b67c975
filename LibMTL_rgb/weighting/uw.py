"""UW: uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty
to Weigh Losses for Scene Geometry and Semantics", CVPR 2018)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS
from LibMTL_rgb.weighting.loss_weighting import LossWeighting

#: Initial log-variance s_i = log σ_i² (LibMTL's choice).
INITIAL_LOG_VARIANCE = -0.5


@WEIGHTINGS.register
class UW(LossWeighting):
    r"""Minimise ``Σ_i ( L_i / (2 σ_i²) + log σ_i )`` = ``Σ_i ½ (e^{−s_i} L_i + s_i)`` with
    learnable log-variances ``s_i = log σ_i²`` (the parameter ``uw_log_vars``, initialised to
    −0.5 as in LibMTL; the Trainer's optimizer updates it with the model). This is the
    paper's regression form for every task (LibMTL's variant); ``Σ e^{−s} L + s`` is the
    same objective times 2. Returns the current weights ``e^{−s_i} / 2``."""

    def init_param(self) -> None:
        self.uw_log_vars = nn.Parameter(torch.full((self.task_num,), INITIAL_LOG_VARIANCE, device=self.device))

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        log_vars = self.uw_log_vars.to(losses.dtype)
        self._backward_objective((0.5 * (torch.exp(-log_vars) * losses + log_vars)).sum())
        return (0.5 * torch.exp(-log_vars.detach())).cpu().numpy()
