"""Each process's share of the data: ``DistributedSampler`` for training, whole single-process
batches dealt out for evaluation."""
from __future__ import annotations

import math
from itertools import islice
from typing import Any, Mapping

from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler

from LibMTL_rgb.distributed.process_group import is_active, rank, world_size


class StridedBatches(Sampler):
    """The batches ``rank, rank + W, rank + 2W, ...`` of a single-process batch sampler: each
    evaluation batch is exactly one batch of the single-process run, none duplicated or dropped
    (ranks may get one batch fewer)."""

    def __init__(self, batch_sampler: Sampler, rank_: int, world: int) -> None:
        self.batch_sampler = batch_sampler
        self.rank = rank_
        self.world = world

    def __iter__(self):
        return islice(iter(self.batch_sampler), self.rank, None, self.world)

    def __len__(self) -> int:
        return max(0, math.ceil((len(self.batch_sampler) - self.rank) / self.world))


def shard_loader(loader: DataLoader, train: bool, seed: int = 0) -> DataLoader:
    """This process's part of ``loader``: for training, a ``DistributedSampler`` (shuffled when
    ``loader`` was; ``--bs`` is per process) with ``drop_last`` as ``loader`` has it; for
    evaluation, :class:`StridedBatches`. Loaders already sharded, and everything without a
    process group, are returned unchanged."""
    if not is_active() or not isinstance(loader, DataLoader):
        return loader
    if isinstance(loader.dataset, IterableDataset):
        raise ValueError("distributed training needs map-style datasets: an IterableDataset cannot be split "
                         "across processes by the Trainer (split it yourself per rank)")
    if isinstance(loader.sampler, DistributedSampler) or isinstance(loader.batch_sampler, StridedBatches):
        return loader
    common = dict(num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                  timeout=loader.timeout, worker_init_fn=loader.worker_init_fn, generator=loader.generator,
                  multiprocessing_context=loader.multiprocessing_context, persistent_workers=loader.persistent_workers)
    if loader.num_workers > 0:
        common["prefetch_factor"] = loader.prefetch_factor
    if train and loader.batch_size is not None:
        sampler = DistributedSampler(loader.dataset, shuffle=isinstance(loader.sampler, RandomSampler),
                                     seed=seed, drop_last=loader.drop_last)
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last, **common)
    batches = loader.batch_sampler if loader.batch_sampler is not None else BatchSampler(loader.sampler, 1, False)
    return DataLoader(loader.dataset, batch_sampler=StridedBatches(batches, rank(), world_size()), **common)


def shard_loaders(dataloaders: Any, train: bool, seed: int = 0) -> Any:
    """:func:`shard_loader` on a loader or on each value of a dict of loaders (``multi_input``)."""
    if isinstance(dataloaders, Mapping):
        return {task: shard_loader(loader, train, seed) for task, loader in dataloaders.items()}
    return shard_loader(dataloaders, train, seed)


def set_epoch(dataloaders: Any, epoch: int) -> None:
    """``DistributedSampler.set_epoch`` on every sharded training loader (a new shuffle each epoch)."""
    loaders = dataloaders.values() if isinstance(dataloaders, Mapping) else [dataloaders]
    for loader in loaders:
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
