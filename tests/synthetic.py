"""A tiny synthetic multi-task regression problem for end-to-end tests (CPU, seconds)."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from LibMTL_rgb.loss import MSELoss
from LibMTL_rgb.metrics import L1Metric

IN_DIM = 8
HIDDEN = 16


class MultiTaskRegression(Dataset):
    """y_t = <a_t, x> + small noise, with related task vectors a_t (so sharing helps)."""

    def __init__(self, num_tasks: int, size: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(1234)
        base = torch.randn(IN_DIM, generator=gen)
        self.coef = base + 0.5 * torch.randn(num_tasks, IN_DIM, generator=gen)
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, IN_DIM, generator=gen)
        self.y = self.x @ self.coef.T + 0.05 * torch.randn(size, num_tasks, generator=gen)
        self.task_name = [f"t{i}" for i in range(num_tasks)]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index):
        return self.x[index], {t: self.y[index, i : i + 1] for i, t in enumerate(self.task_name)}


def task_dict(num_tasks: int) -> dict:
    return {
        f"t{i}": {"metrics": ["mae"], "metrics_fn": L1Metric(), "loss_fn": MSELoss(), "weight": [0]}
        for i in range(num_tasks)
    }


def encoder_class() -> nn.Module:
    return nn.Sequential(nn.Linear(IN_DIM, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh())


def decoders(num_tasks: int) -> nn.ModuleDict:
    return nn.ModuleDict({f"t{i}": nn.Linear(HIDDEN, 1) for i in range(num_tasks)})


def loaders(num_tasks: int, batch_size: int = 32, train_size: int = 128, test_size: int = 64, shuffle: bool = False):
    train = DataLoader(MultiTaskRegression(num_tasks, train_size, seed=0), batch_size=batch_size, shuffle=shuffle)
    test = DataLoader(MultiTaskRegression(num_tasks, test_size, seed=1), batch_size=batch_size)
    return train, test
