"""Time one training step of the bilevel methods (MOML, FORUM, AutoLambda) against EW's on a
small ResNet (HPS, 3 tasks, random images), as the Trainer runs them; prints ratios to EW.

    python benchmarks/bilevel_step.py
    python benchmarks/bilevel_step.py --batch 16 --width 16 --device cuda

A bilevel step does extra forward/backward passes (virtual or inner steps, a meta batch), so
its cost is a multiple of EW's; MOML's unrolled inner steps are second order.
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from _timing import add_common_flags, describe, machine_line, markdown_table, setup_from_flags, time_interleaved
from LibMTL_rgb import Trainer
from LibMTL_rgb.loss import MSELoss
from LibMTL_rgb.metrics import L1Metric
from LibMTL_rgb.model import resnet_encoder
from LibMTL_rgb.weighting.bilevel import BilevelLoop

TASKS = ("a", "b", "c")
#: (label, weighting, weight_args)
CASES = (
    ("EW", "EW", {}),
    ("AutoLambda", "AutoLambda", {}),
    ("MOML inner_step=1", "MOML", {"inner_step": 1}),
    ("MOML inner_step=5", "MOML", {"inner_step": 5}),
    ("FORUM inner_step=5", "FORUM", {"inner_step": 5}),
)


class TaskTargets(Dataset):
    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], {t: self.targets[i, k : k + 1] for k, t in enumerate(TASKS)}


def make_step(weighting: str, weight_args: dict, args: argparse.Namespace, device: torch.device) -> Callable[[], None]:
    torch.manual_seed(args.seed)
    channels = 8 * args.width
    decoders = nn.ModuleDict({t: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1)) for t in TASKS})
    task_dict = {t: {"metrics": ["mae"], "metrics_fn": L1Metric(), "loss_fn": MSELoss(), "weight": [0]} for t in TASKS}
    trainer = Trainer(task_dict, weighting, "HPS", lambda: resnet_encoder(18, width=args.width), decoders, False, False,
                      {"optim": "sgd", "lr": 0.01, "momentum": 0.9}, device=device, weight_args=weight_args)
    gen = torch.Generator().manual_seed(args.seed)
    data = TaskTargets(torch.randn(4 * args.batch, 3, 32, 32, generator=gen), torch.randn(4 * args.batch, 3, generator=gen))
    loader, _ = trainer._prepare_dataloaders(DataLoader(data, batch_size=args.batch, shuffle=True))
    trainer.model.train()
    if getattr(trainer.model, "bilevel", False):
        loop = BilevelLoop.for_trainer(trainer, loader[0])
        return lambda: loop.step(loader)

    def ew_step() -> None:
        losses = trainer._forward_batch(loader)
        trainer.optimizer.zero_grad(set_to_none=False)
        trainer.model.backward(losses)
        trainer.optimizer.step()

    return ew_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="images per batch")
    parser.add_argument("--width", type=int, default=8, help="ResNet-18 base width (8 → 64 output channels)")
    add_common_flags(parser, repeats=5)
    args = parser.parse_args()
    device = setup_from_flags(args)
    steps = {label: make_step(weighting, options, args, device) for label, weighting, options in CASES}
    timings = time_interleaved(steps, device, args.repeats, args.warmup, desc="bilevel steps")
    print(machine_line(device))
    print(f"one training step, ResNet-18 width {args.width}, batch {args.batch} of 3x32x32, T = {len(TASKS)}")
    rows = [[label, *describe(timings, label, "EW")] for label, _, _ in CASES]
    print(markdown_table(["method", "ms / step", "spread", "× EW"], rows))


if __name__ == "__main__":
    main()
