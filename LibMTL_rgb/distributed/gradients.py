"""The gradient side of a distributed step: global loss values, the mean of the ``[T, D]``
per-task gradients before the weighting, the mean of every other gradient after it, and the
BatchNorm running statistics."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.distributed.collectives import COUNTER, PendingMean, parameter_buckets, start_mean
from LibMTL_rgb.distributed.process_group import is_active, world_size


def start_task_grad_mean(model: nn.Module, grads: Tensor) -> PendingMean:
    """Average the ``[T, D]`` per-task gradients of the shared parameters over the processes
    (asynchronously: call ``.wait()`` before using them). Remembered for this step: when the
    weighting then writes the shared ``.grad`` from them (:func:`mark_shared_grads_written`),
    that gradient is the same on every process and is not averaged again."""
    if not is_active():
        return PendingMean(grads)
    model._distributed_task_grads_reduced = True
    return start_mean(grads, task_grads=True)


def reached_on_any_rank(reached: Sequence[bool]) -> list[bool]:
    """Per shared parameter, whether any process's tasks reached it this step (one small
    all-reduce). A parameter reached on some processes only then gets its averaged gradient
    (zeros counted where it was not reached) on every process, so replicas never diverge."""
    if not is_active() or not reached:
        return list(reached)
    flags = torch.tensor([bool(r) for r in reached], dtype=torch.uint8, device=_small_message_device())
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    COUNTER.other_bytes += flags.numel()
    return [bool(f) for f in flags.tolist()]


def min_over_processes(value: int) -> int:
    """The smallest ``value`` of the processes (``value`` itself in one process; one 8-byte
    all-reduce). For a memory budget each process reads from its own free memory: with the
    smallest, every process takes the same gradient path and cuts the same parameter chunks,
    so their all-reduces match (unequal ones abort gloo or hang NCCL)."""
    if not is_active():
        return int(value)
    smallest = torch.tensor([int(value)], dtype=torch.int64, device=_small_message_device())
    dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
    COUNTER.other_bytes += smallest.numel() * smallest.element_size()
    return int(smallest.item())


def _small_message_device() -> "torch.device | None":
    """Where a small host-built message must live for the backend (NCCL: the current GPU)."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None


def mark_shared_grads_written(model: nn.Module) -> None:
    """``AbsWeighting._reset_grad`` wrote the shared ``.grad``: from averaged per-task
    gradients this step, it is identical everywhere (a method that instead backpropagates a
    weighted loss leaves local gradients, which :func:`average_remaining_grads` averages)."""
    if getattr(model, "_distributed_task_grads_reduced", False):
        model._distributed_shared_synced = True


def mean_task_grads(grads: "Tensor | Sequence[Tensor]") -> "Tensor | list[Tensor]":
    """The mean over processes of (a list of) summed representation gradients (``rep_grad``):
    weights computed from them are identical everywhere; the per-sample gradients stay local
    and reach the shared parameters' ``.grad``, which :func:`average_remaining_grads` averages."""
    if not is_active():
        return grads
    if isinstance(grads, Tensor):
        return start_mean(grads.contiguous(), task_grads=True).wait()
    return [start_mean(g.contiguous(), task_grads=True).wait() for g in grads]


def global_losses(losses: Tensor) -> Tensor:
    """``losses`` ([T], local shard) with the value of their mean over the processes and the
    gradient of the local losses. For equal shards and mean losses, the mean of the shards'
    losses is the global-batch loss, and the mean of the local gradients is its gradient."""
    if not is_active():
        return losses
    reduced = start_mean(losses.detach().clone()).wait()
    # (l - l) + g is exactly g in IEEE arithmetic for finite l; d/dl = 1
    return (losses - losses.detach()) + reduced


def average_remaining_grads(model: nn.Module) -> None:
    """Average every trainable parameter's ``.grad`` over the processes, except the shared
    parameters when their per-task gradients were averaged this step (their ``.grad`` is
    already identical). A parameter with a gradient on some process and none on another gets
    zeros where it had none; one without a gradient anywhere keeps ``None``."""
    synced = getattr(model, "_distributed_shared_synced", False)
    model._distributed_shared_synced = model._distributed_task_grads_reduced = False
    if not is_active():
        return
    skip = {id(p) for p in model._share_param_list()} if synced and hasattr(model, "_share_param_list") else set()
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in skip]
    if not params:
        return
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8, device=params[0].device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
    COUNTER.other_bytes += has_grad.numel()
    needed = [p for p, flag in zip(params, has_grad.tolist()) if flag]
    for param in needed:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    pending = []
    for bucket in parameter_buckets(needed):
        flat = torch.cat([p.grad.reshape(-1) for p in bucket])
        pending.append((bucket, start_mean(flat)))
    for bucket, mean in pending:
        flat = mean.wait()
        offset = 0
        for param in bucket:
            param.grad.copy_(flat[offset:offset + param.numel()].view_as(param.grad))
            offset += param.numel()


def average_norm_statistics(model: nn.Module) -> None:
    """Average the running means and variances of the BatchNorm layers that each process
    updated from its own shard (not SyncBatchNorm, whose statistics are already global), so
    replicas and checkpoints stay identical (DDP instead copies rank 0's buffers)."""
    if not is_active() or world_size() == 1:
        return
    stats = [buffer for module in model.modules()
             if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, nn.SyncBatchNorm)
             for buffer in (module.running_mean, module.running_var) if buffer is not None]
    if not stats:
        return
    with torch.no_grad():
        for bucket in parameter_buckets(stats):
            flat = start_mean(torch.cat([b.reshape(-1) for b in bucket])).wait()
            offset = 0
            for buffer in bucket:
                buffer.copy_(flat[offset:offset + buffer.numel()].view_as(buffer))
                offset += buffer.numel()
