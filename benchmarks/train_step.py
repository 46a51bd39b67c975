"""Time whole training steps (forward, per-task gradients, aggregation, optimizer step) of RGB
against EW, PCGrad, MGDA and a LibMTL-style RGB step on the QM9 MPNN (T = 11), and the
per-task gradients alone: one batched backward pass against T backward passes.

    python benchmarks/train_step.py                          # QM9 MPNN, 4 random molecules
    python benchmarks/train_step.py --model mlp --tasks 11   # an MLP whose backward batches
    python benchmarks/train_step.py --profile                # where one RGB step spends its time
    python benchmarks/train_step.py --device cuda --molecules 120
    python benchmarks/train_step.py --model mlp --width 700 --methods  # every method vs LibMTL
    python benchmarks/train_step.py --paths --archs HPS MTAN --task_counts 2 11 40  # issue 22

``--paths`` (issue 22, ``gradient_paths.py``): a training step of EW, the per-task-gradient
floor (T backward passes) and Gramian methods on the matrix and on the Gramian path, on the
CelebA and NYUv2 example models with T tasks, as ratios to EW's step and to the floor's
(``--phases``: where the Gramian path's step goes).

The molecules are random (no download): complete graphs of 10–24 atoms whose edges carry a
bond-type one-hot (bonded pairs only) and the interatomic distance, as the QM9 example feeds
its MPNN. PCGrad and MGDA are picked up by name when registered (torchjd wrappers).

Target 3 (PASS/FAIL rows at the end): the RGB step takes no longer than PCGrad's and MGDA's
(within --tolerance, the timing noise allowed) and less than the LibMTL-style RGB step
(T ``loss.backward()`` passes copied into a flattened matrix, LibMTL's plumbing, with the
same ``rgb_step`` aggregation).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

import gradient_paths
from _timing import (Check, Timing, add_common_flags, checks_table, describe, machine_line, markdown_table, milliseconds,
                     setup_from_flags, synchronize, time_interleaved)
from rgb_aggregation import direct_rgb_direction
from LibMTL_rgb.registry import WEIGHTINGS
from LibMTL_rgb.trainer import build_mtl_model
from LibMTL_rgb.weighting import RGB
from LibMTL_rgb.weighting.abstract_weighting import BatchedGradFallbackWarning

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "qm9"))
from mpnn import MPNNEncoder, target_heads  # noqa: E402
from qm9_data import NUM_BOND_TYPES, NUM_NODE_FEATURES, TASK_NAMES  # noqa: E402

PEERS = ("PCGrad", "MGDA")
LOOP_GRADS = "per-task grads: T passes"
BATCHED_GRADS = "per-task grads: one batched pass"
RGB_STEPS = 30  # the QM9 example's K (paper setting)


# ----------------------------------------------------------------------------- data and models
def random_molecules(count: int, seed: int, min_atoms: int = 10, max_atoms: int = 24):
    """A PyG batch of ``count`` random molecule-like complete graphs (QM9's MPNN input format)."""
    from torch_geometric.data import Batch, Data

    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for _ in range(count):
        atoms = int(torch.randint(min_atoms, max_atoms + 1, (1,), generator=gen))
        pos = torch.randn(atoms, 3, generator=gen) * 1.5
        edge_index = (~torch.eye(atoms, dtype=torch.bool)).nonzero().t()
        src, dst = edge_index
        bonded = (src - dst).abs() == 1  # a chain of bonds
        bond_type = torch.randint(0, NUM_BOND_TYPES, (atoms,), generator=gen)[torch.minimum(src, dst)]
        edge_attr = torch.zeros(edge_index.shape[1], NUM_BOND_TYPES + 1)
        edge_attr[bonded, bond_type[bonded]] = 1.0
        edge_attr[:, -1] = (pos[src] - pos[dst]).norm(dim=1)
        x = torch.randn(atoms, NUM_NODE_FEATURES, generator=gen)
        graphs.append(Data(x=x, edge_index=edge_index, edge_attr=edge_attr))
    return Batch.from_data_list(graphs)


@dataclass
class Workload:
    """A model family and one fixed batch: ``build(weighting)`` gives a fresh MTL model."""

    name: str
    task_name: list[str]
    build: Callable[[Any], nn.Module]
    inputs: Any
    targets: Tensor  # [B, T]
    notes: list[str] = field(default_factory=list)
    encoder_class: Any = None  # what ``build`` composes, for LibMTL's own model (method_steps.py)
    make_decoders: Optional[Callable[[], nn.ModuleDict]] = None


def qm9_workload(molecules: int, device: torch.device, seed: int) -> Workload:
    batch = random_molecules(molecules, seed).to(device)
    targets = torch.randn(batch.num_graphs, len(TASK_NAMES), generator=torch.Generator().manual_seed(seed)).to(device)

    def build(weighting) -> nn.Module:
        torch.manual_seed(seed)
        return build_mtl_model(weighting, "HPS", TASK_NAMES, MPNNEncoder, target_heads(TASK_NAMES, 64), False, False, device)

    note = f"QM9 MPNN (examples/qm9/mpnn.py), {molecules} molecules, {batch.num_nodes} atoms, {batch.edge_index.shape[1]} edges"
    return Workload("qm9", list(TASK_NAMES), build, batch, targets, [note], MPNNEncoder,
                    lambda: target_heads(TASK_NAMES, 64))


def mlp_workload(tasks: int, width: int, batch: int, device: torch.device, seed: int) -> Workload:
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, 32, generator=gen).to(device)
    targets = torch.randn(batch, tasks, generator=gen).to(device)
    task_name = [f"t{i}" for i in range(tasks)]

    def encoder() -> nn.Module:
        return nn.Sequential(nn.Linear(32, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())

    def heads() -> nn.ModuleDict:
        return nn.ModuleDict({t: nn.Linear(width, 1) for t in task_name})

    def build(weighting) -> nn.Module:
        torch.manual_seed(seed)
        return build_mtl_model(weighting, "HPS", task_name, encoder, heads(), False, False, device)

    return Workload("mlp", task_name, build, inputs, targets, [f"MLP 32→{width}→{width}→{width}, batch {batch}, {tasks} tasks"],
                    encoder, heads)


def task_losses(model: nn.Module, work: Workload) -> Tensor:
    out = model(work.inputs)
    return torch.stack([(out[t].squeeze(1) - work.targets[:, i]).pow(2).mean() for i, t in enumerate(work.task_name)])


# ------------------------------------------------------------------- LibMTL-style RGB steps
class LibMTLStyleRGB(RGB):
    """RGB whose per-task gradients are gathered the way LibMTL does it: one
    ``loss.backward(retain_graph=True)`` per task, each parameter's ``.grad`` copied into a
    zero-initialised flat row at an offset re-summed from the sizes, then the shared
    gradients zeroed. Aggregation (``rgb_step``) and write-back are ours."""

    def _get_grads(self, losses: Tensor, mode: str = "backward") -> Tensor:
        self._compute_grad_dim()
        params = list(self.get_share_params())
        grads = torch.zeros(self.task_num, self.grad_dim, device=self.device)
        for task in range(self.task_num):
            losses[task].backward(retain_graph=True)
            for count, param in enumerate(params):
                if param.grad is not None:
                    begin = sum(self.grad_index[:count])
                    grads[task, begin : begin + self.grad_index[count]] = param.grad.detach().reshape(-1)
            self.zero_grad_share_params()
        return grads


class PaperStyleRGB(LibMTLStyleRGB):
    """LibMTL-style gradients plus Algorithm 1 on explicit D-vectors (O(K·T²·D) per step),
    the cost the paper reports (App. A.13)."""

    def backward(self, losses: Tensor, rgb_mu: float = 0.9, rgb_steps: int = RGB_STEPS, rgb_lr: float = 0.1,
                 rgb_eps: float = 1e-8, **kwargs) -> np.ndarray:
        grads = self._get_grads(losses)
        direction = direct_rgb_direction(grads, self.rgb_ema, rgb_steps, mu=rgb_mu, lr=rgb_lr, eps=rgb_eps)
        gbar = grads / (grads.norm(dim=1, keepdim=True) + rgb_eps)
        y = gbar.mean(dim=0)
        self.rgb_ema.mul_(rgb_mu).add_(y / (y.norm() + rgb_eps), alpha=1.0 - rgb_mu)
        self._reset_grad(direction)
        return np.ones(self.task_num)


# ---------------------------------------------------------------------------------- steps
@dataclass
class StepCase:
    name: str
    weighting: Any  # a registered name or a class
    weight_args: dict = field(default_factory=dict)
    grad_method: str = "auto"


def make_step(case: StepCase, work: Workload, lr: float = 1e-3) -> tuple[Callable[[], None], nn.Module]:
    """A fresh model for ``case`` and a zero-argument callable running one training step."""
    model = work.build(case.weighting)
    model.grad_method = case.grad_method
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step() -> None:
        losses = task_losses(model, work)
        optimizer.zero_grad(set_to_none=False)
        model.backward(losses, **case.weight_args)
        optimizer.step()

    return step, model


def make_grads_only(model: nn.Module, work: Workload, grad_method: str) -> Callable[[], Tensor]:
    """Forward + the [T, D] per-task gradients by one path (``mode='autograd'``)."""
    def grads() -> Tensor:
        model.grad_method = grad_method
        return model._get_grads(task_losses(model, work), mode="autograd")

    return grads


def batched_path_status(model: nn.Module, work: Workload) -> Optional[str]:
    """``None`` when ``grad_method='auto'`` batches the model's backward, else the reason why not."""
    model.grad_method = "auto"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BatchedGradFallbackWarning)
        model._get_grads(task_losses(model, work), mode="autograd")
    fallbacks = [w for w in caught if issubclass(w.category, BatchedGradFallbackWarning)]
    if not fallbacks:
        return None
    message = str(fallbacks[0].message)
    return message[message.find("(") + 1 : message.rfind(")")]


