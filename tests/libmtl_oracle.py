"""PyPI LibMTL 1.1.5's weighting classes as oracles: run one on chosen per-task gradients and
losses, on the CPU, in float64, and read back its task weights and shared update.

LibMTL's weightings are mix-ins of its ``MTLmodel`` (architecture + weighting); a weighting
reads ``task_num``, ``task_name``, ``device``, ``rep_grad``, ``rep``/``rep_tasks``,
``get_share_params()``, ``zero_grad_share_params()``, ``epoch`` and ``train_loss_buffer``.
:class:`OracleHost` provides them around one shared parameter θ ([D]) with the losses
``L_i = offset_i + G_i·θ``: the per-task gradients of θ are exactly the rows of ``G``, the same
construction as ``jacobian_model.py`` builds for LibMTL_rgb. With ``rep_grad=True`` the
representation is θ itself (one sample), so LibMTL's representation gradients are also ``G``.

1.1.5's quirks handled here: ``LibMTL/model/resnet.py`` imports ``torchvision.models.utils``
(gone since torchvision 0.13): LibMTL_rgb's stand-in is installed first; ``_grad2vec`` builds
its buffer with torch's default dtype, so everything runs under
``torch.set_default_dtype(torch.float64)``; ``device`` is the CPU (1.1.5's Trainer hard-codes
``cuda:0``, the weightings only read ``self.device``).
"""
from __future__ import annotations

import contextlib
import importlib.util
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.integrations.libmtl import ensure_torchvision_models_utils


def libmtl_available() -> bool:
    return importlib.util.find_spec("LibMTL") is not None


def libmtl_weighting_module():
    """``LibMTL.weighting`` (1.1.5), importable on current torchvision."""
    ensure_torchvision_models_utils()
    import LibMTL.weighting

    return LibMTL.weighting


@contextlib.contextmanager
def float64_default() -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class OracleHost(nn.Module):
    """What LibMTL 1.1.5's weightings read from their ``MTLmodel``, around one shared θ."""

    def __init__(self, task_num: int, dim: int, rep_grad: bool = False) -> None:
        super().__init__()
        self.task_num = task_num
        self.task_name = [f"t{i}" for i in range(task_num)]
        self.device = torch.device("cpu")
        self.rep_grad = rep_grad
        # θ > 0 so that GradDrop's sign(input) is +1 (its representation is θ).
        self.theta = nn.Parameter(torch.ones(dim, dtype=torch.float64))
        self.epoch = 0
        self.train_loss_buffer = np.zeros((task_num, 1))

    def get_share_params(self):
        return [self.theta]

    def zero_grad_share_params(self) -> None:
        if self.theta.grad is not None:
            self.theta.grad.zero_()

    def task_losses(self, G: Tensor, offsets: Sequence[float]) -> Tensor:
        """``L_i = offset_i + G_i·(θ − θ₀)``; with ``rep_grad`` through LibMTL's
        ``rep``/``rep_tasks`` (the detached copies its representation gradients come from)."""
        offsets_t = torch.as_tensor(offsets, dtype=torch.float64)
        if not self.rep_grad:
            return offsets_t + G @ (self.theta - self.theta.detach())
        self.rep = self.theta.unsqueeze(0)  # [batch 1, D]
        self.rep_tasks = {}
        losses = []
        for i, task in enumerate(self.task_name):
            rep_task = self.rep.detach().clone().requires_grad_(True)
            self.rep_tasks[task] = rep_task
            losses.append(offsets_t[i] + (rep_task - rep_task.detach()).sum(0) @ G[i])
        return torch.stack(losses)


def libmtl_model(name: str, task_num: int, dim: int, rep_grad: bool = False) -> nn.Module:
    """LibMTL 1.1.5's weighting ``name`` mixed into :class:`OracleHost` (``init_param`` run)."""
    weighting = getattr(libmtl_weighting_module(), name)
    model_class = type(f"Oracle{name}", (OracleHost, weighting), {})
    with float64_default():
        model = model_class(task_num, dim, rep_grad)
        model.init_param()
    return model


def libmtl_step(model: nn.Module, G: Tensor, offsets: Sequence[float], **weight_args: Any) -> tuple[Optional[np.ndarray], Tensor]:
    """One LibMTL ``backward``: returns (its returned weights, θ's gradient = the update)."""
    model.theta.grad = None
    with float64_default():
        losses = model.task_losses(G.to(torch.float64), offsets)
        weights = model.backward(losses, **weight_args)
    grad = model.theta.grad.detach().clone()
    return (None if weights is None else np.asarray(weights, dtype=np.float64)), grad
