"""Bytes communicated per training step, the largest per-task-gradient message, peak memory
and step time of the distributed path (``LibMTL_rgb/distributed/``) for 1 and 2 processes on
CPU (gloo), against plain ``DistributedDataParallel`` (which all-reduces the summed gradient:
D numbers per step), on the matrix path and on the Gramian path.

    python benchmarks/distributed.py                       # T=4 tasks, MLP with D ≈ 0.08 M shared
    python benchmarks/distributed.py --width 1024 --layers 4   # D ≈ 3.2 M shared: memory shows
    python benchmarks/distributed.py --device cuda --backend nccl --world 1   # on a GPU machine

Cases (the same MLP, ``--tasks`` regression heads, per-process batch ``--batch``):
  * ``DDP EW``: ``torch.nn.parallel.DistributedDataParallel`` around the model, one
    ``sum(losses).backward()``; its bytes are counted by a communication hook;
  * ``ours EW``: a loss weighting through the Trainer's hooks (the summed shared gradient is
    averaged with the task-specific ones: D numbers, like DDP);
  * ``ours RGB`` / ``ours MGDA``: gradient methods on the matrix path: the [T, D_shared]
    matrix is averaged before the weighting, plus the task-specific gradients: T·D_shared +
    D_task numbers;
  * ``… gramian``: the same methods with ``grad_method='gramian'``: the [T, D_c] chunks of G
    (one chunk when the matrix fits the default budget; G Gᵀ and RGB's G·d come from the
    averaged chunks), then RGB's two combined rows ([2, D_shared]; MGDA's update: one row) are
    averaged: T·D_shared + k·D_shared + D_task numbers; ``… gramian, chunks``: a budget of
    ``--chunk_bytes`` (default 1 byte: one shared parameter per chunk).

Bytes are the payload each process hands to all-reduce (a ring all-reduce moves about
2·(W−1)/W times that per process on the wire), counted on a step after a warm-up step. The
largest message is the largest per-task-gradient tensor averaged at once (the [T, D] matrix,
a [T, D_c] chunk or the [k, D_shared] rows: the ``COUNTER``). The peak is rank 0's peak memory of that step above what it held before (``memory.py``'s
``peak_extra_bytes``: the resident set on CPU, ``max_memory_allocated`` on CUDA). Step
times are medians of interleaved rounds; on a machine shared with other jobs only their
ratios mean something.
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
from memory import peak_extra_bytes  # noqa: E402
from LibMTL_rgb import distributed  # noqa: E402
from LibMTL_rgb.distributed import COUNTER, DistributedRun  # noqa: E402
from LibMTL_rgb.trainer import build_mtl_model  # noqa: E402

#: ``(case name, weighting, grad_method or None for the device's matrix path, chunked)``.
CASES = (
    ("ours EW", "EW", None, False), ("ours RGB", "RGB", None, False), ("ours MGDA", "MGDA", None, False),
    ("ours RGB gramian", "RGB", "gramian", False), ("ours RGB gramian, chunks", "RGB", "gramian", True),
    ("ours MGDA gramian", "MGDA", "gramian", False),
)


def build(method: str, args: argparse.Namespace, device: torch.device, grad_method: "str | None" = None,
          budget: "int | None" = None) -> nn.Module:
    torch.manual_seed(args.seed)
    tasks = [f"t{i}" for i in range(args.tasks)]

    def encoder() -> nn.Module:
        layers: list[nn.Module] = [nn.Linear(args.features, args.width), nn.ReLU()]
        for _ in range(args.layers - 1):
            layers += [nn.Linear(args.width, args.width), nn.ReLU()]
        return nn.Sequential(*layers)

    decoders = nn.ModuleDict({t: nn.Linear(args.width, 1) for t in tasks})
    model = build_mtl_model(method, "HPS", tasks, encoder, decoders, False, False, device)
    model.grad_method = grad_method or ("loop" if device.type == "cpu" else "auto")
    model.grad_memory_budget = budget
    return model


def data(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(args.seed + distributed.rank())
    x = torch.randn(args.batch, args.features, generator=gen)
    y = torch.randn(args.batch, args.tasks, generator=gen)
    return x.to(device), y.to(device)


def ours_step(method: str, args: argparse.Namespace, device: torch.device, grad_method: "str | None",
              chunked: bool) -> Callable[[], None]:
    model = build(method, args, device, grad_method, args.chunk_bytes if chunked else None)
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
        bytes_per_step: dict[str, int] = {}
        largest: dict[str, int] = {}
        peak: dict[str, int] = {}
        ddp_sent = [0]
        cases["DDP EW"] = ddp_step(args, device, ddp_sent)
        for name, method, grad_method, chunked in CASES:
            cases[name] = ours_step(method, args, device, grad_method, chunked)
        # one warm-up step (RGB's first step has no EMA yet), then the counted and measured step
        for name, step in cases.items():
            step()
            COUNTER.reset()
            ddp_sent[0] = 0
            peak[name] = peak_extra_bytes(step, device)
            bytes_per_step[name] = ddp_sent[0] if name.startswith("DDP") else COUNTER.total
            largest[name] = COUNTER.largest_task_grad_message
        timings = time_interleaved(cases, device, repeats=args.repeats, warmup=args.warmup, desc=f"world {world}")
        model = build("RGB", args, device)
        shared = sum(p.numel() for p in model._share_param_list())
        total = sum(p.numel() for p in model.parameters())
        if rank == 0:
            torch.save({"bytes": bytes_per_step, "largest": largest, "peak": peak,
                        "ms": {k: v.median for k, v in timings.items()}, "shared": shared, "total": total}, out_file)
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=4, help="number of tasks T")
    parser.add_argument("--width", type=int, default=256, help="hidden width of the shared MLP")
    parser.add_argument("--layers", type=int, default=2, help="linear layers of the shared MLP")
    parser.add_argument("--chunk_bytes", type=int, default=1,
                        help="grad_memory_budget of the 'gramian, chunks' cases (1: one shared parameter per chunk)")
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
    # glibc returns freed blocks of 64 KiB or more to the system, so that a peak is not hidden
    # by memory freed earlier (read by the spawned interpreters at start-up)
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
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
                         f"{result['ms'][name] / first['ms'][name]:.2f}",
                         f"{result['largest'][name] / 1e6:.3f}" if result["largest"][name] else "-",
                         f"{result['peak'][name] / 1e6:.1f}"])
    # (benchmarks/cuda_check.sh reads columns 3 and 5: MB sent and step ms)
    print(markdown_table(["processes", "case", "MB sent / step / process", "× DDP bytes", "step ms", "× DDP time",
                          f"× time at {args.world[0]} process(es)", "largest message MB", "peak MB (rank 0)"], rows))
    size = torch.empty((), dtype=torch.get_default_dtype()).element_size()
    tasks, task_specific = args.tasks, total - shared
    print(f"cost model (MB): the matrix path sends T·D_shared + D_task = {(tasks * shared + task_specific) * size / 1e6:.3f}, "
          f"RGB's Gramian path T·D_shared + 2·D_shared + D_task = "
          f"{((tasks + 2) * shared + task_specific) * size / 1e6:.3f}, MGDA's T·D_shared + D_shared + D_task = "
          f"{((tasks + 1) * shared + task_specific) * size / 1e6:.3f}; DDP D = {total * size / 1e6:.3f} "
          f"(+ T loss values and one byte per parameter for the has-gradient masks)")


if __name__ == "__main__":
    main()
