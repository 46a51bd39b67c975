"""EW (equal weighting, a.k.a. LS): the sum of the task losses."""
from __future__ import annotations

import numpy as np
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS
from LibMTL_rgb.weighting.loss_weighting import LossWeighting


@WEIGHTINGS.register
class EW(LossWeighting):
    """Equal weighting: one backward pass of ``sum_i L_i``; returns ones.

    With ``rep_grad=True`` the representation gradients are pushed on through the encoder, so
    the shared parameters get the same gradient as with ``rep_grad=False``.
    """

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        self._backward_objective(losses.sum())
        return np.ones(len(losses))
