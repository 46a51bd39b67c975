"""Data-parallel training on the step protocol: an adapter from the hooks of ``callbacks.py``
to ``distributed.DistributedRun``'s calls (each a no-op in one process).

The hook each call belongs to: ``transform_model`` = ``prepare_model`` (SyncBatchNorm, rank
0's weights); ``transform_loaders`` = ``shard``; ``on_train_epoch_start`` = ``begin_epoch``
(the samplers' epoch); ``transform_losses`` = ``before_backward`` (global loss values);
``on_after_backward`` = ``after_backward`` (average what the weighting left per process);
``on_after_optimizer_step`` = ``after_step``; ``on_before_scores`` = ``reduce_meter`` (the
meter's records summed over processes before scores are computed). When ``DistributedRun``
itself becomes a ``Callback`` on these hook names, this adapter goes.
"""
from __future__ import annotations

from typing import Any

import torch

from LibMTL_rgb.callbacks import Callback
from LibMTL_rgb.distributed import DistributedRun

__all__ = ["DistributedCallback"]


class DistributedCallback(Callback):
    """``DistributedRun`` on the step protocol (options: ``sync_bn``, ``distributed_check``)."""

    def __init__(self, device: torch.device, sync_bn: bool = False, check: bool = False) -> None:
        self.run = DistributedRun(device, sync_bn, check)
        self.active = self.run.active
        self.is_main = self.run.is_main
        self._train_loaders: Any = None

    def transform_model(self, trainer: Any, model: Any) -> Any:
        return self.run.prepare_model(model)

    def transform_loaders(self, trainer: Any, loaders: Any, train: bool) -> Any:
        sharded = self.run.shard(loaders, train=train)
        if train:
            self._train_loaders = sharded
        return sharded

    def on_train_epoch_start(self, trainer: Any, epoch: int) -> None:
        if self._train_loaders is not None:
            self.run.begin_epoch(self._train_loaders, epoch)

    def transform_losses(self, trainer: Any, losses: Any) -> Any:
        if isinstance(losses, tuple):
            return tuple(self.run.before_backward(sample) for sample in losses)
        return self.run.before_backward(losses)

    def on_after_backward(self, trainer: Any) -> None:
        self.run.after_backward(trainer.model)

    def on_after_optimizer_step(self, trainer: Any) -> None:
        self.run.after_step(trainer.model)

    def on_before_scores(self, trainer: Any, mode: str) -> None:
        self.run.reduce_meter(trainer.meter)
