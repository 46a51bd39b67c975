"""Bucketed asynchronous all-reduces (mean), their byte counter, and the broadcast that makes
replicas start identical (initial weights)."""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.distributed.process_group import is_active, world_size


#: Size of one all-reduce message (PyTorch DDP's default bucket size).
BUCKET_BYTES = 25 * 1024 * 1024


class CommunicationCounter:
    """Payload bytes this process sent through the all-reduces of this module (benchmarks):
    ``task_grad_bytes`` for per-task gradients (the ``[T, D]`` matrix, the Gramian path's
    ``[T, D_c]`` chunks and combined rows), ``other_bytes`` for the rest, and
    ``largest_task_grad_message``, the largest per-task-gradient tensor averaged at once."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.task_grad_bytes = 0
        self.other_bytes = 0
        self.largest_task_grad_message = 0

    @property
    def total(self) -> int:
        return self.task_grad_bytes + self.other_bytes


#: Module-wide counter (``benchmarks/distributed.py`` reads it).
COUNTER = CommunicationCounter()


class PendingMean:
    """Asynchronous all-reduces of the slices of one tensor; :meth:`wait` leaves the mean."""

    def __init__(self, tensor: Optional[Tensor], handles: Sequence[Any] = ()) -> None:
        self.tensor = tensor
        self.handles = list(handles)

    def wait(self) -> Optional[Tensor]:
        for handle in self.handles:
            handle.wait()
        if self.handles:
            self.tensor.div_(world_size())
        self.handles = []
        return self.tensor


def start_mean(tensor: Tensor, task_grads: bool = False) -> PendingMean:
    """Start averaging ``tensor`` in place over the processes, in messages of at most
    ``BUCKET_BYTES`` (several in flight at once); nothing happens without a process group."""
    if not is_active() or tensor.numel() == 0:
        return PendingMean(tensor)
    flat = tensor.view(-1)  # the [T, D] matrix and our flat buffers are contiguous
    step = max(1, BUCKET_BYTES // flat.element_size())
    handles = [dist.all_reduce(flat[begin:begin + step], async_op=True) for begin in range(0, flat.numel(), step)]
    sent = flat.numel() * flat.element_size()
    if task_grads:
        COUNTER.task_grad_bytes += sent
        COUNTER.largest_task_grad_message = max(COUNTER.largest_task_grad_message, sent)
    else:
        COUNTER.other_bytes += sent
    return PendingMean(tensor, handles)


def parameter_buckets(params: Sequence[nn.Parameter]) -> Iterator[list[nn.Parameter]]:
    """Consecutive groups of parameters of one dtype and device, about ``BUCKET_BYTES`` each."""
    bucket: list[nn.Parameter] = []
    size = 0
    for param in params:
        nbytes = param.numel() * param.element_size()
        if bucket and (size + nbytes > BUCKET_BYTES or param.dtype != bucket[0].dtype or param.device != bucket[0].device):
            yield bucket
            bucket, size = [], 0
        bucket.append(param)
        size += nbytes
    if bucket:
        yield bucket


def broadcast_model(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every process (replicas start identical)."""
    if not is_active():
        return
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)
