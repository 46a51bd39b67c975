"""Cost of the Trainer's step protocol and non-finite guard (``LibMTL_rgb/nonfinite.py``): one
training step (forward, weighting backward, optimizer step) as the loop runs it
(``Trainer.training_step``: every hook of the default components, the guard's two checks —
losses before the backward, every parameter's gradient after it) against the same step
without hooks or checks; and the same with ``nonfinite='skip'`` (the step snapshot of the
buffers and the meter's records taken before each batch).

    python benchmarks/nonfinite_overhead.py                  # CPU, a 30-layer MLP (60 parameter tensors)
    python benchmarks/nonfinite_overhead.py --device cuda --layers 60

Prints the median step times and the ratios (hooked / bare, hooked with skip / bare) per weighting.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from _timing import add_common_flags, machine_line, markdown_table, milliseconds, setup_from_flags, time_interleaved
from LibMTL_rgb import Trainer
from LibMTL_rgb.loss import MSELoss
from LibMTL_rgb.metrics import L1Metric


def make_trainer(weighting: str, layers: int, width: int, tasks: int, device: torch.device,
                 nonfinite: str = "raise") -> Trainer:
    def encoder() -> nn.Module:
        return nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(width, width), nn.ReLU())])

    task_dict = {f"t{i}": {"metrics": ["mae"], "metrics_fn": L1Metric(), "loss_fn": MSELoss(), "weight": [0]}
                 for i in range(tasks)}
    decoders = nn.ModuleDict({t: nn.Linear(width, 1) for t in task_dict})
    return Trainer(task_dict, weighting, "HPS", encoder, decoders, False, False, {"optim": "adam", "lr": 1e-4},
                   device=device, grad_method="loop" if device.type == "cpu" else "auto", nonfinite=nonfinite)


def step(trainer: Trainer, loader: list, guarded: bool) -> None:
    if guarded:  # what the loop does per batch: the batch-start hook, then the hooked, checked step
        trainer._call("on_train_batch_start", 0, 0)
        trainer.training_step(loader, 0, 0)
        return
    losses = trainer._forward_batch(loader)
    trainer.optimizer.zero_grad(set_to_none=False)
    trainer.model.backward(losses, **trainer.kwargs["weight_args"])
    trainer.optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser, repeats=30, warmup=3)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--weightings", nargs="+", default=["EW", "RGB"])
    args = parser.parse_args()
    device = setup_from_flags(args)
    print(machine_line(device))
    x = torch.randn(args.batch * 4, args.width)
    labels = {f"t{i}": torch.randn(len(x), 1) for i in range(args.tasks)}
    dataset = TensorDataset(x, *labels.values())
    rows = []
    for weighting in args.weightings:
        trainer = make_trainer(weighting, args.layers, args.width, args.tasks, device)
        skipping = make_trainer(weighting, args.layers, args.width, args.tasks, device, nonfinite="skip")
        batches = DataLoader(dataset, batch_size=args.batch)
        pairs = [(xb, dict(zip(labels, ys))) for xb, *ys in batches]
        loader = [pairs, iter(pairs * 10**6)]
        trainer.model.train()
        skipping.model.train()
        timings = time_interleaved({"guarded": lambda: step(trainer, loader, True),
                                    "skip": lambda: step(skipping, loader, True),
                                    "unguarded": lambda: step(trainer, loader, False)},
                                   device, args.repeats, args.warmup, desc=weighting)
        guarded, skip, unguarded = (timings[k].median for k in ("guarded", "skip", "unguarded"))
        rows.append([weighting, milliseconds(unguarded), milliseconds(guarded), f"{guarded / unguarded:.3f}",
                     milliseconds(skip), f"{skip / unguarded:.3f}"])
    print(markdown_table(["weighting", "bare step (ms)", "hooked step (ms)", "ratio", "hooked, skip mode (ms)", "ratio"],
                         rows))


if __name__ == "__main__":
    main()
