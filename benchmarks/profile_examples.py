"""Profile one steady-state training step of the NYUv2, Cityscapes (2 and 3 tasks) and CelebA
examples on a tiny dataset in each one's real on-disk format.

For each example: write the data (the generators of ``tests/test_example_*.py``) into a
temporary folder, build the Trainer through the example's own ``main(argv)`` (stopped before
training), run one warm-up step, then ``--steps`` timed steps split into phases (data loading,
forward, losses, metric bookkeeping, per-task gradients ``_get_grads``, RGB's aggregation
``rgb_step``, the write-back ``_reset_grad``, optimizer), then one step under torch.profiler
(CPU) for the operations with the most self time. A step is the body of ``Trainer.train``'s
loop. Results: docs/performance.md, "Profile: where one step's time goes".

    python benchmarks/profile_examples.py                       # all four, ≈ 45 s on 1 thread
    python benchmarks/profile_examples.py --examples nyu --backbone_width 64 --steps 1   # the paper's ResNet-50
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence
from unittest import mock

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' dataset generators (real on-disk formats)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import LibMTL_rgb.weighting.rgb as rgb_weighting  # noqa: E402
from LibMTL_rgb_examples import example_runner  # noqa: E402
from LibMTL_rgb.registry import WEIGHTINGS  # noqa: E402
from _timing import machine_line, markdown_table  # noqa: E402
from example_loading import load_example  # noqa: E402


# ------------------------------------------------------------------------------ examples
@dataclass(frozen=True)
class Example:
    """How to write an example's data and which ``main.py`` flags realise the profile's sizes.

    ``img_size``/``bs``/``width`` are the defaults of ``--img_size``/``--bs``/``--backbone_width``.
    """

    name: str
    folder: str  # under examples/
    img_size: tuple[int, int]
    bs: int
    width: int
    write: Callable[[Path, argparse.Namespace, int], Path]  # (folder, args, train samples) -> dataset root
    flags: Callable[[argparse.Namespace], list[str]]  # size / model flags of main.py


def _nyu_data(folder: Path, args: argparse.Namespace, train: int) -> Path:
    from test_example_nyu import write_nyu

    return write_nyu(folder / "nyuv2", {"train": train, "val": 1}, size=tuple(args.img_size))


def _cityscapes2_data(folder: Path, args: argparse.Namespace, train: int) -> Path:
    from test_example_cityscapes import write_mtan

    return write_mtan(folder / "cityscapes", {"train": train, "val": 1}, size=tuple(args.img_size))


def _cityscapes3_data(folder: Path, args: argparse.Namespace, train: int) -> Path:
    import test_example_cityscapes as generator

    # the generator's PNGs have the module's FULL size; the official release's is 1024 x 2048
    with mock.patch.object(generator, "FULL", tuple(args.official_size)):
        return generator.write_official(folder / "cityscapes", {"train": train, "val": 1})


def _celeba_data(folder: Path, args: argparse.Namespace, train: int) -> Path:
    from test_example_celeba import make_celeba_root

    root, _ = make_celeba_root(folder, partition=[0] * train + [1, 2])
    return root


def _dense_flags(args: argparse.Namespace) -> list[str]:
    return ["--img_size", *map(str, args.img_size), "--backbone_width", str(args.backbone_width),
            "--backbone_depth", str(args.backbone_depth), "--no_pretrained"]


def _cityscapes3_flags(args: argparse.Namespace) -> list[str]:
    label = args.label_size or [max(1, s // 8) for s in args.img_size]  # Align-MTL: labels at 1/8 of the input
    return ["--tasks", "3", *_dense_flags(args), "--label_size", *map(str, label), "--disparity_unit", "align_mtl"]


def _celeba_flags(args: argparse.Namespace) -> list[str]:
    if args.img_size[0] != args.img_size[1]:
        raise SystemExit(f"celeba: images are square, got --img_size {args.img_size}")
    return ["--image_size", str(args.img_size[0]), "--width", str(args.backbone_width)]


EXAMPLES = {
    "nyu": Example("nyu", "nyu", (288, 384), 2, 16, _nyu_data, _dense_flags),
    "cityscapes2": Example("cityscapes2", "cityscapes", (128, 256), 2, 16, _cityscapes2_data, _dense_flags),
    "cityscapes3": Example("cityscapes3", "cityscapes", (128, 256), 2, 16, _cityscapes3_data, _cityscapes3_flags),
    "celeba": Example("celeba", "celeba", (64, 64), 16, 16, _celeba_data, _celeba_flags),
}


def build_trainer(main: Callable, argv: Sequence[str]):
    """``(trainer, train_loader)`` of ``main(argv)``, stopped where it would start training."""
    captured = {}

    def capture(trainer, params, train_loader, test_loader, val_loader=None) -> None:
        captured.update(trainer=trainer, train_loader=train_loader)

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(example_runner, "run", capture))
        if "run_and_report" in main.__globals__:  # CelebA reports through many_task_output
            stack.enter_context(mock.patch.dict(main.__globals__, {"run_and_report": capture}))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        main(list(argv))
    if "trainer" not in captured:
        raise RuntimeError("the example's main() did not reach its training call")
    return captured["trainer"], captured["train_loader"]


# -------------------------------------------------------------------------------- phases
DATA, FORWARD, LOSSES, METRICS = "data loading", "forward", "losses", "metric bookkeeping"
GRADS, AGGREGATION, WRITE_BACK = "per-task gradients", "aggregation", "write-back"
BACKWARD, FORWARD_BATCH, ZERO_GRAD, OPTIMIZER = "weighting.backward", "_forward_batch", "zero_grad", "optimizer step"
#: (row, how it is measured); "rest" rows are what a timed call spends outside the calls inside it.
PHASE_ROWS = (
    (DATA, "next batch + to device (`Trainer._process_data`)"),
    (FORWARD, "`model(inputs)`"),
    (LOSSES, "task losses + their epoch sums (`Trainer._compute_loss`)"),
    (METRICS, "metric updates (`meter.update`)"),
    (GRADS, "per-task gradients (`_get_grads`)"),
    (AGGREGATION, "aggregation (`rgb_step`)"),
    (WRITE_BACK, "write-back (`_reset_grad`)"),
    ("rest of backward", "rest of the weighting's `backward` (checks, state copies)"),
    (OPTIMIZER, "`optimizer.zero_grad` + `optimizer.step`"),
    ("other", "rest of the step"),
)


class PhaseTimer:
    """Wall-clock seconds per phase, summed over the timed steps; phases are the calls the
    Trainer's step makes, wrapped while ``instrument`` is active."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            with self.phase(name):
                return fn(*args, **kwargs)
        return timed

    @contextlib.contextmanager
    def instrument(self, trainer) -> Iterator[None]:
        model = trainer.model
        targets = [(trainer, "_process_data", DATA), (model, "forward", FORWARD), (trainer, "_compute_loss", LOSSES),
                   (trainer.meter, "update", METRICS), (model, "_get_grads", GRADS),
                   (rgb_weighting, "rgb_step", AGGREGATION), (model, "_reset_grad", WRITE_BACK)]
        with contextlib.ExitStack() as stack:
            for owner, attribute, name in targets:
                stack.enter_context(mock.patch.object(owner, attribute, self.wrap(name, getattr(owner, attribute))))
            yield

    def rows(self, steps: int) -> tuple[list[list[str]], float]:
        """Markdown rows ``[phase, ms per step, share]`` and the step's total seconds."""
        s = {name: value / steps for name, value in self.seconds.items()}
        total = s["step"]
        derived = {
            "rest of backward": s[BACKWARD] - s[GRADS] - s.get(AGGREGATION, 0.0) - s[WRITE_BACK],
            OPTIMIZER: s[ZERO_GRAD] + s[OPTIMIZER],
        }
        derived["other"] = total - sum(derived.get(name, s.get(name, 0.0)) for name, _ in PHASE_ROWS[:-1])
        rows = []
        for name, label in PHASE_ROWS:
            value = derived.get(name, s.get(name, 0.0))
            rows.append([label, f"{value * 1e3:.1f}", f"{100 * value / total:.1f}%"])
        rows.append(["**total step**", f"**{total * 1e3:.1f}**", "100%"])
        return rows, total


