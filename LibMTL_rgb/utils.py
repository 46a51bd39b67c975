"""Small helpers shared by the Trainer and the examples (LibMTL names)."""
from __future__ import annotations

import os
import random
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn


def set_random_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def set_device(gpu_id: "str | int | None") -> None:
    """LibMTL's ``set_device``: expose only ``gpu_id`` to CUDA (no effect without CUDA)."""
    if gpu_id is not None and str(gpu_id) != "":
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_id)


def resolve_device(device: "str | torch.device | None" = None) -> torch.device:
    """The device to train on: ``device`` if given, else ``cuda:0`` when CUDA works, else CPU."""
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device} was asked for but CUDA is not available here; use 'cpu'")
        return device
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def count_improvement(
    base_result: Mapping[str, Sequence[float]],
    new_result: Mapping[str, Sequence[float]],
    weight: Mapping[str, Sequence[int]],
) -> float:
    """LibMTL's improvement of ``new_result`` over ``base_result`` (a fraction, higher is better).

    For each task, the mean over its metrics of ``sign * (new - base) / base`` with sign +1 when
    ``weight`` says higher is better (1) and -1 otherwise (0); then the mean over tasks. It is
    ``-Δm% / 100`` of the paper's section 3.1 when ``base_result`` is the STL result.
    """
    total = 0.0
    for task, base in base_result.items():
        base_arr = np.asarray(base, dtype=float)
        new_arr = np.asarray(new_result[task], dtype=float)
        sign = np.where(np.asarray(weight[task]) == 1, 1.0, -1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = sign * (new_arr - base_arr) / base_arr
        total += float(np.nanmean(np.where(np.isfinite(rel), rel, np.nan))) if np.isfinite(rel).any() else 0.0
    return total / max(len(base_result), 1)
