"""Every registered architecture × every registered weighting, through the real Trainer.

Pairs meant to work train two steps of a tiny model with finite losses and weights and move
the shared parameters, which stay finite; pairs not meant to work (a weighting without ``supports_rep_grad`` and
``rep_grad=True``; an architecture without ``supports_multi_input`` and ``multi_input=True``)
fail at construction with the documented error. Both registries are read at collection time,
so methods added later are covered without editing this file.
"""
import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from LibMTL_rgb import Trainer
from LibMTL_rgb.loss import MSELoss
from LibMTL_rgb.metrics import L1Metric
from LibMTL_rgb.registry import ARCHITECTURES, WEIGHTINGS
from test_architectures import arch_args

TASKS = ["a", "b"]
IMG = (3, 8, 8)
REP_GRAD_ERROR = "cannot run with rep_grad=True"
MULTI_INPUT_ERROR = "multi_input=True is not supported"


class TinyConvEncoder(nn.Module):
    """Two conv stages (the ``stages`` protocol of MTAN / Cross_stitch / PLE): 3x8x8 -> 8x2x2."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.Tanh()),
        ])

    def forward(self, x):
        for stage in self.stages:
            x = stage(x)
        return x


def decoders() -> nn.ModuleDict:
    return nn.ModuleDict({t: nn.Sequential(nn.Flatten(), nn.Linear(32, 1)) for t in TASKS})


class ImageRegression(Dataset):
    """Related linear targets of the channel/quadrant means of random images."""

    def __init__(self, size: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, *IMG, generator=gen)
        pooled = nn.functional.avg_pool2d(self.x, 4).flatten(1)  # [N, 12]
        coef = torch.randn(12, generator=gen) + 0.5 * torch.randn(len(TASKS), 12, generator=gen)
        self.y = pooled @ coef.T

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], {t: self.y[i, k : k + 1] for k, t in enumerate(TASKS)}


class SingleTaskView(Dataset):
    """One task's (input, target) pairs, as multi_input dataloaders yield them."""

    def __init__(self, data: ImageRegression, task: str) -> None:
        self.data, self.task = data, task

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        x, y = self.data[i]
        return x, y[self.task]


def loader(size: int, multi_input: bool, batch_size: int = 4):
    data = ImageRegression(size)
    if multi_input:
        return {t: DataLoader(SingleTaskView(data, t), batch_size=batch_size) for t in TASKS}
    return DataLoader(data, batch_size=batch_size)


def task_dict() -> dict:
    return {t: {"metrics": ["mae"], "metrics_fn": L1Metric(), "loss_fn": MSELoss(), "weight": [0]} for t in TASKS}


def make_trainer(arch: str, weighting: str, rep_grad: bool = False, multi_input: bool = False, lr: float = 1e-2) -> Trainer:
    return Trainer(
        task_dict(), weighting, arch, TinyConvEncoder, decoders(), rep_grad, multi_input,
        {"optim": "adam", "lr": lr}, device="cpu", arch_args=arch_args(arch, TASKS, IMG),
    )


def expected_error(arch: str, weighting: str, rep_grad: bool, multi_input: bool):
    if rep_grad and not WEIGHTINGS.get(weighting).supports_rep_grad:
        return REP_GRAD_ERROR
    if multi_input and not getattr(ARCHITECTURES.get(arch), "supports_multi_input", True):
        return MULTI_INPUT_ERROR
    return None


def check_two_steps(arch: str, weighting: str, rep_grad: bool, multi_input: bool) -> None:
    torch.manual_seed(0)
    error = expected_error(arch, weighting, rep_grad, multi_input)
    if error is not None:
        with pytest.raises(ValueError, match=error):
            make_trainer(arch, weighting, rep_grad, multi_input)
        return
    trainer = make_trainer(arch, weighting, rep_grad, multi_input)
    before = [p.detach().clone() for p in trainer.model.get_share_params()]
    weights = trainer.train(loader(8, multi_input), loader(4, multi_input), epochs=1, return_weight=True)
    assert torch.isfinite(torch.as_tensor(trainer.model.train_loss_buffer)).all()
    assert torch.isfinite(torch.as_tensor(weights)).all()
    after = [p.detach() for p in trainer.model.get_share_params()]
    assert all(torch.isfinite(p).all() for p in after), f"{weighting} on {arch}: non-finite shared parameters"
    moved = [not torch.equal(b, p) for b, p in zip(before, after)]
    assert any(moved), f"{weighting} on {arch} (rep_grad={rep_grad}) did not update the shared parameters"


@pytest.mark.parametrize("rep_grad", [False, True], ids=["param_grad", "rep_grad"])
@pytest.mark.parametrize("weighting", WEIGHTINGS.names())
@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_pair_trains_or_refuses_at_construction(arch, weighting, rep_grad):
    check_two_steps(arch, weighting, rep_grad, multi_input=False)


@pytest.mark.parametrize("weighting", ["EW", "RGB"])
@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_multi_input_trains_or_refuses_at_construction(arch, weighting):
    check_two_steps(arch, weighting, rep_grad=False, multi_input=True)


def eval_losses(model: nn.Module, data: ImageRegression) -> list[float]:
    model.eval()
    with torch.no_grad():
        out = model(data.x)
    return [nn.functional.mse_loss(out[t], data.y[:, k : k + 1]).item() for k, t in enumerate(TASKS)]


@pytest.mark.parametrize("arch", ["HPS", "MTAN", "MMoE"])
def test_rgb_lowers_every_task_loss(arch):
    torch.manual_seed(0)
    trainer = make_trainer(arch, "RGB")
    data = ImageRegression(32)
    initial = eval_losses(trainer.model, data)
    trainer.train(DataLoader(data, batch_size=8), DataLoader(data, batch_size=32), epochs=12)
    final = eval_losses(trainer.model, data)
    assert all(math.isfinite(v) for v in final)
    assert all(f < 0.5 * i for f, i in zip(final, initial)), (initial, final)
