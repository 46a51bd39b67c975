"""DWA: dynamic weight average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with
Attention", CVPR 2019, Eq. 7)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.loss_weighting import LossWeighting


def dwa_weights(task_num: int, loss_buffer: Optional[np.ndarray], epoch: Optional[int], temperature: float) -> np.ndarray:
    r"""``λ_i(t) = T · exp(r_i / τ) / Σ_j exp(r_j / τ)``, ``r_i = L_i(t−1) / L_i(t−2)``,
    from the epoch-average training losses ``loss_buffer`` ([T, epochs]); ones for the first
    two epochs or when no buffer/epoch is known."""
    if temperature <= 0:
        raise ValueError(f"DWA's temperature --T must be > 0, got {temperature}")
    if loss_buffer is None or epoch is None or epoch < 2:
        return np.ones(task_num)
    if len(loss_buffer) != task_num:
        raise ValueError(f"train_loss_buffer has {len(loss_buffer)} rows for {task_num} tasks")
    ratio = np.asarray(loss_buffer[:, epoch - 1], dtype=np.float64) / np.asarray(loss_buffer[:, epoch - 2], dtype=np.float64)
    return len(ratio) * torch.softmax(torch.from_numpy(ratio / temperature), dim=0).numpy()


@WEIGHTINGS.register
class DWA(LossWeighting):
    r"""Minimise ``Σ_i λ_i L_i`` with the DWA weights of :func:`dwa_weights`, computed from the
    Trainer's ``train_loss_buffer`` and ``epoch`` (which the Trainer saves and restores, so
    DWA needs no state of its own). Outside a Trainer (no buffer) the weights are ones."""

    hyperparameters = (Hyperparameter("T", 2.0, "DWA: temperature τ of the softmax over loss ratios", minimum=0.0, exclusive_minimum=True),)

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        T = self.method_options(kwargs)["T"]
        weights = dwa_weights(len(losses), getattr(self, "train_loss_buffer", None), getattr(self, "epoch", None), T)
        weight_tensor = torch.as_tensor(weights, device=losses.device, dtype=losses.dtype)
        self._backward_objective((weight_tensor * losses).sum())
        return weights
