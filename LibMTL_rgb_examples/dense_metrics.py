"""Metrics and losses of dense prediction (NYUv2, Cityscapes), LibMTL's ``AbsMetric`` /
``AbsLoss`` contract.

Conventions of the MTAN-preprocessed data (and of the Cityscapes reader of this library):

- segmentation: logits ``[B, C, H, W]``, labels ``[B, H, W]``; label ``-1`` = ignored pixel;
- depth / disparity: ``[B, 1, H, W]``; a ground truth of ``0`` marks an invalid pixel;
- surface normals: ``[B, 3, H, W]``; an all-zero ground-truth vector marks an invalid pixel;
  predictions are normalised to unit length before any comparison;
- instance offsets: ``[B, 2, H, W]``; NaN marks pixels that belong to no instance.

Metrics pool pixels over the whole evaluation set (sums and counts on the device, turned into
floats once per epoch in ``score_fun``). LibMTL averages per-batch means weighted by the batch
size instead; with equally sized, fully valid batches the two agree.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from LibMTL_rgb.loss import AbsLoss
from LibMTL_rgb.metrics import AbsMetric
from LibMTL_rgb.model.normals import unit_normals

IGNORE_LABEL = -1
#: Thresholds (degrees) of the "% of pixels within t°" normal metrics.
NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)


# ----------------------------------------------------------------------- validity
def valid_depth(gt: Tensor) -> Tensor:
    """Pixels with a depth/disparity measurement (``gt != 0``), shape of ``gt``."""
    return gt != 0


def valid_normal(gt: Tensor) -> Tensor:
    """Pixels ``[B, 1, H, W]`` whose ground-truth normal is not the zero vector."""
    return (gt != 0).any(dim=1, keepdim=True)


def valid_offset(gt: Tensor) -> Tensor:
    """Offset entries that belong to an instance (not NaN), shape of ``gt``."""
    return ~torch.isnan(gt)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask`` (0 when nothing is valid), without a host sync."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp_min(1)


# --------------------------------------------------------------------------- losses
class SegLoss(AbsLoss):
    """Pixel-wise cross-entropy averaged over labelled pixels; label ``-1`` is ignored
    (0 for a batch without labelled pixels)."""

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        gt = gt.long()
        total = F.cross_entropy(pred, gt, ignore_index=IGNORE_LABEL, reduction="sum")
        return total / (gt != IGNORE_LABEL).sum().clamp_min(1)


class MaskedL1Loss(AbsLoss):
    """Mean absolute error over the valid entries given by ``valid(gt)``."""

    def __init__(self, valid: Callable[[Tensor], Tensor] = valid_depth) -> None:
        super().__init__()
        self.valid = valid

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        gt = gt.to(pred.dtype).view_as(pred)
        mask = self.valid(gt)
        return _masked_mean((pred - torch.nan_to_num(gt)).abs(), mask)


class DepthLoss(MaskedL1Loss):
    """L1 over pixels with a depth (or disparity) measurement (``gt != 0``)."""

    def __init__(self) -> None:
        super().__init__(valid_depth)


class OffsetLoss(MaskedL1Loss):
    """L1 over the instance-offset entries of instance pixels (``gt`` not NaN)."""

    def __init__(self) -> None:
        super().__init__(valid_offset)


class NormalLoss(AbsLoss):
    """``1 - cos(pred, gt)`` averaged over pixels with a ground-truth normal."""

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        gt = gt.to(pred.dtype)
        cosine = (unit_normals(pred) * gt).sum(dim=1, keepdim=True)
        return 1.0 - _masked_mean(cosine, valid_normal(gt))


# -------------------------------------------------------------------------- metrics
class SegMetric(AbsMetric):
    """Mean IoU and pixel accuracy (both higher is better) from a confusion matrix.

    ``mIoU`` averages the IoU of the classes that occur (in ground truth or prediction) over
    the evaluated set; ``pixAcc`` is the fraction of non-ignored pixels classified correctly.

    Args:
        num_classes: number of classes ``C`` (labels ``0..C-1``; others are ignored).
        pixel_accuracy: also report ``pixAcc`` (score is ``[mIoU, pixAcc]``, else ``[mIoU]``).
    """

    confusion: Optional[Tensor]

    def __init__(self, num_classes: int, pixel_accuracy: bool = True) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.pixel_accuracy = pixel_accuracy
        self.metric_names = ["mIoU", "pixAcc"] if pixel_accuracy else ["mIoU"]
        self.reinit()

    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        # ``max(dim=1).indices`` is ``argmax(dim=1)`` (first maximum on ties), 3-6x faster on CPU
        # over the channels of NCHW logits; ignored pixels go to an extra bin instead of being
        # selected out (no boolean indexing). docs/performance.md, NYUv2 profile.
        predicted = pred.detach().max(dim=1).indices.flatten()
        gt = gt.long().flatten().to(predicted.device)
        keep = (gt >= 0) & (gt < self.num_classes)
        size = self.num_classes ** 2
        pairs = torch.where(keep, gt * self.num_classes + predicted, size)
        counts = torch.bincount(pairs, minlength=size + 1)[:size].view(self.num_classes, self.num_classes)
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def score_fun(self) -> list[float]:
        if self.confusion is None or int(self.confusion.sum()) == 0:
            return [float("nan")] * len(self.metric_names)
        confusion = self.confusion.double().cpu()
        hits = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - hits
        present = union > 0
        miou = float((hits[present] / union[present]).mean())
        scores = [miou]
        if self.pixel_accuracy:
            scores.append(float(hits.sum() / confusion.sum()))
        return scores

    def reinit(self) -> None:
        super().reinit()
        self.confusion = None


class _PooledMetric(AbsMetric):
    """Sums of per-entry errors over the valid entries of the whole evaluated set."""

    metric_names: list[str] = []
    _sums: Optional[Tensor]
    _count: Optional[Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.reinit()

    def _errors(self, pred: Tensor, gt: Tensor) -> tuple[list[Tensor], Tensor]:
        """(per-metric error tensors, validity mask), all of one shape."""
        raise NotImplementedError

    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        pred = pred.detach()
        gt = gt.to(device=pred.device, dtype=pred.dtype).view_as(pred)
        errors, mask = self._errors(pred, gt)
        sums = torch.stack([torch.where(mask, e, torch.zeros_like(e)).double().sum() for e in errors])
        count = mask.sum()
        self._sums = sums if self._sums is None else self._sums + sums
        self._count = count if self._count is None else self._count + count

    def score_fun(self) -> list[float]:
        count = 0 if self._count is None else int(self._count)
        if count == 0 or self._sums is None:
            return [float("nan")] * len(self.metric_names)
        return [float(s) / count for s in self._sums.cpu()]

    def reinit(self) -> None:
        super().reinit()
        self._sums = None
        self._count = None


class DepthMetric(_PooledMetric):
    """Absolute error ``|p - g|`` and relative error ``|p - g| / |g|`` (both lower is better)
    averaged over pixels with ``g != 0``."""

    metric_names = ["abs_err", "rel_err"]

    def _errors(self, pred: Tensor, gt: Tensor) -> tuple[list[Tensor], Tensor]:
        mask = valid_depth(gt)
        absolute = (pred - gt).abs()
        relative = absolute / gt.abs().clamp_min(torch.finfo(gt.dtype).tiny)
        return [absolute, relative], mask


class DisparityMSEMetric(_PooledMetric):
    """Mean squared error over pixels with a disparity (``g > 0``), lower is better
    (the "MSE" column of the paper's Table 3; Align-MTL's disparity metric)."""

    metric_names = ["MSE"]

    def _errors(self, pred: Tensor, gt: Tensor) -> tuple[list[Tensor], Tensor]:
        return [(pred - gt) ** 2], gt > 0


class OffsetL1Metric(_PooledMetric):
    """Mean absolute error of instance offsets over instance pixels, both components pooled,
    lower is better (the "L1 [px]" column of the paper's Table 3; Align-MTL's instance metric)."""

    metric_names = ["L1_px"]

    def _errors(self, pred: Tensor, gt: Tensor) -> tuple[list[Tensor], Tensor]:
        mask = valid_offset(gt)
        return [(pred - torch.nan_to_num(gt)).abs()], mask


class NormalMetric(AbsMetric):
    """Angle between predicted and true normals over valid pixels, in degrees: mean, median
    (lower is better) and the fractions of pixels within 11.25°, 22.5°, 30° (higher is better).

    The per-pixel angles are kept (on the device) until ``score_fun``, which needs them all for
    the median (the NumPy median: mean of the two middle values for an even count).
    """

    metric_names = ["mean", "median", "<11.25", "<22.5", "<30"]

    def __init__(self) -> None:
        super().__init__()
        self.reinit()

    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        gt = gt.to(device=pred.device, dtype=pred.dtype)
        mask = valid_normal(gt)[:, 0]
        cosine = (unit_normals(pred.detach()) * gt).sum(dim=1)[mask]
        self._angles.append(torch.rad2deg(torch.acos(cosine.clamp(-1.0, 1.0))))

    def score_fun(self) -> list[float]:
        angles = torch.cat(self._angles).float().cpu().numpy() if self._angles else np.zeros(0)  # bf16 under --amp
        if angles.size == 0:
            return [float("nan")] * len(self.metric_names)
        within = [float(np.mean(angles < t)) for t in NORMAL_THRESHOLDS]
        return [float(np.mean(angles)), float(np.median(angles)), *within]

    def reinit(self) -> None:
        super().reinit()
        self._angles: list[Tensor] = []

