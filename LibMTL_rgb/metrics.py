"""Metrics: LibMTL's ``AbsMetric`` and the common metrics (LibMTL's ``AccMetric``, ``L1Metric``
and an ``MSEMetric``).

``AbsMetric`` is LibMTL's: ``record`` and ``bs`` lists, ``update_fun(pred, gt)`` per batch
(the Trainer calls it under ``torch.no_grad()``, as LibMTL's recorder does), ``score_fun()``
-> list of floats at the end of an epoch, ``reinit()`` clears ``record`` and ``bs``. A class
written for LibMTL (``self.record.append(err.cpu().numpy())``...) runs unchanged.

The metrics defined here append device tensors to ``record`` (no host transfer per batch,
see ``batch_records.py``); reading ``record`` gives LibMTL's Python numbers.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from LibMTL_rgb.batch_records import BatchRecords, batch_weighted_mean


class AbsMetric(BatchRecords):
    """LibMTL's abstract metric: ``record`` (one entry per batch) and ``bs`` (batch sizes)."""

    def __init__(self) -> None:
        self.record = []
        self.bs: list[int] = []

    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        """Compute the batch's metric values and append them to ``record``."""
        raise NotImplementedError

    def score_fun(self) -> list[float]:
        """The epoch's metric values (one per metric name of the task)."""
        raise NotImplementedError

    def reinit(self) -> None:
        """Clear ``record`` and ``bs`` (the Trainer calls it after each epoch)."""
        self.record = []
        self.bs = []


class AccMetric(AbsMetric):
    """Accuracy (higher is better), LibMTL's: ``record`` holds the number of correct
    predictions of each batch, ``bs`` the number of labels; score ``Σ record / Σ bs``.

    ``pred``: logits ``[B, C]`` (or ``[B, C, ...]``: the class axis is 1), ``gt``: labels.
    The predicted class is the first maximum of ``softmax(pred)`` (LibMTL's rule)."""

    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        predicted = F.softmax(pred, dim=1).argmax(dim=1)
        self._record_on_device(gt.eq(predicted).sum())
        self.bs.append(gt.numel())

    def score_fun(self) -> list[float]:
        total = sum(self.bs)
        return [sum(self.record) / total if total else float("nan")]


class _BatchMeanErrorMetric(AbsMetric):
    """``record``: the batch's mean error over all entries; ``bs``: its batch size; score:
    the batch-size-weighted mean of ``record`` (LibMTL's ``L1Metric`` score)."""

    def _errors(self, pred: Tensor, gt: Tensor) -> Tensor:
        raise NotImplementedError

    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        errors = self._errors(pred, gt.to(pred.dtype).view_as(pred))
        self._record_on_device(errors.mean())
        self.bs.append(int(pred.shape[0]) if pred.dim() > 0 else 1)

    def score_fun(self) -> list[float]:
        return [batch_weighted_mean(self.record, self.bs)]


class L1Metric(_BatchMeanErrorMetric):
    """Mean absolute error (lower is better). Equal to LibMTL's ``L1Metric`` where that one
    works (one value per batch); ours also takes ``[B, ...]`` batches (mean over entries)."""

    def _errors(self, pred: Tensor, gt: Tensor) -> Tensor:
        return (pred - gt).abs()


class MSEMetric(_BatchMeanErrorMetric):
    """Mean squared error (lower is better); not in LibMTL."""

    def _errors(self, pred: Tensor, gt: Tensor) -> Tensor:
        return (pred - gt) ** 2
