"""Random streams derived from ``(seed, epoch, rank, ...)`` instead of from how often a process
has drawn so far, so a resumed process (``--resume``), a DataLoader worker, and every rank of a
``torchrun`` run draw what an uninterrupted run draws.

- :class:`SeededSampler` / :class:`SeededSamples` / :func:`seeded_loader`: the shuffle of epoch
  ``e`` is a function of ``(seed, e)``; each sample is read with its generators seeded from
  ``(seed, e, index)``, so an augmentation draws the same numbers for a sample whichever
  worker, rank or process reads it (persistent workers included).
- :func:`seed_process` and :class:`SharedStream`: per-rank seeds for dropout (as Lightning's
  ``seed_everything`` with rank offsets), and one stream, identical on every rank, for the
  random draws of a weighting (PCGrad's order, RLW's weights, GradDrop's mask).
"""
from __future__ import annotations

import math
import random
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

__all__ = ["derive_seed", "seed_process", "SeededSampler", "SeededSamples", "seeded_loader", "SharedStream",
           "MAIN_STREAM", "SHARED_STREAM", "SHUFFLE_STREAM", "SAMPLE_STREAM", "GENERATOR_STREAM"]

#: Stream identifiers mixed into :func:`derive_seed` (one per use, so no two uses share numbers).
MAIN_STREAM, SHARED_STREAM, SHUFFLE_STREAM, SAMPLE_STREAM, GENERATOR_STREAM = range(5)


_MASK64 = (1 << 64) - 1


def derive_seed(seed: int, *keys: int) -> int:
    """A 31-bit seed from ``seed`` and ``keys``: each word folded in by SplitMix64's mixing
    function (well mixed, cheap enough to run per sample, identical on every platform)."""
    state = int(seed) & _MASK64
    for key in keys:
        state = _splitmix64((state ^ (int(key) & _MASK64)) + 0x9E3779B97F4A7C15)
    return _splitmix64(state) >> 33


def _splitmix64(value: int) -> int:
    value &= _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def seed_process(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy and ``random`` with ``seed``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _seed_sample(seed: int) -> None:
    """Seed torch's CPU generator, numpy and ``random`` (what a sample's reading draws from)."""
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class SeededSampler(Sampler):
    """Indices of a dataset of ``length`` samples as ``(index, epoch)`` keys for
    :class:`SeededSamples`: shuffled (when ``shuffle``) by a permutation that depends on
    ``(seed, epoch)`` only. :meth:`shard` gives rank ``r`` of ``W`` the keys ``r, r + W, ...``
    of that permutation (padded with its first keys to a multiple of ``W``, as
    ``DistributedSampler``), so the union of the ranks' batches ``k`` is the single-process
    batch ``k`` of ``W`` times the size."""

    def __init__(self, length: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1) -> None:
        self.length = int(length)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = rank
        self.world = world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose permutation and sample seeds the next iteration uses."""
        self.epoch = int(epoch)

    def shard(self, rank: int, world: int) -> "SeededSampler":
        """This sampler's share for rank ``rank`` of ``world`` processes."""
        sharded = SeededSampler(self.length, self.shuffle, self.seed, rank, world)
        sharded.epoch = self.epoch
        return sharded

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, SHUFFLE_STREAM, epoch))
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        if self.world > 1:
            padded = len(self) * self.world
            order = (order * math.ceil(padded / max(1, len(order))))[:padded]
            order = order[self.rank::self.world]
        return iter([(index, epoch) for index in order])

    def __len__(self) -> int:
        return math.ceil(self.length / self.world)


class SeededSamples(Dataset):
    """``dataset`` read by ``(index, epoch)`` keys, seeded from ``(seed, epoch, index)`` before
    ``dataset[index]``: in a DataLoader worker torch, numpy and ``random``; in the main process
    (``num_workers=0``) torch's CPU generator, whose state is put back afterwards, so reading a
    sample leaves the training's random stream alone (an augmentation drawing from numpy or
    ``random`` is then exact with workers only). A plain integer index reads
    ``dataset[index]`` unseeded."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, epoch = key
        if get_worker_info() is not None:  # a worker: nothing else draws from its generators
            _seed_sample(derive_seed(self.seed, SAMPLE_STREAM, epoch, index))
            return self.dataset[index]
        # the main process (num_workers=0): torch's CPU generator only, its state put back after
        # (saving numpy's and random's 624-word states per sample would cost more than most reads)
        state = torch.get_rng_state()
        try:
            torch.default_generator.manual_seed(derive_seed(self.seed, SAMPLE_STREAM, epoch, index))
            return self.dataset[index]
        finally:
            torch.set_rng_state(state)

    def __getattr__(self, name: str) -> Any:  # the wrapped dataset's attributes (e.g. a PyG dataset's)
        if name in ("dataset", "seed"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def seeded_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, loader_class: type = DataLoader,
                  **kwargs: Any) -> DataLoader:
    """A ``loader_class`` (``torch.utils.data.DataLoader`` or a subclass such as PyG's) over
    ``dataset`` whose shuffle, augmentation and worker seeds depend on ``(seed, epoch)`` only
    (the epoch is set by ``set_epoch``, which the Trainer's ``DistributedRun`` calls at each epoch
    start): a resumed run reads exactly what an uninterrupted run reads, at any ``num_workers``.
    The loader has its own ``generator``, so creating its iterators never draws from the
    global generator. ``kwargs``: the other ``DataLoader`` arguments (``num_workers``,
    ``drop_last``, ``pin_memory``...)."""
    sampler = SeededSampler(len(dataset), shuffle, seed)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(derive_seed(seed, GENERATOR_STREAM))
    return loader_class(SeededSamples(dataset, seed), batch_size=batch_size, sampler=sampler, generator=generator,
                        **kwargs)


class SharedStream:
    """Torch/numpy/``random`` states that every rank holds identically: :meth:`enter` swaps
    them in (a weighting's draws then agree on every rank without a message), :meth:`leave`
    swaps the rank's own states back. :meth:`reset` re-derives them from ``(seed, epoch)``."""

    def __init__(self) -> None:
        self._shared: Optional[tuple[Any, ...]] = None
        self._own: Optional[tuple[Any, ...]] = None

    @property
    def entered(self) -> bool:
        return self._own is not None

    def reset(self, seed: int, epoch: int) -> None:
        own = _states()
        seed_process(derive_seed(seed, SHARED_STREAM, epoch))
        self._shared = _states()
        _set_states(own)
        self._own = None

    def enter(self) -> None:
        if self._shared is None or self._own is not None:
            return
        self._own = _states()
        _set_states(self._shared)

    def leave(self) -> None:
        if self._own is None:
            return
        self._shared = _states()
        _set_states(self._own)
        self._own = None


def _states() -> tuple[Any, ...]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), np.random.get_state(), random.getstate(), cuda


def _set_states(states: tuple[Any, ...]) -> None:
    torch.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])
    if states[3] is not None:
        torch.cuda.set_rng_state_all(states[3])
