"""LibMTL's per-batch records (``record``, ``bs``) without a host transfer per batch.

LibMTL's ``AbsMetric`` and ``AbsLoss`` keep two lists: ``record`` (one value per batch,
appended as a Python number: ``loss.item()``) and ``bs`` (the batch sizes); the epoch's score
is computed from them. ``.item()`` waits for the device on every batch. :class:`BatchRecords`
keeps the same lists, but lets this library's own metrics and losses append a 0-dim device
tensor instead (:meth:`BatchRecords._record_on_device`); whoever reads ``record`` gets Python
numbers, all pending tensors being fetched in one transfer at the first read (once per epoch
in practice). Code written for LibMTL (``self.record.append(x.item())``, ``self.record =
torch.zeros(...)``, ``self.record += ...``) sees exactly LibMTL's attribute.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor


class BatchRecords:
    """Mixin: the ``record`` attribute of LibMTL's ``AbsMetric``/``AbsLoss``, with deferred
    device values. ``bs`` is a plain attribute (list of batch sizes)."""

    @property
    def record(self) -> Any:
        if getattr(self, "_pending_device_values", 0):
            self._fetch_device_values()
        return self.__dict__.get("_record")

    @record.setter
    def record(self, value: Any) -> None:
        self.__dict__["_record"] = value
        self._pending_device_values = 0

    def _record_on_device(self, value: Tensor) -> None:
        """Append a one-element tensor to ``record`` without waiting for the device."""
        if value.numel() != 1:
            raise ValueError(f"a record entry must hold one value, got shape {tuple(value.shape)}")
        self.__dict__["_record"].append(value.detach().reshape(()))
        self._pending_device_values += 1

    def _fetch_device_values(self) -> None:
        """Replace the pending tensors of ``record`` by Python numbers (one transfer per dtype)."""
        record = self.__dict__["_record"]
        positions = [i for i, value in enumerate(record) if isinstance(value, Tensor)]
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i in positions:
            by_dtype.setdefault(record[i].dtype, []).append(i)
        for indices in by_dtype.values():
            values = torch.stack([record[i].to(record[indices[0]].device) for i in indices]).tolist()
            for i, number in zip(indices, values):
                record[i] = number
        self._pending_device_values = 0


def batch_weighted_mean(record: Sequence[float], bs: Sequence[int]) -> float:
    """LibMTL's epoch value ``Σ_b record_b · bs_b / Σ_b bs_b`` (NaN for an empty epoch)."""
    if len(bs) == 0:
        return float("nan")
    values = np.asarray(record, dtype=np.float64)
    sizes = np.asarray(bs, dtype=np.float64)
    return float((values * sizes).sum() / sizes.sum())
