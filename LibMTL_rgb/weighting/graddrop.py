"""GradDrop: gradient sign dropout (Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov,
"Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020).

With ``rep_grad=True`` (the paper's and LibMTL's GradDrop) it acts on the gradients at the
shared representation ``A`` (the GradDrop layer). Per task ``i``, per feature of ``A``
(Eq. 1-3 of the paper, Algorithm 1)::

    ∇_i = Σ_batch sign(A) ∘ ∂L_i/∂A                       (sign-corrected, batch-summed)
    P   = ½ (1 + Σ_i ∇_i / Σ_i |∇_i|)                      (positive sign purity)
    M_i = 1[P > U] 1[∇_i > 0] + 1[P < U] 1[∇_i < 0],      U ~ Uniform(0, 1) per feature
    ∂L/∂A = Σ_i (ℓ + (1 − ℓ) M_i) ∘ ∂L_i/∂A               (leak ℓ = ``--leak``)

and the encoder receives ``∂L/∂A``. Where every ``∇_i`` of a feature is 0, ``P = ½`` (LibMTL
adds 1e-7 to the denominator instead, which makes ``P`` depend on the gradients' scale).

With ``rep_grad=False`` — our extension, which LibMTL refuses — torchjd's ``GradDrop`` applies
the same rule to the shared-parameter gradients (each parameter a "feature", no input sign).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.lazy_import import lazy_callable
from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.torchjd_adapter import TorchJDAggregation

GradDropAggregator = lazy_callable("torchjd.aggregation", "GradDrop")


def graddrop_masks(per_grads: Tensor, inputs: Tensor) -> Tensor:
    """The keep masks ``M_i`` (``[T, *feature]``) for per-task, per-sample gradients
    ``per_grads`` (``[T, B, *feature]``) at the representation ``inputs`` (``[B, *feature]`` or
    ``[T, B, *feature]``); draws ``U`` with one ``torch.rand_like`` call (LibMTL's draw)."""
    signed = (per_grads * inputs.sign()).sum(dim=1)
    total, magnitude = signed.sum(dim=0), signed.abs().sum(dim=0)
    purity = torch.where(magnitude > 0, 0.5 * (1.0 + total / torch.where(magnitude > 0, magnitude, 1.0)), 0.5)
    draw = torch.rand_like(purity)
    return ((purity > draw) & (signed > 0)) | ((purity < draw) & (signed < 0))


@WEIGHTINGS.register
class GradDrop(TorchJDAggregation):
    """GradDrop (Chen et al., NeurIPS 2020): gradient sign dropout at the shared representation
    with ``--rep_grad`` (the paper's and LibMTL's), or — our extension — on the shared-parameter
    gradients (torchjd) without it. Leak ``--leak`` for every task. Returns ones: the
    task-specific parameters get their own task's gradient."""

    supports_gramian = False  # a per-coordinate sign mask: it needs G itself
    hyperparameters = (Hyperparameter("leak", 0.0, "GradDrop: leak ℓ of every task's gradient through the sign mask", minimum=0.0, maximum=1.0),)

    def make_aggregator(self, options: dict[str, Any]):
        return GradDropAggregator(leak=torch.full((self.task_num,), self._leak(options), device=self.device))

    def _leak(self, options: dict[str, Any]) -> float:
        leak = float(options["leak"])
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"GradDrop's --leak must be in [0, 1], got {leak}")
        return leak

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        if not self.rep_grad:
            return super().backward(losses, **kwargs)
        leak = self._leak(self.method_options(kwargs))
        per_grads = self._compute_grad(losses, mode="backward", rep_grad=True)
        if isinstance(self.rep, dict):
            try:
                inputs = torch.stack([self.rep[task] for task in self.task_name])
                per_grads = torch.stack(per_grads)
            except RuntimeError as err:
                raise ValueError("GradDrop needs the representations of all tasks to have the same shape") from err
        else:
            inputs = self.rep
        self._raise_if_nonfinite(losses, per_grads.reshape(self.task_num, -1))
        with torch.no_grad():
            masks = graddrop_masks(per_grads, inputs.detach()).to(per_grads.dtype).unsqueeze(1)
            kept = per_grads * (leak + (1.0 - leak) * masks)
        if isinstance(self.rep, dict):
            for tn, task in enumerate(self.task_name):
                self.rep[task].backward(kept[tn], retain_graph=tn + 1 < self.task_num)
        else:
            self.rep.backward(kept.sum(dim=0))
        return np.ones(self.task_num)
