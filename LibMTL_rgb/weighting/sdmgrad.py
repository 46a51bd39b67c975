"""SDMGrad: stochastic direction-oriented multi-objective gradient descent (Xiao, Ban & Ji,
"Direction-oriented Multi-objective Learning: Simple and Provable Stochastic Algorithms",
NeurIPS 2023)."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.multi_sample import MultiSampleWeighting
from LibMTL_rgb.weighting.simplex import project_to_simplex

#: The inner solver's SGD step size and momentum: LibMTL's choice (``lr=5, momentum=0.5``);
#: the authors' NYUv2 code uses ``lr=10`` (their Cityscapes and toy code differ again).
INNER_LR = 5.0
INNER_MOMENTUM = 0.5
SCALE_EPS = 1e-8


def sdmgrad_inner_solve(w: Tensor, grads_1: Tensor, grads_2: Tensor, lamda: float, niter: int,
                        lr: float = INNER_LR, momentum: float = INNER_MOMENTUM) -> Tensor:
    r"""``niter`` steps of projected SGD (heavy-ball momentum, as ``torch.optim.SGD``) from
    ``w`` on ``min_{w ∈ Δ} ½‖G w + λ g_0‖²`` with the double-sampled stochastic gradient
    ``A w + λ A 1/T``, ``A = G_1 G_2ᵀ / s²``, ``s = mean_i sqrt(max(A_ii, 0))`` before scaling
    (the authors' scale normalisation) and ``g_0`` the mean gradient."""
    products = (grads_1 @ grads_2.T).to(w.dtype)
    scale = torch.sqrt(torch.clamp(torch.diagonal(products), min=0)).mean()
    products = products / (scale.pow(2) + SCALE_EPS)
    towards_mean = products.mean(dim=1)
    velocity = None
    for _ in range(niter):
        gradient = products @ w + lamda * towards_mean
        velocity = gradient if velocity is None else momentum * velocity + gradient
        w = project_to_simplex(w - lr * velocity)
    return w


def sdmgrad_task_weights(w: Tensor, lamda: float) -> Tensor:
    r"""The direction ``(Gᵀ w + λ g_0) / (1 + λ)`` as weights on the task gradients:
    ``(w + λ/T) / (1 + λ)``."""
    return (w + lamda / len(w)) / (1 + lamda)


@WEIGHTINGS.register
class SDMGrad(MultiSampleWeighting):
    r"""SDMGrad: per step three batches ``ξ, ξ', ζ``; ``w`` (warm-started from the last step)
    takes ``SDMGrad_niter`` projected SGD steps on ``G_ξ, G_ξ'`` (:func:`sdmgrad_inner_solve`),
    then the shared parameters move along ``(G_ζᵀ w + λ g_{0,ζ}) / (1 + λ)``
    (:func:`sdmgrad_task_weights`, returned), the task-specific ones along the sum of the
    three batches' gradients (as the authors' code and LibMTL back-propagate every batch).

    This is the practical variant of the authors' code and LibMTL (one pair ``ξ, ξ'`` for all
    inner iterations, SGD with momentum 0.5 restarted every step, scale-normalised
    products; step size ``INNER_LR`` = 5, LibMTL's choice, where the authors' NYUv2 code
    uses 10); the Trainer draws the batches (``loss_samples_per_step``). ``w`` (starting
    uniform) is a buffer, saved with the ``state_dict``. Shared-parameter gradients only."""

    hyperparameters = (
        Hyperparameter("SDMGrad_lamda", 0.3, "SDMGrad: pull λ of the direction toward the mean gradient", minimum=0.0),
        Hyperparameter("SDMGrad_niter", 20, "SDMGrad: projected SGD iterations on the task weights per step", minimum=1),
    )

    def init_param(self) -> None:
        super().init_param()
        self.register_buffer("sdmgrad_w", torch.full((self.task_num,), 1.0 / self.task_num, dtype=torch.float64, device=self.device))

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        options = self.method_options(kwargs)
        SDMGrad_lamda, SDMGrad_niter = options["SDMGrad_lamda"], options["SDMGrad_niter"]
        first, second, update = self._sample_grads(losses)
        with torch.no_grad():
            # [T]-sized maths in float64 (the products G_ξ G_ξ'ᵀ are formed in the gradients' dtype)
            w = sdmgrad_inner_solve(self.sdmgrad_w, first, second, SDMGrad_lamda, SDMGrad_niter)
            self.sdmgrad_w.copy_(w)
            weights = sdmgrad_task_weights(w, SDMGrad_lamda)
        self._reset_grad(weights.to(update.dtype) @ update)
        return weights.cpu().numpy()
