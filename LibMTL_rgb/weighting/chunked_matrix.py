"""The chunked matrix path: ``G`` one chunk of parameters at a time, for methods that need ``G`` itself.

A method whose update of a parameter chunk depends only on that chunk's columns ``G_c``
([T, D_c]) does not need the ``[T, D]`` matrix at once:

* coordinate-separable methods (GradDrop without ``rep_grad``: the sign purity and the keep
  masks of a coordinate read only that coordinate's T gradients) — any chunks;
* group-separable methods (GradVac per layer or per parameter tensor: each group has its own
  Gramian, weights and combination) — chunks made of whole groups (:func:`group_chunks`).

:func:`chunked_matrix_backward` then computes, per chunk, ``G_c`` by the per-task path
(``AbsWeighting._task_grad_slice``: one backward pass per chunk, the graph kept), the chunk's
update, and writes it to the chunk's ``.grad`` at once: the peak is one chunk's ``[T, D_c]``,
sized by ``grad_memory_budget`` (at least T × the largest parameter, or group). A method
declares it with ``supports_chunked_matrix`` and takes this path when
``AbsWeighting.gradient_path()`` is ``"chunked"``. In a data-parallel run each ``G_c`` is
averaged over the processes (``G`` of the global batch, as the matrix path).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb import distributed
from LibMTL_rgb.weighting import task_gramian
from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting, _as_loss_vector, _grad_dtype

#: ``aggregate(G_c, begin)``: the update's entries for the columns ``begin .. begin + D_c`` of ``G``
#: from those columns ``G_c`` ([T, D_c]); called once per chunk, in the order of the chunks.
ChunkAggregate = Callable[[Tensor, int], Tensor]


def parameter_chunks(model: AbsWeighting) -> list[list[nn.Parameter]]:
    """Consecutive chunks of the shared parameters whose ``[T, D_c]`` slice fits the model's
    ``grad_memory_budget`` (a parameter larger than the budget is a chunk of its own)."""
    params = model._share_param_list()
    return task_gramian.parameter_chunks(params, _task_num(model), _grad_dtype(params), model._memory_budget())


def group_chunks(model: AbsWeighting, groups: Sequence[tuple[int, int]]) -> tuple[list[list[nn.Parameter]], list[range]]:
    """Chunks of the shared parameters made of whole groups (``groups``: column ranges of ``G``
    that start and end at parameter boundaries, in order, covering every column): consecutive
    groups while their ``[T, D_c]`` slice fits the budget (a group larger than it is a chunk of
    its own). Returns the chunks and, per chunk, the indices of its groups."""
    params = model._share_param_list()
    dtype, budget = _grad_dtype(params), model._memory_budget()
    chunks: list[list[nn.Parameter]] = []
    members: list[range] = []
    used, position, offset = 0, 0, 0
    for index, (begin, end) in enumerate(groups):
        if begin != offset:
            raise ValueError(f"groups must cover the columns in order: a group starts at {begin}, expected {offset}")
        group = []
        while offset < end:
            if position == len(params):
                raise ValueError(f"groups cover {end} columns, the shared parameters {offset}")
            group.append(params[position])
            offset += params[position].numel()
            position += 1
        if offset != end:
            raise ValueError(f"a group ends at column {end}, inside a parameter (which ends at {offset})")
        size = task_gramian.matrix_bytes(_task_num(model), end - begin, dtype)
        if not chunks or used + size > budget:
            chunks.append([])
            members.append(range(index, index))
            used = 0
        chunks[-1].extend(group)
        members[-1] = range(members[-1].start, index + 1)
        used += size
    if position != len(params):
        raise ValueError(f"groups cover {offset} columns, the shared parameters {sum(p.numel() for p in params)}")
    return chunks, members


def chunked_matrix_backward(
    model: AbsWeighting, losses: Tensor, chunks: Sequence[Sequence[nn.Parameter]], aggregate: ChunkAggregate
) -> None:
    """The shared parameters' ``.grad`` ← the method's update, chunk by chunk: for each chunk
    (consecutive shared parameters, in order, covering all of them) ``G_c`` (non-finite values
    raise ``FloatingPointError`` before the chunk is written), ``aggregate(G_c, begin)``, written
    to the chunk's ``.grad``; parameters no task reached are left alone, as ``_reset_grad`` does.
    Then the task-specific parameters as ``_compute_grad(mode='backward')`` treats them. The graph
    is kept (the head rule may still need it)."""
    losses = _as_loss_vector(losses)
    model._compute_grad_dim()
    params = model._share_param_list()
    flat = [p for chunk in chunks for p in chunk]
    if len(flat) != len(params) or any(a is not b for a, b in zip(flat, params)):
        raise ValueError("the chunks must hold every shared parameter once, in order")
    for param in params:
        param.grad = None
    reached_all: list[bool] = []
    begin = 0
    for chunk in chunks:
        block, reached = model._task_grad_slice(losses, list(chunk))
        block = model._mean_over_processes(block.detach())
        reached = distributed.reached_on_any_rank(reached)
        model._raise_if_nonfinite(losses, block)
        with torch.no_grad():
            update = aggregate(block, begin)
            _write_grads(chunk, reached, update)
        reached_all.extend(reached)
        begin += block.shape[1]
        del block, update
    model._had_grad = reached_all
    distributed.mark_shared_grads_written(model)
    model._backward_task_specific(losses, params, retain_graph=True)


def _write_grads(params: Sequence[nn.Parameter], reached: Sequence[bool], vector: Tensor) -> None:
    """``.grad`` of each reached parameter ← its slice of ``vector`` (laid out as ``params``)."""
    offset = 0
    for param, used in zip(params, reached):
        if used:
            value = vector[offset: offset + param.numel()].view_as(param)
            if param.grad is None:
                param.grad = value.to(param.dtype, copy=True)
            else:
                param.grad.copy_(value)
        offset += param.numel()
    if offset != vector.numel():
        raise ValueError(f"a chunk's update has {vector.numel()} entries, its parameters {offset}")


def _task_num(model: AbsWeighting) -> int:
    """T (set on the model by the Trainer; ``AbsWeighting`` does not declare it)."""
    return int(model.task_num)  # type: ignore[arg-type]
