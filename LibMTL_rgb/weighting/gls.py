"""GLS: Geometric Loss Strategy (Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++:
Multi-Stream Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning",
CVPR Workshops 2019): the total loss is the geometric mean of the task losses."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS
from LibMTL_rgb.weighting.loss_weighting import LossWeighting, check_positive_losses


def geometric_mean_loss(losses: Tensor) -> Tensor:
    r"""GLS's total loss ``L = (Π_i L_i)^{1/T}``, computed as ``exp(mean_i log L_i)`` (no under/overflow
    of the product for many tasks; the same value for positive losses)."""
    return torch.exp(torch.log(losses).mean())


def gls_weights(losses: Tensor) -> Tensor:
    r"""The weights the geometric mean puts on the task gradients:
    ``∂L/∂L_i = (Π_j L_j)^{1/T} / (T L_i)``."""
    return geometric_mean_loss(losses) / (len(losses) * losses)


@WEIGHTINGS.register
class GLS(LossWeighting):
    r"""Minimise the geometric mean of the task losses (:func:`geometric_mean_loss`); the
    shared gradient is ``Σ_i w_i ∇L_i`` with ``w_i = (Π_j L_j)^{1/T} / (T L_i)``
    (:func:`gls_weights`, returned). Needs positive losses.

    Versus LibMTL: the same objective and gradient (LibMTL writes ``prod(L)^{1/T}``); LibMTL
    returns ``L_i / (T Π_j L_j)`` as the task weights, which are not the weights its gradient
    applies; we return the applied ones."""

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        check_positive_losses(losses, "GLS")
        self._backward_objective(geometric_mean_loss(losses))
        return gls_weights(losses.detach()).cpu().numpy()
