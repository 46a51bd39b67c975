"""PyPI LibMTL 1.1.5 as an oracle on a CPU-only machine with today's torch.

Importing this module imports LibMTL (tests ``importorskip`` first). 1.1.5 needs three
things that its own code cannot provide here, none of which changes what it computes:

- ``torchvision.models.utils`` (gone since torchvision 0.13; ``LibMTL/model/resnet.py``
  imports it): a stand-in module (``ensure_torchvision_models_utils``);
- its Trainer hard-codes ``cuda:0`` and calls ``iterator.next()``: :func:`cpu_trainer_class`
  and :class:`LegacyLoader`;
- its ``AbsArchitecture.zero_grad_share_params`` calls ``encoder.zero_grad()``, which since
  torch 2.0 sets the gradients to ``None``, so its ``_reset_grad`` then fails
  (``None.data``); :func:`with_main_zero_grad` applies LibMTL main's fix
  (``zero_grad(set_to_none=False)``) while a test runs.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from LibMTL_rgb.integrations.libmtl import ensure_torchvision_models_utils

ensure_torchvision_models_utils()

import LibMTL  # noqa: E402
from LibMTL.architecture.abstract_arch import AbsArchitecture as LibMTLAbsArchitecture  # noqa: E402


class _LegacyIterator:
    def __init__(self, iterable) -> None:
        self._it = iter(iterable)

    def __next__(self):
        return next(self._it)

    next = __next__


class LegacyLoader:
    """A list of batches whose iterators also have LibMTL 1.1.5's ``.next()``."""

    def __init__(self, batches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return _LegacyIterator(self.batches)


def cpu_trainer_class() -> type:
    """LibMTL 1.1.5's Trainer, on the CPU when CUDA is absent."""
    if torch.cuda.is_available():
        return LibMTL.Trainer

    class CPUTrainer(LibMTL.Trainer):
        def _prepare_model(self, *args, **kwargs):
            self.device = torch.device("cpu")
            return super()._prepare_model(*args, **kwargs)

    return CPUTrainer


@contextlib.contextmanager
def with_main_zero_grad() -> Iterator[None]:
    """LibMTL main's ``zero_grad_share_params`` on 1.1.5's ``AbsArchitecture`` meanwhile."""
    original = LibMTLAbsArchitecture.zero_grad_share_params

    def zero_grad_share_params(self):
        self.encoder.zero_grad(set_to_none=False)

    LibMTLAbsArchitecture.zero_grad_share_params = zero_grad_share_params
    try:
        yield
    finally:
        LibMTLAbsArchitecture.zero_grad_share_params = original