def gradient_cases(model: nn.Module, work: Workload, strict_ok: bool) -> dict[str, Callable[[], object]]:
    """Forward + backward variants: EW's one pass, T passes, and the batched pass (with vmap's
    per-task fallback for operations without a batching rule when the strict one fails)."""
    cases: dict[str, Callable[[], object]] = {
        "EW: one backward of Σ L_t": lambda: task_losses(model, work).sum().backward(),
        LOOP_GRADS: make_grads_only(model, work, "loop"),
    }
    batched = make_grads_only(model, work, "batched")
    try:
        batched()
    except (RuntimeError, NotImplementedError) as err:
        print(f"the batched pass fails even with vmap's fallback: {str(err).splitlines()[0]}")
        return cases
    cases[BATCHED_GRADS if strict_ok else BATCHED_GRADS + " (vmap fallback)"] = batched
    return cases


class PhaseTimer:
    """Wall-clock seconds per phase of a training step: forward, per-task gradients
    (``_get_grads``), the rest of the weighting's ``backward`` (aggregation + write-back),
    and the optimizer step."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, list[float]] = {}
        original = model._get_grads

        def timed_get_grads(losses, mode: str = "backward"):
            with self.phase("per-task gradients"):
                return original(losses, mode=mode)

        model._get_grads = timed_get_grads

    @contextlib.contextmanager
    def phase(self, name: str):
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds.setdefault(name, []).append(time.perf_counter() - start)


def phase_table(case: StepCase, work: Workload, device: torch.device, steps: int) -> str:
    """Median ms per phase over ``steps`` training steps of ``case`` (after one warm-up)."""
    model = work.build(case.weighting)
    model.grad_method = case.grad_method
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    timer = PhaseTimer(model, device)
    for _ in range(steps + 1):
        with timer.phase("forward + losses"):
            losses = task_losses(model, work)
        optimizer.zero_grad(set_to_none=False)
        with timer.phase("weighting.backward (all)"):
            model.backward(losses, **case.weight_args)
        with timer.phase("optimizer step"):
            optimizer.step()
    med = {name: statistics.median(values[1:]) for name, values in timer.seconds.items()}
    med["aggregation + write-back"] = med["weighting.backward (all)"] - med["per-task gradients"]
    total = med["forward + losses"] + med["weighting.backward (all)"] + med["optimizer step"]
    order = ["forward + losses", "per-task gradients", "aggregation + write-back", "optimizer step"]
    rows = [[name, milliseconds(med[name]), f"{100 * med[name] / total:.0f}%"] for name in order]
    return markdown_table(["phase", "median ms", "share"], rows)


def step_cases(rgb_steps: int, paper_style: bool, batched_ok: bool) -> tuple[list[StepCase], list[str]]:
    rgb_args = {"rgb_steps": rgb_steps}
    cases = [StepCase("EW", "EW"), StepCase(f"RGB K={rgb_steps}", "RGB", rgb_args)]
    if batched_ok:
        cases.append(StepCase(f"RGB K={rgb_steps}, T backward passes", "RGB", rgb_args, grad_method="loop"))
    cases.append(StepCase(f"RGB K={rgb_steps}, LibMTL-style gradients", LibMTLStyleRGB, rgb_args))
    if paper_style:
        cases.append(StepCase(f"RGB K={rgb_steps}, LibMTL-style + O(K·T²·D) RGB", PaperStyleRGB, rgb_args))
    notes = []
    for peer in PEERS:
        if peer in WEIGHTINGS:
            cases.append(StepCase(peer, peer))
        else:
            notes.append(f"{peer} is not registered in this checkout: not measured")
    return cases, notes


def profile_step(step: Callable[[], None], device: torch.device, steps: int, rows: int) -> str:
    """torch.profiler table (self time, summed over ``steps`` steps, by op and input shapes)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            step()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages(group_by_input_shape=True).table(sort_by=sort, row_limit=rows, max_name_column_width=40,
                                                              max_shapes_column_width=60)


