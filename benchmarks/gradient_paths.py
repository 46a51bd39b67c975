"""The two gradient paths on the CelebA and NYUv2 example models (issue 22), shared by
``memory.py --paths`` (peak memory) and ``train_step.py --paths`` (step time).

A cell is (example, architecture, T). Its model is the example's own: the example's
``main(argv)`` runs on a tiny fixture in the real on-disk format (the generators of
``tests/test_example_*.py``) up to its ``Trainer(...)`` call, whose arguments are recorded
(encoder, heads, losses, ``arch_args``, the example's ``weight_args`` for RGB); each case then
gets a fresh ``Trainer`` on the first T tasks with the case's weighting and ``grad_method``,
and one fixed batch of the fixture. CelebA has 40 tasks (the first T are used); NYUv2 has 3,
so its T tasks are synthetic: task k is a copy of the example's head and loss of
segmentation, depth or normal (k mod 3), freshly initialised, trained on that task's labels.

The cases (``CASES``): EW (one backward pass of Σ L_t); the per-task-gradient floor (the
[T, D] matrix by T backward passes, its sum written back, no aggregation:
``method_steps.PerTaskGradientFloor``); and each Gramian method on the matrix path (T backward
passes, ``grad_method='loop'``, the examples' CPU default; the memory budget is lifted so the
matrix path is really taken) and on the Gramian path (``grad_method='gramian'``) by each
computer: ``chunks`` (the default: T passes per parameter chunk, with a budget of
``--chunk_fraction`` of the [T, D] matrix) and ``engine`` (torchjd's autogram engine).
A step is what the Trainer's loop runs: forward + losses (``Trainer.forward4loss``),
``zero_grad``, ``model.backward(losses, **weight_args)``, ``optimizer.step()``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import io
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence
from unittest import mock

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' dataset generators
sys.path.insert(0, str(HERE))

from _timing import markdown_table  # noqa: E402

#: Examples measured here (``profile_examples.EXAMPLES`` writes their fixtures).
PATH_EXAMPLES = ("celeba", "nyu")
#: Default sizes per example for this 2-core machine: (image H W, batch, width).
SMALL_SIZES = {"celeba": ((32, 32), 8, 16), "nyu": ((48, 64), 2, 8)}
#: NYUv2's tasks, whose heads and losses the synthetic tasks copy (task k: ``NYU_TASKS[k % 3]``).
NYU_TASKS = ("segmentation", "depth", "normal")
EW, FLOOR = "EW", "floor (T passes)"
#: Lifts the automatic switch so that the matrix cases really take the matrix path.
NO_BUDGET = 1 << 62


@dataclass(frozen=True)
class Case:
    """One column: a weighting (registered name or class) and its ``grad_method``."""

    label: str
    weighting: Any
    grad_method: str
    matrix: bool = True  # lift the memory budget (the matrix path even where it would switch)
    computer: str = "auto"  # the Gramian path's computer (AbsWeighting.gramian_computer)
    chunk_fraction: Optional[float] = None  # the budget as a fraction of the [T, D] matrix's bytes


def cases_for(methods: Sequence[str], chunk_fraction: float = 0.25) -> list[Case]:
    """EW, the floor, then every method of ``methods`` on the matrix path and on the Gramian path
    by chunks (budget ``chunk_fraction`` of the matrix) and by the engine."""
    from method_steps import PerTaskGradientFloor

    cases = [Case(EW, "EW", "loop"), Case(FLOOR, PerTaskGradientFloor, "loop")]
    for name in methods:
        cases += [Case(f"{name} matrix", name, "loop"),
                  Case(f"{name} chunks", name, "gramian", matrix=False, computer="chunks", chunk_fraction=chunk_fraction),
                  Case(f"{name} engine", name, "gramian", matrix=False, computer="engine")]
    return cases


def gramian_methods() -> list[str]:
    """The registered weightings whose class has ``supports_gramian = True``."""
    from LibMTL_rgb.registry import WEIGHTINGS

    return [name for name in WEIGHTINGS.names() if getattr(WEIGHTINGS.get(name), "supports_gramian", False)]


# --------------------------------------------------------------------------- the example's model
@dataclass
class Recorded:
    """What an example's ``main`` handed to ``Trainer`` and one batch of its fixture."""

    arguments: dict  # Trainer's bound arguments (task_dict, ..., kwargs)
    inputs: Any
    gts: dict


