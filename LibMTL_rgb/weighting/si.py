"""SI: scale-invariant loss, the sum of the log losses (baseline of Nash-MTL, Navon et al.,
ICML 2022; cited as Ruder, 2017 in the RGB paper)."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS
from LibMTL_rgb.weighting.loss_weighting import LossWeighting, check_positive_losses


@WEIGHTINGS.register
class SI(LossWeighting):
    r"""Minimise ``Σ_i log L_i``: the shared gradient is ``Σ_i g_i / L_i``, invariant to a
    rescaling of any single loss. Needs positive losses. Returns the effective weights
    ``1 / L_i``."""

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        check_positive_losses(losses, "SI")
        self._backward_objective(torch.log(losses).sum())
        return (1.0 / losses.detach()).cpu().numpy()
