"""A model whose per-task gradients are exactly a chosen Jacobian ``G`` (for testing
gradient methods against formulas and against torchjd)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.trainer import build_mtl_model

T, D = 3, 5


class SharedVector(nn.Module):
    """Encoder whose representation is its parameter θ (one row per sample)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(1, dim, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return self.theta.expand(x.shape[0], -1)


class LinearLoss(nn.Module):
    """Decoder giving ``L = offset + g·rep`` (so ``∇_θ L = g`` at any θ)."""

    def __init__(self, grad: Tensor, offset: float) -> None:
        super().__init__()
        self.register_buffer("grad", grad.clone())
        self.register_buffer("offset", torch.tensor(float(offset), dtype=torch.float64))

    def forward(self, rep: Tensor) -> Tensor:
        return self.offset + (rep @ self.grad).sum()


def jacobian_model(weighting: str, G: Tensor, offsets: Optional[list[float]] = None, rep_grad: bool = False):
    """A model (HPS + ``weighting``) whose task ``i`` has loss ``offsets[i]`` and gradient ``G[i]``."""
    offsets = offsets if offsets is not None else [1.0 + i for i in range(len(G))]
    tasks = [f"t{i}" for i in range(len(G))]
    decoders = nn.ModuleDict({t: LinearLoss(G[i], offsets[i]) for i, t in enumerate(tasks)})
    return build_mtl_model(weighting, "HPS", tasks, lambda: SharedVector(G.shape[1]), decoders,
                           rep_grad, False, torch.device("cpu"))


def set_task(model, index: int, grad: Optional[Tensor] = None, loss: Optional[float] = None) -> None:
    decoder = model.decoders[model.task_name[index]]
    if grad is not None:
        decoder.grad.copy_(grad)
    if loss is not None:
        decoder.offset.fill_(loss)


def step(model, **weight_args):
    """One forward + ``backward``: returns (task weights, shared gradient [D])."""
    model.encoder.theta.grad = None
    out = model(torch.zeros(1, 1, dtype=torch.float64))
    losses = torch.stack([out[t] for t in model.task_name])
    weights = model.backward(losses, **weight_args)
    return np.asarray(weights), model.encoder.theta.grad.reshape(-1).clone()


def random_jacobian(seed: int, rows: int = T, cols: int = D) -> Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
