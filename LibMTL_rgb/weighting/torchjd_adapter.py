"""``TorchJDAggregation``: one adapter that turns a torchjd ``Aggregator`` into a LibMTL weighting.

Every step: per-task gradients ``G`` ([T, D], ``_get_grads``) → the aggregator → the shared
parameters' ``.grad``. When the aggregator is a ``WeightedAggregator`` (its output is
``weights @ G`` with ``weights = aggregator.weighting(G)``), the adapter computes those
weights, applies them with ``_backward_new_grads`` (so ``rep_grad=True`` works: the weights
come from the representation gradients and scale the per-sample ones) and returns them.
Other aggregators return a direction only: they need ``rep_grad=False`` and return ones.
The task-specific parameters get ``∇ Σ_t w_t L_t`` for the returned weights (the head rule,
``AbsWeighting``).

On the Gramian path (``AbsWeighting.gradient_path``) ``G`` is never formed: the weights come
from ``K = G Gᵀ`` (a ``GramianWeightedAggregator``'s Gramian weighting reads ``K`` itself; a
weighting of the matrix that depends on it only through ``K``, as torchjd's ``Sum`` under IMTL-L, reads a T×T
factor ``F`` with ``F Fᵀ = K``), and one backward pass of ``Σ_t w_t L_t`` applies them.

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
    #: The weights depend on ``G`` only through ``G Gᵀ`` (torchjd's weighted aggregators).
    supports_gramian = True

    # ------------------------------------------------------------ subclass API
    def make_aggregator(self, options: dict[str, Any]) -> Aggregator:
        """Build the torchjd aggregator from this method's options (``weight_args`` values)."""
        raise NotImplementedError

    def row_scales(self, losses: Tensor, norms: Tensor, options: dict[str, Any]) -> Optional[Tensor]:
        """Optional [T] divisors applied to the rows of ``G`` (whose norms are ``norms``) before
        weighting (e.g. MGDA's gradient normalisation). The weights found for the scaled rows are
        then applied to the unscaled rows, as Sener & Koltun's code applies MGDA's weights to the
        raw losses."""
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
        """Copy state kept in this module's buffers into a stateful aggregator (before a step);
        ``grads`` is ``G`` or, on the Gramian path, ``G Gᵀ`` (for its dtype and device)."""

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
        if self.gradient_path() == "gramian":
            return self._gramian_backward(losses, aggregator, options)
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

    def _gramian_backward(self, losses: Tensor, aggregator: Aggregator, options: dict[str, Any]) -> np.ndarray:
        """One step on the Gramian path: weights from ``K = G Gᵀ``, then ``∇ Σ_t w_t L_t``."""
        gram = self._get_gramian(losses, mode="backward")
        self._raise_if_nonfinite(losses, torch.diagonal(gram).unsqueeze(1))
        with torch.no_grad():
            self.load_aggregator_state(aggregator, gram)
            weights = self._gramian_task_weights(aggregator, losses.detach(), gram, options)
            self.store_aggregator_state(aggregator)
        self._backward_weighted(losses, weights)
        self.after_update(options)
        return weights.cpu().numpy()

    def _gramian_task_weights(self, aggregator: Aggregator, losses: Tensor, gram: Tensor, options: dict[str, Any]) -> Tensor:
        from torchjd.aggregation import GramianWeightedAggregator, WeightedAggregator

        scales = self.row_scales(losses, torch.sqrt(torch.clamp(torch.diagonal(gram), min=0.0)), options)
        if scales is not None:
            inverse = 1.0 / scales.to(device=gram.device, dtype=gram.dtype)
            gram = gram * inverse.unsqueeze(1) * inverse.unsqueeze(0)
        if isinstance(aggregator, GramianWeightedAggregator):
            weights = aggregator.gramian_weighting(gram)
        elif isinstance(aggregator, WeightedAggregator):
            weights = aggregator.weighting(gramian_factor(gram))
        else:
            raise ValueError(f"{type(self).__name__}: its aggregator {type(aggregator).__name__} returns a direction, "
                             "not weights, and cannot run on the Gramian path; use grad_method 'auto' or 'loop'")
        return self.adjust_weights(weights.to(device=gram.device, dtype=gram.dtype), options)

    def _task_weights(self, aggregator: WeightedAggregator, losses: Tensor, matrix: Tensor, options: dict[str, Any]) -> Tensor:
        scales = self.row_scales(losses, matrix.norm(dim=1), options)
        if scales is None:
            weights = aggregator.weighting(matrix)
        else:
            scales = scales.to(device=matrix.device, dtype=matrix.dtype)
            weights = aggregator.weighting(matrix / scales.unsqueeze(1))
        return self.adjust_weights(weights.to(device=matrix.device, dtype=matrix.dtype), options)


def gramian_factor(gram: Tensor) -> Tensor:
    """A T×T matrix ``F`` with ``F Fᵀ = gram`` (``V diag(√λ)`` of the eigendecomposition, negative
    rounding eigenvalues clipped): a weighting of the matrix that reads it only through its
    Gramian gives the same weights for ``F`` as for ``G``."""
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)
    return eigenvectors * torch.sqrt(torch.clamp(eigenvalues, min=0.0)).unsqueeze(0)
