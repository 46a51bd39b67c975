"""Metric and loss accumulators reduced across processes, so that scores and
``train_loss_buffer`` equal a single-process run: sums are summed, per-batch lists gathered
in batch order (this library's sum-based metrics and LibMTL's ``record`` / ``bs`` lists)."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from LibMTL_rgb.batch_records import BatchRecords

from LibMTL_rgb.distributed.process_group import is_active, world_size


def reduce_accumulator(obj: Any, device: Optional[torch.device] = None) -> None:
    """Turn this process's epoch accumulators in a metric or loss object into the global ones,
    in place, on every process.

    The accumulators are the attributes that the object's ``reinit()`` (metrics) or
    ``_reinit()`` (losses) assigns. Lists (LibMTL's ``record`` / ``bs``, per-batch tensors)
    are gathered and put back in single-process batch order (rank ``k mod W`` holds batch
    ``k``, as :class:`StridedBatches` and ``DistributedSampler`` deal them; in rank order when
    the lengths do not fit that layout); numbers and tensors (sums, counts, confusion
    matrices) are summed (``None`` counts as nothing). Cost: one gather per object per epoch."""
    if not is_active():
        return
    names = accumulator_names(obj)
    local = {name: _to_cpu(getattr(obj, name)) for name in names}
    gathered: list[Optional[dict[str, Any]]] = [None] * world_size()
    dist.all_gather_object(gathered, local)
    for name in names:
        values = [states[name] for states in gathered]
        current = getattr(obj, name)
        target = _device_of(current, device)
        if isinstance(current, list):
            merged = interleave_batches(values)
        else:
            merged = _sum_values(values)
        setattr(obj, name, _to_device(merged, target))


def reduce_meter(meter: Any, device: Optional[torch.device] = None) -> None:
    """:func:`reduce_accumulator` on each task's loss and metric object of a ``PerformanceMeter``
    (each object once, even when tasks share one)."""
    if not is_active():
        return
    seen: set[int] = set()
    for task in meter.task_name:
        for obj in (meter.losses[task], meter.metrics[task]):
            if id(obj) not in seen:
                seen.add(id(obj))
                reduce_accumulator(obj, device)


def interleave_batches(per_rank: Sequence[list]) -> list:
    """Per-rank lists of per-batch records → one list in global batch order (batch ``k`` on
    rank ``k mod W`` at position ``k // W``); concatenated in rank order otherwise."""
    world = len(per_rank)
    total = sum(len(values) for values in per_rank)
    fits = all(len(values) == math.ceil((total - r) / world) for r, values in enumerate(per_rank))
    if not fits:
        return [value for values in per_rank for value in values]
    return [per_rank[k % world][k // world] for k in range(total)]


def accumulator_names(obj: Any) -> list[str]:
    """Attributes that ``obj``'s ``reinit``/``_reinit`` assigns (or empties), found by running
    it on a shallow copy that records assignments."""
    reset_name = "reinit" if callable(getattr(obj, "reinit", None)) else "_reinit"
    if not callable(getattr(obj, reset_name, None)):
        return []
    assigned: list[str] = []

    class Recorder(type(obj)):  # type: ignore[misc, valid-type]
        def __setattr__(self, name: str, value: Any) -> None:
            if name not in assigned:
                assigned.append(name)
            object.__setattr__(self, name, value)

    probe = object.__new__(Recorder)
    object.__setattr__(probe, "__dict__", {k: list(v) if isinstance(v, list) else v for k, v in vars(obj).items()})
    getattr(Recorder, reset_name)(probe)
    emptied = [k for k, v in vars(obj).items() if isinstance(v, list) and v and not vars(probe).get(k, v)]
    names = [name for name in dict.fromkeys(assigned + emptied) if name in vars(obj)]
    if isinstance(obj, BatchRecords):  # LibMTL's ``record`` list, kept as ``_record`` with a pending count
        names = [n for n in names if n not in ("_record", "_pending_device_values")] + ["record"]
    return names


def _sum_values(values: Sequence[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    total = present[0]
    for value in present[1:]:
        total = total + value
    return total


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def _to_device(value: Any, device: Optional[torch.device]) -> Any:
    if isinstance(value, Tensor) and device is not None:
        return value.to(device)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


def _device_of(value: Any, default: Optional[torch.device]) -> Optional[torch.device]:
    if isinstance(value, Tensor):
        return value.device
    if isinstance(value, list):
        for item in value:
            if isinstance(item, Tensor):
                return item.device
    return default
