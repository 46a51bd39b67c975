"""Losses: LibMTL's ``AbsLoss`` and its common losses (``CELoss``, ``KLDivLoss``, ``L1Loss``,
``MSELoss``), plus ``BCELoss``.

``AbsLoss`` is LibMTL's: ``compute_loss(pred, gt)`` returns the batch's scalar loss;
``_update_loss`` computes it, appends it to ``record`` and the batch size
(``pred.size()[0]``) to ``bs``, and returns it (with its graph, for the backward pass);
``_average_loss()`` is ``Σ record·bs / Σ bs``; ``_reinit()`` clears both lists. The value is
appended as a device tensor and read back once per epoch (``batch_records.py``) instead of
LibMTL's ``loss.item()`` per batch; ``record`` reads as LibMTL's floats.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from LibMTL_rgb.batch_records import BatchRecords, batch_weighted_mean


class AbsLoss(BatchRecords):
    """LibMTL's abstract loss: ``record`` (one loss per batch) and ``bs`` (batch sizes)."""

    def __init__(self) -> None:
        self.record = []
        self.bs: list[int] = []

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        """The batch's loss (a scalar tensor)."""
        raise NotImplementedError

    def _update_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        loss = self.compute_loss(pred, gt)
        if isinstance(loss, Tensor):
            self._record_on_device(loss)
        else:
            self.record.append(loss.item())
        self.bs.append(_batch_size(pred))
        return loss

    def _average_loss(self) -> float:
        return batch_weighted_mean(self.record, self.bs)

    def _reinit(self) -> None:
        self.record = []
        self.bs = []


def _batch_size(pred) -> int:
    """``pred.size()[0]`` as LibMTL takes it (1 for a 0-dim prediction; ``len`` otherwise)."""
    if isinstance(pred, Tensor):
        return int(pred.shape[0]) if pred.dim() > 0 else 1
    return len(pred)


class CELoss(AbsLoss):
    """Cross-entropy (``nn.CrossEntropyLoss``, as LibMTL's); labels equal to ``ignore_index``
    (default -100, PyTorch's and LibMTL's) are ignored; float targets are class probabilities."""

    def __init__(self, ignore_index: int = -100) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        return F.cross_entropy(pred, gt, ignore_index=self.ignore_index)


class KLDivLoss(AbsLoss):
    """Kullback-Leibler divergence (``nn.KLDivLoss``, as LibMTL's): ``pred`` holds
    log-probabilities, ``gt`` probabilities; ``reduction`` is LibMTL's default ``'mean'``
    (over all entries; ``'batchmean'`` is the mathematically proper KL per sample)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        return F.kl_div(pred, gt, reduction=self.reduction)


class BCELoss(AbsLoss):
    """Binary cross-entropy on logits (not in LibMTL)."""

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(pred, gt.to(pred.dtype))


class MSELoss(AbsLoss):
    """Mean squared error. Unlike ``nn.MSELoss`` (LibMTL's), ``gt`` is first reshaped to
    ``pred``'s shape (``[B]`` vs ``[B, 1]`` would broadcast to ``[B, B]`` there)."""

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        return F.mse_loss(pred, gt.to(pred.dtype).view_as(pred))


class L1Loss(AbsLoss):
    """Mean absolute error; ``gt`` reshaped to ``pred``'s shape as in :class:`MSELoss`."""

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        return F.l1_loss(pred, gt.to(pred.dtype).view_as(pred))
