"""GradVac per parameter group (LibMTL's ``--GradVac_group_type``).

Gradient Vaccine (Wang, Tsvetkov, Firat & Cao, ICLR 2021) sets its similarity goals per
parameter group: the paper compares the whole model with finer granularities. LibMTL's
values: 0 = the whole shared model (one group), 1 = one group per layer (the parameters of
one module), 2 = one group per parameter tensor. Each group has its own EMA targets
``φ̂_ij`` and its own vaccine correction; the update is the concatenation of the groups'
corrected sums. Versus LibMTL: a layer is every module that directly owns shared
parameters (LibMTL counts leaf modules of the encoder only, which mis-sizes the groups of
architectures whose shared parameters are not all in leaf modules of the encoder); the
order of the other tasks is drawn per group (LibMTL draws one order per task for all groups).

A group's weights read only its own columns of ``G``: where the ``[T, D]`` matrix does not fit
``grad_memory_budget`` (``gradient_path()`` is not ``"matrix"``), or with
``grad_method='gramian'``, ``G`` comes in chunks of whole groups (``chunked_matrix.py``), the
same numbers and the same draws as on the whole matrix.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.weighting.chunked_matrix import chunked_matrix_backward, group_chunks
from LibMTL_rgb.weighting.state_buffers import ResizableBuffers

#: LibMTL's ``GradVac_group_type``: whole model, per layer, per parameter tensor.
GRADVAC_GROUP_TYPES = (0, 1, 2)


def parameter_groups(model: nn.Module, params: list[nn.Parameter], group_type: int) -> list[tuple[int, int]]:
    """``[(begin, end), ...]``: the column ranges of the ``[T, D]`` gradient matrix (laid out
    as ``params``) that form each group of ``group_type``."""
    if group_type not in GRADVAC_GROUP_TYPES:
        raise ValueError(f"GradVac_group_type must be one of {GRADVAC_GROUP_TYPES}, got {group_type!r}")
    offsets = np.concatenate([[0], np.cumsum([p.numel() for p in params])]).astype(int).tolist()
    if group_type == 0:
        return [(0, offsets[-1])]
    if group_type == 2:
        return list(zip(offsets[:-1], offsets[1:]))
    owner = {}
    for name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            owner.setdefault(id(param), name)
    groups: list[tuple[int, int]] = []
    previous = None
    for param, begin, end in zip(params, offsets[:-1], offsets[1:]):
        layer = owner.get(id(param))
        if groups and layer == previous:
            groups[-1] = (groups[-1][0], end)
        else:
            groups.append((begin, end))
        previous = layer
    return groups


class GradVacGrouping(ResizableBuffers):
    """Mixin for the GradVac weighting: with ``GradVac_group_type`` 1 or 2, one GradVac per
    parameter group (targets in the buffer ``gradvac_group_targets``, [groups, T, T]);
    with 0, the whole-model path of the class it is mixed into."""

    def init_param(self) -> None:
        super().init_param()
        self.register_resizable_buffer("gradvac_group_targets", dtype=torch.float64)

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        options = self.method_options(kwargs)
        group_type = options["GradVac_group_type"]
        if group_type == 0:
            return super().backward(losses, **kwargs)
        if self.rep_grad:
            raise ValueError("GradVac with GradVac_group_type 1 or 2 groups shared parameters and cannot run with "
                             "rep_grad=True; use rep_grad=False or GradVac_group_type 0")
        groups = parameter_groups(self, self._share_param_list(), group_type)
        shape = (len(groups), self.task_num, self.task_num)
        if self.gradvac_group_targets.shape != shape:
            self.gradvac_group_targets = torch.zeros(shape, dtype=torch.float64, device=losses.device)
        aggregator = self.aggregator(options)
        if self.gradient_path() != "matrix":
            self._chunked_grouped_backward(losses, aggregator, groups)
            return np.ones(self.task_num)
        grads = self._get_grads(losses, mode="backward")
        self._raise_if_nonfinite(losses, grads)
        with torch.no_grad():
            direction = self._grouped_direction(aggregator, grads, groups, self.gradvac_group_targets)
        self._reset_grad(direction)
        return np.ones(self.task_num)

    def _chunked_grouped_backward(self, losses: Tensor, aggregator: Any, groups: list[tuple[int, int]]) -> None:
        """The chunked matrix path: chunks of whole groups; the targets are updated in a copy
        and kept only when every chunk was finite (as the matrix path checks ``G`` first)."""
        self._gramian_engine().disarm()  # armed by the forward pass on the Gramian path, not used here
        targets = self.gradvac_group_targets.clone()
        chunks, members = group_chunks(self, groups)
        spans = iter(members)  # the chunks' groups, in the order the chunks come

        def aggregate(block: Tensor, begin: int) -> Tensor:
            span = next(spans)
            local = [(start - begin, end - begin) for start, end in groups[span.start: span.stop]]
            return self._grouped_direction(aggregator, block, local, targets[span.start: span.stop])

        chunked_matrix_backward(self, losses, chunks, aggregate)
        self.gradvac_group_targets.copy_(targets)

    def _grouped_direction(self, aggregator: Any, grads: Tensor, groups: list[tuple[int, int]], targets: Tensor) -> Tensor:
        """The concatenated update of ``groups`` (column ranges of ``grads``), group ``k`` with the
        targets ``targets[k]`` (updated in place)."""
        weighting = aggregator.gramian_weighting
        direction = torch.empty(grads.shape[1], dtype=grads.dtype, device=grads.device)
        for index, (begin, end) in enumerate(groups):
            block = grads[:, begin:end]
            weighting._phi_t = targets[index].to(device="cpu", dtype=grads.dtype).clone()
            weighting._state_key = (self.task_num, grads.dtype)
            weights = aggregator.weighting(block).to(device=grads.device, dtype=grads.dtype)
            targets[index].copy_(weighting._phi_t)
            direction[begin:end] = weights @ block
        return direction
