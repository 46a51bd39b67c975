"""EW (equal weighting, a.k.a. LS): the sum of the task losses."""
from __future__ import annotations

import numpy as np
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS
from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting


@WEIGHTINGS.register
class EW(AbsWeighting):
    """Equal weighting: one backward pass of ``sum_i L_i``; returns ones.

    Example:
        >>> import torch
        >>> from LibMTL_rgb.weighting import EW
        >>> EW.__name__
        'EW'
    """

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        losses.sum().backward()
        return np.ones(len(losses))
