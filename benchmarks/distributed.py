"""Bytes communicated per training step and step time of the distributed path
(``LibMTL_rgb/distributed.py``) for 1 and 2 processes on CPU (gloo), against plain
``DistributedDataParallel`` (which all-reduces the summed gradient: D numbers per step).

    python benchmarks/distributed.py                       # T=4 tasks, MLP with D ≈ 0.2 M shared
    python benchmarks/distributed.py --tasks 11 --width 512
    python benchmarks/distributed.py --device cuda --backend nccl --world 1   # on a GPU machine

Cases (the same MLP, ``--tasks`` regression heads, per-process batch ``--batch``):
  * ``DDP EW``: ``torch.nn.parallel.DistributedDataParallel`` around the model, one
    ``sum(losses).backward()``; its bytes are counted by a communication hook;
  * ``ours EW``: a loss weighting through the Trainer's hooks (the summed shared gradient is
    averaged with the task-specific ones: D numbers, like DDP);
  * ``ours RGB`` / ``ours MGDA``: gradient methods: the [T, D_shared] matrix is averaged
    before the weighting, plus the task-specific gradients: T·D_shared + D_task numbers.

Bytes are the payload each process hands to all-reduce (a ring all-reduce moves about
2·(W−1)/W times that per process on the wire). Step times are medians of interleaved rounds;
on a machine shared with other jobs only their ratios mean something.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import machine_line, markdown_table, milliseconds, time_interleaved  # noqa: E402
from LibMTL_rgb import distributed  # noqa: E402
from LibMTL_rgb.distributed import COUNTER, DistributedRun  # noqa: E402
from LibMTL_rgb.trainer import build_mtl_model  # noqa: E402

METHODS = ("EW", "RGB", "MGDA")


def build(method: str, args: argparse.Namespace, device: torch.device) -> nn.Module:
    torch.manual_seed(args.seed)
    tasks = [f"t{i}" for i in range(args.tasks)]

    def encoder() -> nn.Module:
        return nn.Sequential(nn.Linear(args.features, args.width), nn.ReLU(), nn.Linear(args.width, args.width), nn.ReLU())

    decoders = nn.ModuleDict({t: nn.Linear(args.width, 1) for t in tasks})
    model = build_mtl_model(method, "HPS", tasks, encoder, decoders, False, False, device)
    model.grad_method = "loop" if device.type == "cpu" else "auto"
    return model


def data(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(args.seed + distributed.rank())
    x = torch.randn(args.batch, args.features, generator=gen)
    y = torch.randn(args.batch, args.tasks, generator=gen)
    return x.to(device), y.to(device)


def ours_step(method: str, args: argparse.Namespace, device: torch.device) -> Callable[[], None]:
    model = build(method, args, device)
    hooks = DistributedRun(device)
    hooks.prepare_model(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = data(args, device)

    def step() -> None:
        out = model(x)
        losses = torch.stack([((out[t].squeeze(1) - y[:, i]) ** 2).mean() for i, t in enumerate(model.task_name)])
        losses = hooks.before_backward(losses)
        optimizer.zero_grad(set_to_none=False)
        model.backward(losses)
        hooks.after_backward(model)
        optimizer.step()

    return step


def ddp_step(args: argparse.Namespace, device: torch.device, sent: list[int]) -> Callable[[], None]:
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    model = build("EW", args, device)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def counting_hook(state, bucket):
        sent[0] += bucket.buffer().numel() * bucket.buffer().element_size()
        return allreduce_hook(state, bucket)

    ddp.register_comm_hook(dist.group.WORLD, counting_hook)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-3)
    x, y = data(args, device)

    def step() -> None:
        out = ddp(x)
        loss = sum(((out[t].squeeze(1) - y[:, i]) ** 2).mean() for i, t in enumerate(model.task_name))
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()

    return step


def measure(rank: int, world: int, args: argparse.Namespace, init_file: str, out_file: str) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device if args.device != "cuda" else f"cuda:{rank}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(args.backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cases: dict[str, Callable[[], None]] = {}
        bytes_per_step: dict[str, float] = {}
        ddp_sent = [0]
        cases["DDP EW"] = ddp_step(args, device, ddp_sent)
        for method in METHODS:
            cases[f"ours {method}"] = ours_step(method, args, device)
        # bytes of one step of each case, counted separately
        for name, step in cases.items():
            COUNTER.reset()
            ddp_sent[0] = 0
            step()
            bytes_per_step[name] = ddp_sent[0] if name.startswith("DDP") else COUNTER.total
        timings = time_interleaved(cases, device, repeats=args.repeats, warmup=args.warmup, desc=f"world {world}")
        model = build("RGB", args, device)
        shared = sum(p.numel() for p in model._share_param_list())
        total = sum(p.numel() for p in model.parameters())
        if rank == 0:
            torch.save({"bytes": bytes_per_step, "ms": {k: v.median for k, v in timings.items()},
                        "shared": shared, "total": total}, out_file)
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=4, help="number of tasks T")
    parser.add_argument("--width", type=int, default=256, help="hidden width of the shared MLP")
    parser.add_argument("--features", type=int, default=64, help="input features")
    parser.add_argument("--batch", type=int, default=32, help="batch size per process")
    parser.add_argument("--world", type=int, nargs="+", default=[1, 2], help="process counts to measure")
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (one GPU per process)")
    parser.add_argument("--backend", default="gloo", help="'gloo' (CPU) or 'nccl' (CUDA)")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (medians reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for world in args.world:
            out = os.path.join(tmp, f"world{world}.pt")
            mp.start_processes(measure, args=(world, args, os.path.join(tmp, f"rdv{world}"), out),
                               nprocs=world, join=True, start_method="spawn")
            results[world] = torch.load(out)
    first = results[args.world[0]]
    shared, total = first["shared"], first["total"]
    print(machine_line(torch.device(args.device if args.device != "cuda" else "cuda:0")))
    print(f"T = {args.tasks} tasks, D_shared = {shared:,} shared parameters, D = {total:,} in all, "
          f"batch {args.batch} per process, backend {args.backend}, device {args.device}")
    rows = []
    for world, result in results.items():
        ddp_bytes = result["bytes"]["DDP EW"]
        ddp_ms = result["ms"]["DDP EW"]
        for name in result["bytes"]:
            sent = result["bytes"][name]
            rows.append([world, name, f"{sent / 1e6:.3f}", f"{sent / ddp_bytes:.2f}" if ddp_bytes else "-",
                         milliseconds(result["ms"][name]), f"{result['ms'][name] / ddp_ms:.2f}",
                         f"{result['ms'][name] / first['ms'][name]:.2f}"])
    print(markdown_table(["processes", "case", "MB sent / step / process", "× DDP bytes", "step ms", "× DDP time",
                          f"× time at {args.world[0]} process(es)"], rows))
    predicted = (args.tasks * shared + (total - shared)) / total
    print(f"cost model: a gradient method sends (T·D_shared + D_task) / D = {predicted:.2f} × DDP's bytes "
          f"(+ T loss values, one byte per parameter for the has-gradient mask, and rank 0's RNG state)")


if __name__ == "__main__":
    main()