def training_step(trainer, loader, timer: Optional[PhaseTimer] = None) -> None:
    """The body of ``Trainer.train``'s loop (without the optional run logger)."""
    timer = timer or PhaseTimer()
    with timer.phase("step"):
        with timer.phase(FORWARD_BATCH):
            losses = trainer._forward_batch(loader)
        with timer.phase(ZERO_GRAD):
            trainer.optimizer.zero_grad(set_to_none=False)
        with timer.phase(BACKWARD):
            trainer.model.backward(losses, **trainer.kwargs["weight_args"])
        with timer.phase(OPTIMIZER):
            trainer.optimizer.step()


def top_ops(trainer, loader, rows: int, shapes: bool) -> tuple[list[list[str]], float]:
    """One profiled step: markdown rows ``[op, (shapes,) self CPU ms, share, calls]``, and the
    step's summed self CPU time in seconds."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=shapes) as prof:
        training_step(trainer, loader)
    events = prof.key_averages(group_by_input_shape=shapes)
    total = sum(e.self_cpu_time_total for e in events)
    table = []
    for event in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]:
        row = [f"`{event.key}`"]
        if shapes:
            row.append(str(event.input_shapes)[:80])
        row += [f"{event.self_cpu_time_total / 1e3:.1f}", f"{100 * event.self_cpu_time_total / total:.1f}%", str(event.count)]
        table.append(row)
    return table, total / 1e6


def non_default_options(weighting: str, weight_args: dict) -> str:
    """``name=value`` of the weighting's options that differ from their registered defaults."""
    defaults = {h.name: h.default for h in WEIGHTINGS.get(weighting).hyperparameters}
    changed = [f"{k}={v}" for k, v in weight_args.items() if k not in defaults or defaults[k] != v]
    return ", ".join(changed) or "none"