def _record_example(name: str, sizes: argparse.Namespace, folder: Path) -> Recorded:
    from example_loading import load_example
    from profile_examples import EXAMPLES, build_trainer
    from LibMTL_rgb import Trainer

    example = EXAMPLES[name]
    root = example.write(folder, sizes, sizes.bs)
    argv = ["--dataset_path", str(root), "--bs", str(sizes.bs), "--arch", sizes.arch, "--device", "cpu",
            "--num_workers", "0", "--seed", str(sizes.seed), "--save_path", str(folder / "run"), *example.flags(sizes)]
    main = load_example(example.folder)[0].main
    seen: dict = {}

    def recording(*args, **kwargs):
        seen["bound"] = inspect.signature(Trainer).bind(*args, **kwargs).arguments
        return Trainer(*args, **kwargs)

    with mock.patch.dict(main.__globals__, {"Trainer": recording}):
        trainer, train_loader = build_trainer(main, argv)
    loader, _ = trainer._prepare_dataloaders(train_loader)
    inputs, gts = trainer._process_data(loader)
    return Recorded(dict(seen["bound"]), inputs, gts)


def _fresh_copy(module: nn.Module) -> nn.Module:
    """A deep copy with every submodule's parameters re-initialised (``reset_parameters``)."""
    fresh = copy.deepcopy(module)
    for sub in fresh.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
    return fresh


def _tasks(name: str, rec: Recorded, tasks: int) -> tuple[dict, nn.ModuleDict, dict]:
    """(task_dict, decoders, gts) of ``tasks`` tasks: CelebA's first T, or NYUv2's synthetic T."""
    task_dict, decoders = rec.arguments["task_dict"], rec.arguments["decoders"]
    names = list(task_dict)
    if name != "nyu":
        if tasks > len(names):
            raise SystemExit(f"{name} has {len(names)} tasks, asked for T = {tasks}")
        keep = names[:tasks]
        return ({t: task_dict[t] for t in keep}, nn.ModuleDict({t: decoders[t] for t in keep}),
                {t: rec.gts[t] for t in keep})
    new_dict, new_decoders, gts = {}, nn.ModuleDict(), {}
    for k in range(tasks):
        base = NYU_TASKS[k % len(NYU_TASKS)]
        task = f"{base}_{k}"
        new_dict[task] = dict(task_dict[base], metrics_fn=copy.deepcopy(task_dict[base]["metrics_fn"]))
        new_decoders[task] = decoders[base] if k < len(NYU_TASKS) else _fresh_copy(decoders[base])
        gts[task] = rec.gts[base]
    return new_dict, new_decoders, gts


