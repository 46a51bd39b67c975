"""CelebA's per-attribute metrics from logits: F1 (what paper Table 3/7's Δm% uses, as FAMO's
CelebA code), and optionally the error rate and accuracy. A prediction is positive when its
logit is > 0 (probability > 0.5, FAMO's threshold); counts accumulate over the whole epoch."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from LibMTL_rgb.metrics import AbsMetric

#: Metric name -> 1 if higher is better else 0 (LibMTL's ``weight``).
HIGHER_IS_BETTER: dict[str, int] = {"F1": 1, "Err": 0, "Acc": 1}


class BinaryAttributeMetric(AbsMetric):
    """Epoch-level ``F1 = 2TP / (2TP + FP + FN)`` (0 when an attribute has neither positive
    predictions nor positive labels), ``Err = (FP + FN) / N`` and ``Acc = 1 − Err``, reported
    in the order of ``names``."""

    def __init__(self, names: Sequence[str] = ("F1",)) -> None:
        super().__init__()
        unknown = [n for n in names if n not in HIGHER_IS_BETTER]
        if unknown or not names:
            raise ValueError(f"unknown metric(s) {unknown or names}; choose from {list(HIGHER_IS_BETTER)}")
        self.names = list(names)
        self.reinit()

    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        positive = (pred.detach() > 0).flatten()
        label = gt.flatten() > 0.5
        counts = torch.stack([(positive & label).sum(), (positive & ~label).sum(), (~positive & label).sum()])
        self._counts = counts if self._counts is None else self._counts + counts
        self._total += positive.numel()

    def score_fun(self) -> list[float]:
        if self._counts is None:
            return [float("nan")] * len(self.names)
        tp, fp, fn = self._counts.tolist()
        denominator = 2 * tp + fp + fn
        error = (fp + fn) / self._total
        values = {"F1": 2 * tp / denominator if denominator > 0 else 0.0, "Err": error, "Acc": 1.0 - error}
        return [values[name] for name in self.names]

    def reinit(self) -> None:
        super().reinit()
        self._counts = None
        self._total = 0
