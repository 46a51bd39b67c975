"""``DistributedRun``: data-parallel training as a ``Callback`` on the Trainer's step protocol,
and ``--sync_bn``."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.callbacks import Callback
from LibMTL_rgb.distributed.accumulators import reduce_meter
from LibMTL_rgb.distributed.collectives import broadcast_model
from LibMTL_rgb.distributed.data import set_epoch, shard_loaders
from LibMTL_rgb.distributed.gradients import average_norm_statistics, average_remaining_grads, global_losses
from LibMTL_rgb.distributed.process_group import describe, is_active, is_main_process, rank, shared_seed, world_size
from LibMTL_rgb.distributed.seeds import MAIN_STREAM, SharedStream, derive_seed, seed_process
from LibMTL_rgb.distributed.replicas import check_replicas


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``--sync_bn``: BatchNorm → SyncBatchNorm (statistics over the global batch). PyTorch's
    SyncBatchNorm synchronises on GPUs only, so a multi-process CPU run refuses it."""
    if is_active() and world_size() > 1 and device.type == "cpu":
        raise ValueError("--sync_bn needs CUDA: PyTorch's SyncBatchNorm does not synchronise CPU tensors; "
                         "drop --sync_bn on CPU (each process then normalises with its own shard's statistics)")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


class DistributedRun(Callback):
    """Data-parallel training as a component of the Trainer's step protocol (``callbacks.py``).
    Every hook is a no-op (or the identity) in a single process, except the epoch of samplers
    that have one (``set_epoch``: ``seeds.seeded_loader``'s) and, when ``seed`` is given, the
    epoch seeding below. Options (Trainer kwargs / flags): ``sync_bn``, ``distributed_check``
    (compare replica checksums after every step), ``seed`` (derive every epoch's streams from
    it; default under torchrun: rank 0's ``torch.initial_seed()``; in one process: off, so a
    plain run draws LibMTL's single stream).

    Hooks: ``transform_loaders`` shards (``data.shard_loaders``) and sets the first epoch;
    ``on_train_epoch_start`` sets the epoch of the samplers and, under torchrun, re-seeds this
    rank's generators from ``(seed, epoch, rank)`` (dropout differs per rank, as over one
    process's batch); with a seed (always under torchrun) it re-derives the stream shared by
    every rank from ``(seed, epoch)``; ``transform_losses`` gives the
    global-batch loss values; ``on_before_backward`` enters the shared stream (a weighting's
    draws agree everywhere), ``on_after_backward`` leaves it and averages the remaining
    gradients; ``on_after_optimizer_step`` averages BatchNorm statistics (and checks replicas);
    ``on_before_scores`` reduces the meter's accumulators; ``on_exception`` marks the run failed
    so :func:`process_group.teardown` leaves without a barrier."""

    def __init__(self, device: torch.device, sync_bn: bool = False, check: bool = False,
                 seed: Optional[int] = None) -> None:
        self.device = device
        self.sync_bn = sync_bn
        self.check = check
        self.active = is_active()
        self.is_main = is_main_process()
        self.failed = False
        #: First epoch the next ``train`` runs (``on_load_checkpoint`` sets it for a resumed run).
        self.start_epoch = 0
        self._seed: Optional[int] = None if seed is None else int(seed)
        self._train_loaders: list[Any] = []
        self._shared = SharedStream()

    @classmethod
    def from_kwargs(cls, kwargs: dict, device: torch.device) -> "DistributedRun":
        """Pop ``sync_bn``, ``distributed_check`` and ``seed`` from the Trainer's kwargs."""
        seed = kwargs.pop("seed", None)
        return cls(device, bool(kwargs.pop("sync_bn", False)), bool(kwargs.pop("distributed_check", False)),
                   None if seed is None else int(seed))

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

    # ---------------------------------------------------------------- hooks
    def transform_model(self, trainer: Any, model: nn.Module) -> nn.Module:
        """(:meth:`prepare_model`) At the Trainer's construction."""
        return self.prepare_model(model)

    def transform_loaders(self, trainer: Any, loaders: Any, train: bool) -> Any:
        """Training loaders: this rank's shard, set to the first epoch to train (a resumed
        run's iterator is created before ``on_train_epoch_start``); evaluation: this rank's
        whole batches."""
        return self.shard(loaders, train, int(getattr(trainer, "start_epoch", 0)))

    def on_train_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.begin_epoch(None, epoch)

    def transform_losses(self, trainer: Any, losses: Any) -> Any:
        """The global-batch loss values (``[T]``, or a tuple of them for a weighting that takes
        several batches a step), with the local losses' gradient."""
        if not self.active:
            return losses
        if isinstance(losses, tuple):
            return tuple(global_losses(sample) for sample in losses)
        return global_losses(losses)

    def on_before_backward(self, trainer: Any, losses: Tensor) -> None:
        self._shared.enter()

    def on_after_backward(self, trainer: Any) -> None:
        self.after_backward(trainer.model)

    def on_train_batch_start(self, trainer: Any, epoch: int, batch: int) -> None:
        self._shared.leave()  # a backward that raised (--nonfinite skip) left the shared stream entered

    def on_after_optimizer_step(self, trainer: Any) -> None:
        self.after_step(trainer.model)

    def on_before_scores(self, trainer: Any, mode: str) -> None:
        """Before ``meter.get_score()`` ('train', 'val', 'test'): the epoch's accumulators of
        every rank summed/gathered, so scores equal a single-process run."""
        self.reduce_meter(trainer.meter)

    def on_load_checkpoint(self, trainer: Any, state: dict[str, Any]) -> None:
        """A resumed run starts after the checkpoint's epoch (its loaders' first epoch)."""
        if "epoch" in state:
            self.start_epoch = int(state["epoch"]) + 1

    def on_exception(self, trainer: Any, error: BaseException) -> None:
        self._shared.leave()
        self.failed = True

    # ------------------------------------------ the calls of the Trainer before the hooks
    def shard(self, dataloaders: Any, train: bool, start_epoch: Optional[int] = None) -> Any:
        """(``transform_loaders``) This process's part of ``dataloaders``; training loaders are
        set to ``start_epoch`` (default :attr:`start_epoch`)."""
        start_epoch = self.start_epoch if start_epoch is None else start_epoch
        if train:
            if self.active and self._seed is None:
                self._seed = shared_seed()
            self._train_loaders = [dataloaders]  # this train()'s loaders (set_epoch each epoch)
            set_epoch(dataloaders, start_epoch)
        if not self.active:
            return dataloaders
        sharded = shard_loaders(dataloaders, train, self._seed or 0)
        if train:
            self._train_loaders[-1] = sharded
            set_epoch(sharded, start_epoch)
        return sharded

    def begin_epoch(self, dataloaders: Any, epoch: int) -> None:
        """(``on_train_epoch_start``) The epoch of the training loaders; under torchrun, this
        rank's generators from ``(seed, epoch, rank)``; with a seed (always under torchrun), the
        shared stream from ``(seed, epoch)``. A single process's global stream is left alone
        (``--resume`` restores it; re-seeding it would make a plain loader's iterator, which
        draws from it when created, depend on when that happens)."""
        for loaders in self._train_loaders + ([dataloaders] if dataloaders is not None else []):
            set_epoch(loaders, epoch)
        self._shared.leave()
        if self._seed is None:
            return
        if self.active:  # one process keeps its single stream, which a resume restores exactly
            seed_process(derive_seed(self._seed, MAIN_STREAM, epoch, rank()))
        self._shared.reset(self._seed, epoch)

    def before_backward(self, losses: Tensor) -> Tensor:
        """(``transform_losses`` + ``on_before_backward``) Global loss values for the weighting,
        the shared stream entered."""
        self._shared.enter()
        return global_losses(losses) if self.active else losses

    def after_backward(self, model: nn.Module) -> None:
        """(``on_after_backward``) The rank's own stream back; every other gradient averaged."""
        self._shared.leave()
        if self.active:
            average_remaining_grads(model)

    def after_step(self, model: nn.Module) -> None:
        """(``on_after_optimizer_step``)"""
        if self.active:
            average_norm_statistics(model)
        if self.active and self.check:
            check_replicas(model, {"train_loss_buffer": getattr(model, "train_loss_buffer", None)})

    def reduce_meter(self, meter: Any) -> None:
        """(``on_before_scores``)"""
        if self.active:
            reduce_meter(meter, self.device)
