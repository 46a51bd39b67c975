"""Each process's share of the data: ``DistributedSampler`` (or ``SeededSampler.shard``) for
training, whole single-process batches dealt out for evaluation; and the loader contract
(:data:`LOADER_CONTRACT`) that sharding, epoch seeding and resume rely on."""
from __future__ import annotations

import math
from itertools import islice
from typing import Any, Mapping

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler

from LibMTL_rgb.distributed.process_group import is_active, rank, world_size
from LibMTL_rgb.distributed.seeds import SeededSampler


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


def wrapped_loader(loader: Any) -> DataLoader:
    """The ``torch.utils.data.DataLoader`` under ``loader`` (itself, or what its wrappers wrap,
    followed through their ``wrapped_loader`` attributes); ``TypeError`` naming the contract when
    there is none."""
    seen = loader
    while not isinstance(seen, DataLoader):
        inner = getattr(seen, "wrapped_loader", None)
        if inner is None or not callable(getattr(seen, "with_loader", None)):
            raise TypeError(f"cannot shard a {type(loader).__module__}.{type(loader).__qualname__} across processes: "
                            f"{LOADER_CONTRACT}")
        seen = inner
    return seen


#: What the Trainer needs of a loader to shard it, seed its epochs and resume it (docs/distributed.md).
LOADER_CONTRACT = ("a loader must be a torch.utils.data.DataLoader (any subclass, e.g. PyG's) or a wrapper with a "
                   "`wrapped_loader` attribute (the loader it wraps) and a `with_loader(loader)` method (the same "
                   "wrapper around another loader), as LibMTL_rgb_examples.task_columns.TaskColumnLoader")


def shard_loader(loader: Any, train: bool, seed: int = 0) -> Any:
    """This process's part of ``loader`` (see :data:`LOADER_CONTRACT`; a wrapper is rebuilt
    around its wrapped loader's part): for training, a ``SeededSampler``'s :meth:`shard` when
    the loader has one (``seeds.seeded_loader``), else a ``DistributedSampler`` (shuffled when
    ``loader`` was; ``seed``); ``--bs`` is per process and ``drop_last`` as ``loader`` has it. For
    evaluation, :class:`StridedBatches`. Loaders already sharded, and everything without a
    process group, are returned unchanged; a loader outside the contract raises ``TypeError``."""
    if not is_active():
        return loader
    if not isinstance(loader, DataLoader):
        wrapped_loader(loader)  # raises outside the contract
        return loader.with_loader(shard_loader(loader.wrapped_loader, train, seed))
    if isinstance(loader.dataset, IterableDataset):
        raise ValueError("distributed training needs map-style datasets: an IterableDataset cannot be split "
                         "across processes by the Trainer (split it yourself per rank)")
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler) or isinstance(loader.batch_sampler, StridedBatches) or \
            (isinstance(sampler, SeededSampler) and sampler.world > 1):
        return loader
    common = dict(num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                  timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                  generator=loader.generator if loader.generator is not None else torch.Generator().manual_seed(seed),
                  multiprocessing_context=loader.multiprocessing_context, persistent_workers=loader.persistent_workers)
    if loader.num_workers > 0:
        common["prefetch_factor"] = loader.prefetch_factor
    if train and loader.batch_size is not None:
        if isinstance(sampler, SeededSampler):
            sampler = sampler.shard(rank(), world_size())
        else:
            sampler = DistributedSampler(loader.dataset, shuffle=isinstance(sampler, RandomSampler),
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
    """``set_epoch(epoch)`` on the sampler of every loader (through its wrappers) that has one
    (``DistributedSampler``, ``SeededSampler``): that epoch's shuffle and sample seeds."""
    loaders = dataloaders.values() if isinstance(dataloaders, Mapping) else [dataloaders]
    for loader in loaders:
        try:
            inner = wrapped_loader(loader)
        except TypeError:
            continue
        set_sampler_epoch = getattr(getattr(inner, "sampler", None), "set_epoch", None)
        if callable(set_sampler_epoch):
            set_sampler_epoch(epoch)
