"""QM9's metric: the MAE of each target in the units of paper Table 2."""
from __future__ import annotations

from torch import Tensor

from LibMTL_rgb.metrics import L1Metric


class QM9MAE(L1Metric):
    """MAE in reported units from standardised predictions and targets:
    ``mean |pred − gt| · std · scale`` (``std``: the training split's std in PyG's unit;
    ``scale``: PyG's unit -> reported unit, e.g. 1000 for eV -> meV). Lower is better."""

    def __init__(self, std: float, scale: float = 1.0) -> None:
        super().__init__()
        if std <= 0 or scale <= 0:
            raise ValueError(f"std and scale must be > 0, got {std} and {scale}")
        self.factor = float(std) * float(scale)

    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        super().update_fun(pred * self.factor, gt.to(pred.dtype) * self.factor)

