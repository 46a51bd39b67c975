"""IMTL-L, the loss-balancing part of IMTL (Liu et al.,
"Towards Impartial Multi-task Learning", ICLR 2021).

Each task loss ``L_t`` is replaced by ``e^{s_t} L_t − s_t`` with a learnable scale ``s_t``
(the parameter ``imtl_log_scales``, starting at 0, updated by the Trainer's optimizer with
the model). Its gradient in ``s_t`` is ``e^{s_t} L_t − 1``, so descent drives every scaled
loss ``e^{s_t} L_t`` toward 1; the network sees the gradients of the scaled losses. IMTL (the
paper's hybrid, and LibMTL's IMTL) applies IMTL-G to those gradients.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

#: ``IMTL_mode``: both parts (the paper's IMTL, LibMTL), IMTL-G only, IMTL-L only.
IMTL_MODES = ("hybrid", "gradient", "loss")


def imtl_scaled_losses(losses: Tensor, log_scales: Tensor) -> Tensor:
    r"""IMTL-L: ``e^{s_t} L_t − s_t`` for every task ``t``."""
    log_scales = log_scales.to(losses.dtype)
    return torch.exp(log_scales) * losses - log_scales


class IMTLLossScaling:
    """Mixin for the IMTL weighting (a ``TorchJDAggregation``): scales the losses before the
    per-task gradients are taken (``IMTL_mode`` hybrid or loss); ``loss`` sums the scaled
    losses' gradients instead of applying IMTL-G."""

    def init_param(self) -> None:
        super().init_param()
        self.imtl_log_scales = nn.Parameter(torch.zeros(self.task_num, device=self.device))

    def _weighting_params(self) -> list[nn.Parameter]:
        """The loss scales ``s`` get ``Σ_t ∇(e^{s_t} L_t − s_t)`` (IMTL-L), not the head rule."""
        return [self.imtl_log_scales]

    def prepare_losses(self, losses: Tensor, options: dict[str, Any]) -> Tensor:
        mode = options["IMTL_mode"]
        if mode not in IMTL_MODES:
            raise ValueError(f"IMTL_mode must be one of {IMTL_MODES}, got {mode!r}")
        return losses if mode == "gradient" else imtl_scaled_losses(losses, self.imtl_log_scales)

    def aggregator(self, options: dict[str, Any]):
        if options["IMTL_mode"] != "loss":
            return super().aggregator(options)
        if getattr(self, "_imtl_sum", None) is None:
            from torchjd.aggregation import Sum

            self._imtl_sum = Sum()
        return self._imtl_sum
