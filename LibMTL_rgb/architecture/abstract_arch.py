"""``AbsArchitecture``: LibMTL's architecture contract.

An architecture owns the encoder(s) and the per-task decoders, defines which parameters are
*shared* (``get_share_params``: what gradient-balancing weightings such as RGB act on), and,
with ``rep_grad=True``, exposes the representation each task reads (``rep`` / ``rep_tasks``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.architecture._common import selected_tasks
from LibMTL_rgb.registry import Hyperparameter


class AbsArchitecture(nn.Module):
    """Base class of MTL architectures (LibMTL signature).

    Args:
        task_name: the task names, in order.
        encoder_class: a zero-argument callable building the shared encoder.
        decoders: ``nn.ModuleDict`` of one decoder per task.
        rep_grad: keep per-task copies of the representation for representation gradients.
        multi_input: each task has its own input batch (``forward(x, task_name)``).
        device: the model's device.
        **kwargs: architecture options (``arch_args``).
    """

    hyperparameters: tuple[Hyperparameter, ...] = ()
    #: Whether each task may bring its own input batch (``multi_input=True``).
    supports_multi_input: bool = True

    def __init__(
        self,
        task_name: list[str],
        encoder_class: Callable[[], nn.Module],
        decoders: nn.ModuleDict,
        rep_grad: bool,
        multi_input: bool,
        device: "torch.device | str",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.task_name = list(task_name)
        self.task_num = len(self.task_name)
        self.encoder_class = encoder_class
        if not isinstance(decoders, nn.ModuleDict):
            decoders = nn.ModuleDict(decoders)
        missing = [t for t in self.task_name if t not in decoders]
        if missing:
            raise ValueError(f"decoders has no entry for task(s) {missing}; it has {list(decoders.keys())}")
        self.decoders = decoders
        self.rep_grad = rep_grad
        self.multi_input = multi_input
        self.device = torch.device(device)
        self.kwargs = kwargs
        if self.rep_grad:
            self.rep_tasks: dict[str, Tensor] = {}
            self.rep: "dict[str, Tensor] | Tensor" = {}

    def forward(self, inputs: Tensor, task_name: Optional[str] = None) -> dict[str, Tensor]:
        """Encode ``inputs`` and decode for every task (or only ``task_name``)."""
        out = {}
        s_rep = self.encoder(inputs)
        same_rep = not isinstance(s_rep, list) and not self.multi_input
        wanted = selected_tasks(self.task_name, task_name)
        for tn, task in enumerate(self.task_name):
            if task not in wanted:
                continue
            ss_rep = s_rep[tn] if isinstance(s_rep, list) else s_rep
            ss_rep = self._prepare_rep(ss_rep, task, same_rep)
            out[task] = self.decoders[task](ss_rep)
        return out

    def get_share_params(self) -> Iterator[nn.Parameter]:
        """The shared parameters (by default: the encoder's)."""
        return self.encoder.parameters()

    def zero_grad_share_params(self) -> None:
        """Zero the shared parameters' gradients in place."""
        for param in self.get_share_params():
            if param.grad is not None:
                param.grad.zero_()

    def _prepare_rep(self, rep: Tensor, task: str, same_rep: Optional[bool] = None) -> Tensor:
        if self.rep_grad:
            if not same_rep:
                self.rep[task] = rep
            else:
                self.rep = rep
            self.rep_tasks[task] = rep.detach().clone()
            self.rep_tasks[task].requires_grad = True
            return self.rep_tasks[task]
        return rep
