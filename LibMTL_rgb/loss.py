"""Losses: LibMTL's ``AbsLoss`` contract and the common losses the examples share.

A loss object computes a scalar from ``(pred, gt)`` and remembers, per epoch, the
batch-size-weighted sum of its values as a device tensor (no per-step host transfer).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


class AbsLoss:
    """Base class of task losses (LibMTL's ``AbsLoss``)."""

    def __init__(self) -> None:
        self._reinit()

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        raise NotImplementedError

    def _update_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        loss = self.compute_loss(pred, gt)
        batch = _batch_size(pred)
        self._sum = loss.detach() * batch + (self._sum if self._sum is not None else 0.0)
        self._count += batch
        return loss

    def _average_loss(self) -> float:
        if self._count == 0:
            return float("nan")
        return float(self._sum) / self._count

    def _reinit(self) -> None:
        self._sum = None
        self._count = 0


def _batch_size(pred) -> int:
    if isinstance(pred, Tensor):
        return int(pred.shape[0]) if pred.dim() > 0 else 1
    return len(pred)


class CELoss(AbsLoss):
    """Cross-entropy on class logits ``[B, C, ...]``; targets < 0 are ignored."""

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        return F.cross_entropy(pred, gt.long(), ignore_index=-1)


class BCELoss(AbsLoss):
    """Binary cross-entropy on logits."""

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(pred, gt.to(pred.dtype))


class MSELoss(AbsLoss):
    """Mean squared error."""

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        return F.mse_loss(pred, gt.to(pred.dtype).view_as(pred))


class L1Loss(AbsLoss):
    """Mean absolute error."""

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        return F.l1_loss(pred, gt.to(pred.dtype).view_as(pred))