class Cell:
    """One (example, architecture, T): builds each case's step on the example's model."""

    def __init__(self, example: str, arch: str, tasks: int, sizes: argparse.Namespace) -> None:
        self.example, self.arch, self.tasks = example, arch, tasks
        cell_sizes = argparse.Namespace(**vars(sizes))
        cell_sizes.arch = arch
        self._tmp = tempfile.TemporaryDirectory(prefix=f"gradient_paths_{example}_")
        with contextlib.redirect_stdout(io.StringIO()):
            self.recorded = _record_example(example, cell_sizes, Path(self._tmp.name))
        self.task_dict, self.decoders, self.gts = _tasks(example, self.recorded, tasks)
        self.seed = sizes.seed

    def close(self) -> None:
        self._tmp.cleanup()

    def trainer(self, case: Case):
        """A fresh Trainer of ``case`` on this cell's T tasks (same initial weights in every case)."""
        from LibMTL_rgb import Trainer

        args = self.recorded.arguments
        kwargs = {k: v for k, v in args.get("kwargs", {}).items() if k not in ("run_config", "overwrite")}
        kwargs["grad_method"] = case.grad_method
        if case.matrix:
            kwargs["grad_memory_budget"] = NO_BUDGET
        if case.grad_method == "gramian":
            kwargs["gramian_computer"] = case.computer
        recorded_weighting = args["weighting"]
        if case.weighting != recorded_weighting:
            kwargs["weight_args"] = {}  # the method's own defaults; the example's are for its default weighting
        torch.manual_seed(self.seed)
        with contextlib.redirect_stdout(io.StringIO()):
            trainer = Trainer(self.task_dict, case.weighting, args["architecture"], args["encoder_class"],
                              copy.deepcopy(self.decoders), args["rep_grad"], args["multi_input"], args["optim_param"],
                              args.get("scheduler_param"), save_path=None, load_path=None, **kwargs)
        trainer.model.train()
        trainer.model.epoch, trainer.model.epochs = 0, 1
        if case.chunk_fraction is not None:  # the budget of the chunks: a fraction of the [T, D] matrix
            model = trainer.model
            model.grad_memory_budget = int(case.chunk_fraction * len(self.task_dict) * shared_dim(model) * 4)
        return trainer

    def step(self, case: Case) -> tuple[Callable[[], None], nn.Module]:
        """A zero-argument training step of ``case`` and its model."""
        trainer = self.trainer(case)
        model, weight_args = trainer.model, trainer.kwargs["weight_args"]
        inputs, gts = self.recorded.inputs, self.gts

        def step() -> None:
            losses = trainer.forward4loss(model, inputs, gts)
            trainer.optimizer.zero_grad(set_to_none=False)
            model.backward(losses, **weight_args)
            trainer.optimizer.step()

        return step, model


def shared_dim(model: nn.Module) -> int:
    model._compute_grad_dim()
    return int(model.grad_dim)


def taken_path(model: nn.Module) -> str:
    """The path a Gramian method's model takes ('matrix' or 'gramian'); '—' for the others."""
    return str(model.gradient_path()) if getattr(model, "supports_gramian", False) else "—"


# --------------------------------------------------------------------------------- command line
def add_path_flags(parser: argparse.ArgumentParser) -> None:
    """``--paths`` and the flags of the path tables."""
    from LibMTL_rgb.registry import ARCHITECTURES

    group = parser.add_argument_group("gradient paths (issue 22, --paths)")
    group.add_argument("--paths", action="store_true",
                       help="the two gradient paths on the CelebA/NYUv2 example models (benchmarks/gradient_paths.py)")
    group.add_argument("--examples", nargs="+", choices=list(PATH_EXAMPLES), default=list(PATH_EXAMPLES))
    group.add_argument("--archs", nargs="+", choices=ARCHITECTURES.names(), default=ARCHITECTURES.names())
    group.add_argument("--task_counts", type=int, nargs="+", default=[2, 11, 40], metavar="T",
                       help="task counts (CelebA: the first T attributes; NYUv2: T synthetic tasks)")
    group.add_argument("--gramian_methods", nargs="+", default=["RGB", "UPGrad"],
                       help="methods timed on both paths (each needs supports_gramian)")
    group.add_argument("--img_size", type=int, nargs=2, default=None, metavar=("H", "W"),
                       help=f"input size (CelebA: S S); default per example: {', '.join(f'{k} {v[0][0]} {v[0][1]}' for k, v in SMALL_SIZES.items())}")
    group.add_argument("--bs", type=int, default=None,
                       help=f"batch size; default per example: {', '.join(f'{k} {v[1]}' for k, v in SMALL_SIZES.items())}")
    group.add_argument("--model_width", type=int, default=None,
                       help="CelebA's --width / NYUv2's --backbone_width; default per example: "
                            + ", ".join(f"{k} {v[2]}" for k, v in SMALL_SIZES.items()))
    group.add_argument("--backbone_depth", type=int, default=50, choices=[18, 34, 50, 101, 152],
                       help="NYUv2's dilated ResNet depth")
    group.add_argument("--chunk_fraction", type=float, default=0.25,
                       help="the chunks case's memory budget as a fraction of the [T, D] matrix's bytes")
    group.add_argument("--phases", action="store_true",
                       help="train_step.py: also split each cell's steps into the Gramian path's calls (mean of --repeats steps)")