# ------------------------------------------------------------------ every gradient method
def methods_table(work: Workload, device: torch.device, repeats: int, warmup: int, seed: int) -> str:
    """Issue 23's table: a training step of each gradient method, ours (guard included) next to
    LibMTL's when a LibMTL on the path has the method, and ours over RGB's and over the floor."""
    from method_steps import FLOOR, METHODS, PerTaskGradientFloor, libmtl_step, libmtl_version, libmtl_weighting, our_step

    def losses_of(model: nn.Module) -> Tensor:
        return task_losses(model, work)

    steps: dict[str, Callable[[], None]] = {FLOOR: our_step(work.build(PerTaskGradientFloor), work.task_name, losses_of)}
    theirs: dict[str, str] = {}
    for name in METHODS:
        if name not in WEIGHTINGS:
            continue
        steps[name] = our_step(work.build(name), work.task_name, losses_of)
        libmtl_class = libmtl_weighting(name) if work.encoder_class is not None else None
        if libmtl_class is None:
            continue
        step = libmtl_step(libmtl_class, work.encoder_class, work.make_decoders(), work.task_name, losses_of, seed)
        try:
            step()
        except Exception as err:  # noqa: BLE001 - another LibMTL version's options: report, go on
            print(f"LibMTL's {name} step fails here ({type(err).__name__}: {str(err).splitlines()[0]}): not compared")
            continue
        steps[theirs.setdefault(name, f"LibMTL {name}")] = step
    timings = time_interleaved(steps, device, repeats, warmup, desc="methods")
    med = {name: t.median for name, t in timings.items()}
    rgb = med.get("RGB")
    rows = []
    for name in [FLOOR, *[m for m in METHODS if m in steps]]:
        other = med.get(theirs.get(name, ""))
        rows.append([name, milliseconds(other) if other else "—", milliseconds(med[name]), f"±{timings[name].spread * 100:.0f}%",
                     f"{med[name] / other:.2f}" if other else "—", f"{med[name] / rgb:.2f}" if rgb else "—",
                     f"{med[name] / med[FLOOR]:.2f}"])
    source = f"LibMTL {libmtl_version()}" if theirs else "no LibMTL on the path"
    header = ["method", f"LibMTL ms ({source})", "ours ms", "spread", "ours/LibMTL", "ours/RGB", "ours/floor"]
    return markdown_table(header, rows) + "\n" + guard_costs(work, device, repeats)