# ---------------------------------------------------------------------------------- main
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except ``None`` (a per-example default the help text names)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_HelpFormatter)
    parser.add_argument("--examples", nargs="+", choices=list(EXAMPLES), default=list(EXAMPLES),
                        help="which examples to profile (cityscapes2 / cityscapes3: --tasks 2 / 3)")
    parser.add_argument("--img_size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="input size (CelebA: S S); default per example: nyu 288 384 (the stored size), cityscapes 128 256, celeba 64 64")
    parser.add_argument("--bs", type=int, default=None, help="training batch size (default: 2 dense, 16 celeba)")
    parser.add_argument("--backbone_width", type=int, default=None,
                        help="ResNet stem width (dense; 64 = the paper's ResNet-50) or CelebA's --width "
                             "(64 = FAMO's); default 16")
    parser.add_argument("--backbone_depth", type=int, default=50, choices=[18, 34, 50, 101, 152],
                        help="dilated ResNet depth of the dense examples")
    parser.add_argument("--label_size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="cityscapes3 label size (default: 1/8 of --img_size, Align-MTL's ratio)")
    parser.add_argument("--official_size", type=int, nargs=2, default=[1024, 2048], metavar=("H", "W"),
                        help="size of the generated official Cityscapes PNGs (the release's is 1024 2048)")
    parser.add_argument("--weighting", default="RGB", help="weighting method (the phases name RGB's)")
    parser.add_argument("--arch", default="HPS", help="architecture")
    parser.add_argument("--grad_method", default="auto", choices=["auto", "batched", "loop"],
                        help="the examples' --grad_method: how the per-task gradients are computed")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up step (phases: per-step mean)")
    parser.add_argument("--rows", type=int, default=10, help="operations listed (by self CPU time)")
    parser.add_argument("--shapes", action="store_true", help="group operations by input shapes too")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the model")
    return parser


def profile_example(example: Example, args: argparse.Namespace) -> None:
    sizes = argparse.Namespace(**vars(args))
    sizes.img_size = args.img_size or list(example.img_size)
    sizes.bs = args.bs or example.bs
    sizes.backbone_width = args.backbone_width or example.width
    with tempfile.TemporaryDirectory(prefix=f"profile_{example.name}_") as tmp:
        root = example.write(Path(tmp), sizes, sizes.bs * (args.steps + 2))  # no loader restart mid-run
        argv = ["--dataset_path", str(root), "--bs", str(sizes.bs), "--weighting", args.weighting, "--arch", args.arch,
                "--grad_method", args.grad_method,
                "--device", "cpu", "--num_workers", "0", "--seed", str(args.seed), "--save_path", str(Path(tmp) / "run"),
                *example.flags(sizes)]
        shown = " ".join(a.replace(tmp, "<tmp>") for a in argv)
        trainer, train_loader = build_trainer(load_example(example.folder)[0].main, argv)
        model = trainer.model
        model.train()
        model.epoch, model.epochs = 0, 1
        loader, _ = trainer._prepare_dataloaders(train_loader)
        training_step(trainer, loader)  # warm-up
        timer = PhaseTimer()
        with timer.instrument(trainer):
            for _ in range(args.steps):
                training_step(trainer, loader, timer)
        phase_rows, total = timer.rows(args.steps)
        op_rows, profiled = top_ops(trainer, loader, args.rows, args.shapes)

    model._compute_grad_dim()
    method = "T backward passes" if getattr(model, "_batched_grads_failed", False) or model.grad_method == "loop" else "one batched backward"
    print(f"\n### {example.name}: `main.py {shown}`")
    print(f"T = {model.task_num} tasks, D = {model.grad_dim:,} shared parameters, "
          f"{sum(p.numel() for p in model.parameters()):,} in all; per-task gradients: {method}; "
          f"{args.weighting} options not at their defaults: {non_default_options(args.weighting, trainer.kwargs['weight_args'])}\n")
    print(f"Phases, mean of {args.steps} step(s) after a warm-up step (wall clock):\n")
    print(markdown_table(["phase", "ms", "share"], phase_rows))
    print(f"\nTop {args.rows} operations by self CPU time, one profiled step "
          f"(profiled self CPU total {profiled * 1e3:.1f} ms; the unprofiled step took {total * 1e3:.1f} ms):\n")
    header = ["op", *(["input shapes"] if args.shapes else []), "self CPU ms", "share", "calls"]
    print(markdown_table(header, op_rows))


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    for name, value in (("--bs", args.bs), ("--backbone_width", args.backbone_width), ("--steps", args.steps),
                        ("--threads", args.threads), ("--rows", args.rows)):
        if value is not None and value < 1:
            raise SystemExit(f"{name} must be >= 1, got {value}")
    if args.img_size is not None and min(args.img_size) < 8:
        raise SystemExit(f"--img_size must be >= 8, got {args.img_size}")
    torch.set_num_threads(args.threads)
    print(machine_line(torch.device("cpu")))
    for name in args.examples:
        start = time.perf_counter()
        profile_example(EXAMPLES[name], args)
        print(f"\n({name}: {time.perf_counter() - start:.0f} s including data generation and model construction)")


if __name__ == "__main__":
    main()