def example_sizes(name: str, args: argparse.Namespace) -> argparse.Namespace:
    """The size namespace ``profile_examples.EXAMPLES[name]`` reads (``img_size``, ``bs``, ...)."""
    img, bs, width = SMALL_SIZES[name]
    return argparse.Namespace(img_size=list(args.img_size or img), bs=args.bs or bs, backbone_width=args.model_width or width,
                              backbone_depth=args.backbone_depth, label_size=None, official_size=[64, 128],
                              seed=args.seed)


def check_path_flags(args: argparse.Namespace) -> None:
    known = set(gramian_methods())
    bad = [m for m in args.gramian_methods if m not in known]
    if bad:
        raise SystemExit(f"--gramian_methods: {bad} do not take the Gramian path (those that do: {sorted(known)})")
    if min(args.task_counts) < 1 or (args.bs is not None and args.bs < 1) or (args.model_width is not None and args.model_width < 1):
        raise SystemExit("--task_counts, --bs and --model_width must be >= 1")


def cells(args: argparse.Namespace) -> Iterator[tuple[str, int, str]]:
    """(example, T, arch) in table order: one table per (example, T)."""
    for example in args.examples:
        for tasks in args.task_counts:
            for arch in args.archs:
                yield example, tasks, arch


def setting_line(example: str, tasks: int, args: argparse.Namespace) -> str:
    sizes = example_sizes(example, args)
    what = ("the first T of CelebA's 40 attributes" if example == "celeba"
            else "synthetic tasks: copies of NYUv2's segmentation/depth/normal heads and losses, k mod 3")
    width = "--width" if example == "celeba" else "--backbone_width"
    return (f"{example}, T = {tasks} ({what}); image {sizes.img_size[0]}×{sizes.img_size[1]}, batch {sizes.bs}, "
            f"{width} {sizes.backbone_width}")


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(f"\n{title}\n\n{markdown_table(header, rows)}", flush=True)


def ratio(value: Optional[float], reference: Optional[float]) -> str:
    if value is None or not reference:
        return "—"
    return f"{value / reference:.2f}"


def size_flags(args: argparse.Namespace) -> dict:
    """The size flags, as a JSON-able dict (the memory workers rebuild ``example_sizes`` from it)."""
    return {key: getattr(args, key) for key in ("img_size", "bs", "model_width", "backbone_depth", "seed", "chunk_fraction")}


# ----------------------------------------------------------------------------------- measuring
def time_cell(cell: Cell, cases: Sequence[Case], repeats: int, warmup: int) -> tuple[dict, dict, int]:
    """Interleaved step timings of ``cases`` on ``cell`` (``{label: Timing}``), the path each
    method's model took, and D. A case that fails to build or step is left out (printed)."""
    from _timing import time_interleaved

    steps, paths, dim = {}, {}, 0
    for case in cases:
        try:
            step, model = cell.step(case)
            step()  # lazy state first, so a failure is caught here
        except (RuntimeError, ValueError, MemoryError) as err:
            print(f"  {cell.example} {cell.arch} T={cell.tasks} {case.label}: failed: {str(err).splitlines()[0][:200]}")
            continue
        steps[case.label], paths[case.label], dim = step, taken_path(model), shared_dim(model)
    timings = time_interleaved(steps, torch.device("cpu"), repeats, max(0, warmup - 1),
                               desc=f"{cell.example} {cell.arch} T={cell.tasks}")
    return timings, paths, dim


def method_names(cases: Sequence[Case]) -> list[str]:
    return [c.label[: -len(" chunks")] for c in cases if c.label.endswith(" chunks")]


class IncrementalTable:
    """A markdown table printed row by row as the cells complete."""

    def __init__(self, title: str, header: Sequence[str]) -> None:
        print(f"\n{title}\n\n{markdown_table(header, [])}", flush=True)

    @staticmethod
    def row(cells_: Sequence[object]) -> None:
        print("| " + " | ".join(str(c) for c in cells_) + " |", flush=True)


def time_header(cases: Sequence[Case]) -> list[str]:
    names = method_names(cases)
    return (["arch", "D", "EW ms"] + [f"{c.label} ×EW" for c in cases if c.label != EW]
            + [f"{m} {k} / floor" for m in names for k in ("chunks", "engine")]
            + [f"{m} {k} / matrix" for m in names for k in ("chunks", "engine")])


