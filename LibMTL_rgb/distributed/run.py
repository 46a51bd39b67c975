"""``DistributedRun``: the calls the ``Trainer`` makes at each point of its loop, and
``--sync_bn``."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.distributed.accumulators import reduce_meter
from LibMTL_rgb.distributed.collectives import broadcast_model, share_rng_state
from LibMTL_rgb.distributed.data import set_epoch, shard_loaders
from LibMTL_rgb.distributed.gradients import average_norm_statistics, average_remaining_grads, global_losses
from LibMTL_rgb.distributed.process_group import describe, is_active, is_main_process, shared_seed, world_size
from LibMTL_rgb.distributed.replicas import check_replicas


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``--sync_bn``: BatchNorm → SyncBatchNorm (statistics over the global batch). PyTorch's
    SyncBatchNorm synchronises on GPUs only, so a multi-process CPU run refuses it."""
    if is_active() and world_size() > 1 and device.type == "cpu":
        raise ValueError("--sync_bn needs CUDA: PyTorch's SyncBatchNorm does not synchronise CPU tensors; "
                         "drop --sync_bn on CPU (each process then normalises with its own shard's statistics)")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


class DistributedRun:
    """What the ``Trainer`` calls at each point of its loop; every method is a no-op (or the
    identity) in a single process. Options (Trainer kwargs / flags): ``sync_bn``,
    ``distributed_check`` (compare replica checksums after every step)."""

    def __init__(self, device: torch.device, sync_bn: bool = False, check: bool = False) -> None:
        self.device = device
        self.sync_bn = sync_bn
        self.check = check
        self.active = is_active()
        self.is_main = is_main_process()
        self._seed: Optional[int] = None

    @classmethod
    def from_kwargs(cls, kwargs: dict, device: torch.device) -> "DistributedRun":
        """Pop ``sync_bn`` and ``distributed_check`` from the Trainer's kwargs."""
        return cls(device, bool(kwargs.pop("sync_bn", False)), bool(kwargs.pop("distributed_check", False)))

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """SyncBatchNorm when asked; rank 0's weights everywhere; one log line with the world size."""
        if self.sync_bn:
            model = convert_sync_batchnorm(model, self.device)
        if self.active:
            broadcast_model(model)
            if self.is_main:
                print(f"Distributed data parallel: {describe()}; per-task gradients averaged before the weighting",
                      flush=True)
        return model

    def shard(self, dataloaders: Any, train: bool) -> Any:
        if not self.active:
            return dataloaders
        if train and self._seed is None:
            self._seed = shared_seed()
        return shard_loaders(dataloaders, train, self._seed or 0)

    def begin_epoch(self, dataloaders: Any, epoch: int) -> None:
        if self.active:
            set_epoch(dataloaders, epoch)

    def before_backward(self, losses: Tensor) -> Tensor:
        """Global loss values for the weighting; rank 0's generator state everywhere."""
        if not self.active:
            return losses
        share_rng_state(self.device)
        return global_losses(losses)

    def after_backward(self, model: nn.Module) -> None:
        if self.active:
            average_remaining_grads(model)

    def after_step(self, model: nn.Module) -> None:
        if self.active:
            average_norm_statistics(model)
        if self.active and self.check:
            check_replicas(model, {"train_loss_buffer": getattr(model, "train_loss_buffer", None)})

    def reduce_meter(self, meter: Any) -> None:
        if self.active:
            reduce_meter(meter, self.device)
