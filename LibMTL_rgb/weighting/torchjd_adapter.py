"""``TorchJDAggregation``: one adapter that turns a torchjd ``Aggregator`` into a LibMTL weighting.

Every step: per-task gradients ``G`` ([T, D], ``_get_grads``) → the aggregator → the shared
parameters' ``.grad``. When the aggregator is a ``WeightedAggregator`` (its output is
``weights @ G`` with ``weights = aggregator.weighting(G)``), the adapter computes those
weights, applies them with ``_backward_new_grads`` (so ``rep_grad=True`` works: the weights
come from the representation gradients and scale the per-sample ones) and returns them.
Other aggregators return a direction only: they need ``rep_grad=False`` and return ones.
The task-specific parameters get ``∇ Σ_t w_t L_t`` for the returned weights (the head rule,
``AbsWeighting``).

A subclass only names its aggregator (:meth:`make_aggregator`) and maps its
``hyperparameters`` (LibMTL's flag names) to the aggregator's options.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting

if TYPE_CHECKING:  # torchjd is imported when the first aggregator is used, not with the library
    from torchjd.aggregation import Aggregator, WeightedAggregator


class TorchJDAggregation(AbsWeighting):
    """Base class of the weightings that wrap a ``torchjd.aggregation.Aggregator``."""

    head_rule = True

    # ------------------------------------------------------------ subclass API
    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        """Build the torchjd aggregator from this method's options (``weight_args`` values)."""
        raise NotImplementedError

    def row_scales(self, losses: Tensor, grads: Tensor, options: dict[str, Any]) -> Optional[Tensor]:
        """Optional [T] divisors applied to the rows of ``G`` before weighting (e.g. MGDA's
        gradient normalisation). The weights found for the scaled rows are then applied to
        the unscaled rows, as Sener & Koltun's code applies MGDA's weights to the raw losses."""
        return None

    def prepare_losses(self, losses: Tensor, options: dict[str, Any]) -> Tensor:
        """Optional transformation of the losses before their gradients are taken (IMTL-L)."""
        return losses

    def adjust_weights(self, weights: Tensor, options: dict[str, Any]) -> Tensor:
        """Optional post-processing of the aggregator's weights (e.g. CAGrad's rescale)."""
        return weights

    def after_update(self, options: dict[str, Any]) -> None:
        """Optional post-processing of the shared parameters' ``.grad`` (e.g. Nash-MTL's clipping)."""

    def load_aggregator_state(self, aggregator: Aggregator, grads: Tensor) -> None:
        """Copy state kept in this module's buffers into a stateful aggregator (before a step)."""

    def store_aggregator_state(self, aggregator: Aggregator) -> None:
        """Copy a stateful aggregator's state back into this module's buffers (after a step)."""

    # ------------------------------------------------------------------ plumbing
    def init_param(self) -> None:
        self._check_rep_grad_support()
        self._aggregator_cache: tuple[tuple, Aggregator] | None = None

    def aggregator(self, options: dict[str, Any]) -> Aggregator:
        """The aggregator for ``options`` (built once, rebuilt when the options change). It is
        not a submodule: its state, if any, lives in this module's buffers."""
        key = tuple(sorted((name, repr(value)) for name, value in options.items()))
        cached = getattr(self, "_aggregator_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, self.make_aggregator(options))
            self._aggregator_cache = cached
        return cached[1]

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        from torchjd.aggregation import WeightedAggregator

        options = self.method_options(kwargs)
        aggregator = self.aggregator(options)
        losses = self.prepare_losses(losses, options)
        grads = self._get_grads(losses, mode="backward")
        per_grads, matrix = grads if self.rep_grad else (None, grads)
        self._raise_if_nonfinite(losses, matrix)
        with torch.no_grad():
            self.load_aggregator_state(aggregator, matrix)
            if isinstance(aggregator, WeightedAggregator):
                weights = self._task_weights(aggregator, losses.detach(), matrix, options)
                direction = None
            else:
                weights, direction = None, aggregator(matrix)
            self.store_aggregator_state(aggregator)
        if weights is None:
            self._reset_grad(direction)
            return np.ones(self.task_num)
        self._backward_new_grads(weights, per_grads=per_grads, grads=matrix)
        self.after_update(options)
        return weights.cpu().numpy()

    def _task_weights(self, aggregator: WeightedAggregator, losses: Tensor, matrix: Tensor, options: dict[str, Any]) -> Tensor:
        scales = self.row_scales(losses, matrix, options)
        if scales is None:
            weights = aggregator.weighting(matrix)
        else:
            scales = scales.to(device=matrix.device, dtype=matrix.dtype)
            weights = aggregator.weighting(matrix / scales.unsqueeze(1))
        return self.adjust_weights(weights.to(device=matrix.device, dtype=matrix.dtype), options)