def time_row(arch: str, dim: int, timings: dict, cases: Sequence[Case]) -> list[str]:
    med = {label: t.median for label, t in timings.items()}
    ew = med.get(EW)
    row = [arch, f"{dim:,}", f"{ew * 1e3:.0f}" if ew else "—"]
    row += [ratio(med.get(c.label), ew) for c in cases if c.label != EW]
    names = method_names(cases)
    row += [ratio(med.get(f"{m} {k}"), med.get(FLOOR)) for m in names for k in ("chunks", "engine")]
    row += [ratio(med.get(f"{m} {k}"), med.get(f"{m} matrix")) for m in names for k in ("chunks", "engine")]
    return row


def run_time_tables(args: argparse.Namespace) -> list[dict]:
    """``train_step.py --paths``: one table per (example, T), a row per architecture."""
    cases = cases_for(args.gramian_methods, args.chunk_fraction)
    results = []
    current = None
    for example, tasks, arch in cells(args):
        if current != (example, tasks):
            current = (example, tasks)
            IncrementalTable(f"Step time, {setting_line(example, tasks, args)}; median of {args.repeats} interleaved "
                             f"steps after {args.warmup} warm-up; ratios to EW's step, and of the Gramian path's step to "
                             "the floor's and to the matrix path's:", time_header(cases))
        cell = Cell(example, arch, tasks, example_sizes(example, args))
        try:
            timings, paths, dim = time_cell(cell, cases, args.repeats, args.warmup)
            IncrementalTable.row(time_row(arch, dim, timings, cases))
            if args.phases:
                print(f"\nWhere the steps go, {example} {arch} T={tasks} (mean of {args.repeats} steps; nested calls "
                      f"overlap):\n\n{phase_table(cell, cases, args.repeats)}\n", flush=True)
                current = None  # the next row starts a new table
        finally:
            cell.close()
        results.append({"example": example, "tasks": tasks, "arch": arch, "dim": dim, "paths": paths,
                        "median": {k: t.median for k, t in timings.items()}})
    return results


# -------------------------------------------------------------------------------------- phases
#: (phase, owner, attribute): the calls of the Gramian path timed by ``phase_table``.
def _gramian_phases() -> list[tuple[str, Any, str]]:
    from LibMTL_rgb import Trainer
    from LibMTL_rgb.weighting import task_gramian
    from LibMTL_rgb.weighting.abstract_weighting import AbsWeighting

    return [("forward + losses", Trainer, "forward4loss"),
            ("G Gᵀ, G·v (autogram engine: vmapped backward of T cotangents)", task_gramian.GramianEngine, "gramian"),
            ("G Gᵀ, G·v (parameter chunks: T passes each)", task_gramian, "chunked_gramian"),
            ("rows @ G (one backward pass per row)", task_gramian, "combine_task_grads"),
            ("task-specific parameters (one backward pass)", AbsWeighting, "_backward_task_specific"),
            ("per-task gradients (matrix path: T passes)", AbsWeighting, "_get_grads")]


def phase_table(cell: Cell, cases: Sequence[Case], steps: int) -> str:
    """Mean ms per step of each Gramian-path call (and of the matrix path's
    ``_get_grads``) over ``steps`` steps of each case after a warm-up, beside the whole step."""
    import time

    rows = []
    for case in cases:
        if case.label == EW:
            continue
        step, _ = cell.step(case)
        step()
        seconds: dict[str, float] = {}

        def timed(name: str, fn: Callable) -> Callable:
            def wrapper(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
            return wrapper

        with contextlib.ExitStack() as stack:
            for name, owner, attribute in _gramian_phases():
                stack.enter_context(mock.patch.object(owner, attribute, timed(name, getattr(owner, attribute))))
            start = time.perf_counter()
            for _ in range(steps):
                step()
            total = time.perf_counter() - start
        row = [case.label, f"{total / steps * 1e3:.0f}"]
        row += [f"{seconds.get(name, 0.0) / steps * 1e3:.0f}" for name, _, _ in _gramian_phases()]
        rows.append(row)
    return markdown_table(["case", "step ms"] + [f"{name} ms" for name, _, _ in _gramian_phases()], rows)
