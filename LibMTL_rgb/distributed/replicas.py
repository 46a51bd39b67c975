"""The ``--distributed_check`` debug option: checksums of every tensor compared across processes."""
from __future__ import annotations

import hashlib
from typing import Any, Mapping, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.distributed.process_group import is_active, rank, world_size


def state_digests(model: nn.Module, extra: Optional[Mapping[str, Any]] = None) -> dict[str, str]:
    """SHA-1 of the bytes of every parameter, buffer (weighting state included: RGB's EMA and
    step counter, FAMO's logits...) and of ``extra`` arrays (e.g. DWA's ``train_loss_buffer``)."""
    digests = {}
    items = list(model.state_dict().items()) + list((extra or {}).items())
    for name, value in items:
        if value is None:
            continue
        if isinstance(value, Tensor):
            data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        else:
            data = np.ascontiguousarray(value).tobytes()
        digests[name] = hashlib.sha1(data).hexdigest()
    return digests


def check_replicas(model: nn.Module, extra: Optional[Mapping[str, Any]] = None) -> None:
    """Raise ``RuntimeError`` naming the first tensor whose bytes differ between processes
    (the ``--distributed_check`` debug option; one host copy of the model per call)."""
    if not is_active() or world_size() == 1:
        return
    local = state_digests(model, extra)
    gathered: list[Optional[dict[str, str]]] = [None] * world_size()
    dist.all_gather_object(gathered, local)
    for name, digest in local.items():
        differing = [r for r, other in enumerate(gathered) if other.get(name) != digest]
        if differing:
            raise RuntimeError(f"distributed replicas diverged: {name!r} differs between rank {rank()} and rank(s) {differing}")
