"""STCH: smooth Tchebycheff scalarisation (Lin et al., "Smooth Tchebycheff
Scalarization for Multi-Objective Optimization", ICML 2024), in the form of the authors'
multi-task code (log losses, nadir point from a warm-up epoch)."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from LibMTL_rgb.registry import WEIGHTINGS, Hyperparameter
from LibMTL_rgb.weighting.loss_weighting import LossWeighting, check_positive_losses

#: ε inside ``log(L_i / z_i + ε)`` (the authors' code / LibMTL).
LOG_EPS = 1e-20


def stch_objective(losses: Tensor, nadir: Tensor, mu: float) -> Tensor:
    r"""``T · μ log Σ_i exp(f_i / μ)`` with ``f_i = log(L_i / z_i + ε)``: the smooth
    Tchebycheff scalarisation ``μ log Σ_i exp(λ_i (f_i − f_i^*) / μ)`` with preference
    ``λ_i = 1``, ideal point 0 for the normalised log losses, times ``T`` (the scale of a
    sum of ``T`` losses, as in the authors' code)."""
    normalised = torch.log(losses / nadir + LOG_EPS)
    return len(losses) * mu * torch.logsumexp(normalised / mu, dim=0)


def stch_weights(losses: Tensor, nadir: Tensor, mu: float) -> Tensor:
    r"""``∂(stch_objective)/∂L_i = T softmax(f / μ)_i / (L_i + ε z_i)``: the weights of the
    task gradients."""
    normalised = torch.log(losses / nadir + LOG_EPS)
    return len(losses) * torch.softmax(normalised / mu, dim=0) / (losses + LOG_EPS * nadir)


@WEIGHTINGS.register
class STCH(LossWeighting):
    r"""Epochs ``< STCH_warmup_epoch``: minimise ``Σ_i log(L_i + ε)``. Epoch
    ``STCH_warmup_epoch``: the same, and the nadir point ``z`` becomes the mean of that epoch's
    training losses. Later epochs: minimise :func:`stch_objective`. Returns the weights on the
    task gradients (:func:`stch_weights`; ``1 / (L_i + ε)`` during warm-up).

    As the authors' multi-task code and LibMTL (which returns ones). The epoch comes from the
    Trainer (``self.epoch``); the running sum and count of the nadir epoch's losses are buffers
    (saved with the ``state_dict``). Needs non-negative losses."""

    hyperparameters = (
        Hyperparameter("STCH_mu", 1.0, "STCH: smoothing μ of the Tchebycheff scalarisation", minimum=0.0, exclusive_minimum=True),
        Hyperparameter("STCH_warmup_epoch", 4, "STCH: epochs of Σ log L_i before STCH; the last one sets the nadir point", minimum=0),
    )

    def init_param(self) -> None:
        self.register_buffer("stch_nadir_sum", torch.zeros(self.task_num, dtype=torch.float64, device=self.device))
        self.register_buffer("stch_nadir_count", torch.zeros((), dtype=torch.long, device=self.device))

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        options = self.method_options(kwargs)
        STCH_mu, STCH_warmup_epoch = options["STCH_mu"], options["STCH_warmup_epoch"]
        check_positive_losses(losses, "STCH", allow_zero=True)
        epoch = getattr(self, "epoch", None)
        if epoch is None:
            raise ValueError("STCH needs the current epoch (model.epoch, set by the Trainer)")
        if epoch <= STCH_warmup_epoch:
            if epoch == STCH_warmup_epoch:
                self.stch_nadir_sum += losses.detach().to(self.stch_nadir_sum.dtype)
                self.stch_nadir_count += 1
            self._backward_objective(torch.log(losses + LOG_EPS).sum())
            return (1.0 / (losses.detach() + LOG_EPS)).cpu().numpy()
        if int(self.stch_nadir_count) == 0:
            raise ValueError(f"STCH reached epoch {epoch} without a nadir point: no step ran in epoch {STCH_warmup_epoch}")
        nadir = (self.stch_nadir_sum / self.stch_nadir_count).to(losses.dtype)
        self._backward_objective(stch_objective(losses, nadir, STCH_mu))
        return stch_weights(losses.detach(), nadir, STCH_mu).cpu().numpy()