def guard_costs(work: Workload, device: torch.device, repeats: int) -> str:
    """What the non-finite checks cost on this model: the Trainer's guard (losses + every
    gradient, the same for every method) and the per-task check on G, row sums against the
    element-wise ``isfinite``."""
    from LibMTL_rgb.nonfinite import NonFiniteGuard
    from method_steps import PerTaskGradientFloor

    model = work.build(PerTaskGradientFloor)
    losses = task_losses(model, work)
    grads = model._get_grads(losses, mode="backward")
    guard = NonFiniteGuard()
    cases = {
        "Trainer guard (losses + all gradients)": lambda: (guard.losses_problem(losses, work.task_name),
                                                           guard.gradients_problem(model, work.task_name)),
        "G check: row sums": lambda: model._raise_if_nonfinite(losses, grads),
        "G check: element-wise isfinite": lambda: bool(torch.isfinite(grads).all(dim=-1).all()),
    }
    timings = time_interleaved(cases, device, repeats, 1, desc="guard")
    return "\n".join(f"{name}: {milliseconds(t.median)} ms" for name, t in timings.items())


# ----------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", choices=["qm9", "mlp"], default="qm9", help="the QM9 MPNN (T=11) or an MLP")
    parser.add_argument("--molecules", type=int, default=4, help="molecules per batch (qm9; the paper trains with 120)")
    parser.add_argument("--tasks", type=int, default=11, help="number of tasks (mlp)")
    parser.add_argument("--width", type=int, default=256, help="hidden width (mlp)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (mlp)")
    parser.add_argument("--rgb_steps", type=int, default=RGB_STEPS, help="RGB's K")
    parser.add_argument("--paper_style", action=argparse.BooleanOptionalAction, default=True,
                        help="also time LibMTL-style gradients with the direct O(K·T²·D) RGB (slow)")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="timing noise allowed when checking 'RGB takes no longer than PCGrad / MGDA'")
    parser.add_argument("--profile", action="store_true", help="also print RGB's step by phase and a torch.profiler table of --repeats RGB steps")
    parser.add_argument("--methods", action="store_true",
                        help="print only the table of every gradient method's step, ours next to LibMTL's (method_steps.py)")
    parser.add_argument("--profile_rows", type=int, default=20, help="rows of the profile table")
    add_common_flags(parser, repeats=5)
    gradient_paths.add_path_flags(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> list[Check]:
    args = build_parser().parse_args(argv)
    device = setup_from_flags(args)
    if args.paths:
        gradient_paths.check_path_flags(args)
        if device.type != "cpu":
            raise SystemExit("--paths measures on the CPU (the examples' fixtures are built there)")
        print(machine_line(device))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BatchedGradFallbackWarning)
            gradient_paths.run_time_tables(args)
        return []
    if min(args.molecules, args.tasks, args.width, args.batch) < 1 or args.rgb_steps < 0:
        raise SystemExit("sizes must be >= 1 and --rgb_steps >= 0")
    if args.model == "qm9":
        work = qm9_workload(args.molecules, device, args.seed)
    else:
        work = mlp_workload(args.tasks, args.width, args.batch, device, args.seed)
    print(machine_line(device))
    print("; ".join(work.notes) + f"; device {device}; median of {args.repeats} interleaved rounds\n")

    if args.methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BatchedGradFallbackWarning)
            print(methods_table(work, device, args.repeats, args.warmup, args.seed))
        return []

    probe = work.build("EW")
    probe._compute_grad_dim()
    T, D = len(work.task_name), probe.grad_dim
    reason = batched_path_status(probe, work)
    print(f"T = {T}, D = {D:,} shared parameters; grad_method='auto' uses "
          + ("one batched backward pass" if reason is None else f"T backward passes ({reason})"))

    # per-task gradients alone
    grad_cases = gradient_cases(probe, work, reason is None)
    grad_t = time_interleaved(grad_cases, device, args.repeats, args.warmup, desc="gradients")
    rows = [[name, *describe(grad_t, name, LOOP_GRADS)] for name in grad_cases]
    print(markdown_table(["forward + backward", "median ms", "spread", "× T passes"], rows))
    for name in grad_cases:
        if name.startswith(BATCHED_GRADS):
            print(f"speed-up of '{name}' over T backward passes: {grad_t[LOOP_GRADS].median / grad_t[name].median:.2f}×")
    print()

    # whole steps
    cases, notes = step_cases(args.rgb_steps, args.paper_style, reason is None)
    steps = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BatchedGradFallbackWarning)  # reported above
        for case in cases:
            steps[case.name], _ = make_step(case, work)
        timings = time_interleaved(steps, device, args.repeats, args.warmup, desc="steps")
    rgb = cases[1].name
    rows = [[name, *describe(timings, name, rgb)] for name in steps]
    print(markdown_table(["training step", "median ms", "spread", "× RGB"], rows))
    for note in notes:
        print(note)
    print()

    if args.profile:
        print(f"phases of '{rgb}' (median of {args.repeats} steps):")
        print(phase_table(cases[1], work, device, args.repeats))
        print(f"\ntorch.profiler, {args.repeats} '{rgb}' steps:")
        print(profile_step(steps[rgb], device, args.repeats, args.profile_rows))

    checks = target3_checks(timings, rgb, cases, args.tolerance)
    print(checks_table(checks))
    return checks


def target3_checks(timings: dict[str, Timing], rgb: str, cases: list[StepCase], tolerance: float) -> list[Check]:
    checks = []
    for peer in PEERS:
        if peer in timings:
            checks.append(Check("3", f"RGB step / {peer} step", timings[rgb].median / timings[peer].median, 1.0 + tolerance))
    libmtl = next(c.name for c in cases if c.weighting is LibMTLStyleRGB)
    checks.append(Check("3", "RGB step / LibMTL-style RGB step", timings[rgb].median / timings[libmtl].median, 1.0, strict=True))
    return checks


if __name__ == "__main__":
    sys.exit(0 if all(c.passed for c in main()) else 1)
