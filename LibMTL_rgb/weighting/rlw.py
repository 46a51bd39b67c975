"""RLW: random loss weighting (Lin et al., "Reasonable Effectiveness of Random Weighting: A
Litmus Test for Multi-Task Learning", TMLR 2022)."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS
from LibMTL_rgb.weighting.loss_weighting import LossWeighting


@WEIGHTINGS.register
class RLW(LossWeighting):
    r"""Every step draws ``z ~ N(0, I_T)`` and minimises ``Σ_i λ_i L_i`` with
    ``λ = softmax(z)`` (the paper's normal-distribution variant, as in LibMTL), so the
    weights sum to 1, not T. ``z`` comes from torch's global CPU generator, so ``--seed``
    makes it reproducible. Returns ``λ``."""

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        weights = torch.softmax(torch.randn(len(losses)), dim=0).to(device=losses.device, dtype=losses.dtype)
        self._backward_objective((weights * losses).sum())
        return weights.cpu().numpy()
