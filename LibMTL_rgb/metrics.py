"""Metrics: LibMTL's ``AbsMetric`` contract and the common metrics the examples share.

Metrics accumulate sums as device tensors during an epoch and turn them into Python floats
only in ``score_fun`` (once per epoch).
"""
from __future__ import annotations

from torch import Tensor


class AbsMetric:
    """Base class of task metrics: ``update_fun`` per batch, ``score_fun`` -> list of floats."""

    def __init__(self) -> None:
        self.bs: list[int] = []

    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        raise NotImplementedError

    def score_fun(self) -> list[float]:
        raise NotImplementedError

    def reinit(self) -> None:
        self.bs = []


class _SumMetric(AbsMetric):
    """A metric that is (sum of per-sample values) / (number of samples)."""

    def __init__(self) -> None:
        super().__init__()
        self.reinit()

    def _accumulate(self, values: Tensor) -> None:
        total = values.detach().sum()
        self._total = total if self._total is None else self._total + total
        self._count += values.numel()

    def score_fun(self) -> list[float]:
        if self._count == 0:
            return [float("nan")]
        return [float(self._total) / self._count]

    def reinit(self) -> None:
        super().reinit()
        self._total = None
        self._count = 0


class AccMetric(_SumMetric):
    """Classification accuracy (higher is better) from logits ``[B, C]`` and labels ``[B]``."""

    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        self._accumulate((pred.argmax(dim=1) == gt.long()).float())


class L1Metric(_SumMetric):
    """Mean absolute error (lower is better)."""

    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        self._accumulate((pred.detach() - gt.to(pred.dtype).view_as(pred)).abs())


class MSEMetric(_SumMetric):
    """Mean squared error (lower is better)."""

    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        self._accumulate((pred.detach() - gt.to(pred.dtype).view_as(pred)) ** 2)
