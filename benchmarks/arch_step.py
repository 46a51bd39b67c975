"""One training step of every architecture on every example, EW and RGB, as ratios to HPS.

For each example (fixture data in its real on-disk format, the generators of
``tests/test_example_*.py``; sizes as ``profile_examples.py``) every architecture is built
through the example's own ``main(argv)``: with EW, and with RGB, whose per-task gradients
take the examples' CPU default ``--grad_method loop`` (T backward passes, each through only
what its own task's loss reaches: the per-task-gradient floor). ``--batched`` adds RGB with
``--grad_method auto`` (one batched backward, the CUDA default): every task's cotangent then
traverses every task's branch (issue 23), which on many-branch architectures costs up to T
times the floor in time and memory (CelebA's MTAN with 40 tasks at width 16, batch 16 was
killed for memory on a machine with about 12 GB free), so it is opt-in. cityscapes3's generated
"official" PNGs are 64 x 128 (profile_examples.py's default is the release's 1024 x 2048). After one warm-up step per case, ``--steps`` rounds time one
step of every case in turn (interleaved, so load from other processes hits all cases alike).
Printed (medians): each case's step in ms and over HPS's step with the same configuration
(one run, same machine); RGB's per-task-gradient phase (``_get_grads``); RGB's step over EW's
(what the per-task gradients add to a step of that architecture).

    python benchmarks/arch_step.py                         # all examples, all architectures, 1 thread
    python benchmarks/arch_step.py --examples celeba --archs HPS MTAN CGC PLE --steps 3
    python benchmarks/arch_step.py --examples celeba --archs CGC MTAN PLE --weightings EW --bs 4 \
        --backbone_width 64 --example_flags=--branch_size=libmtl   # CelebA's default model, LibMTL's sizes
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' dataset generators
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import machine_line, markdown_table  # noqa: E402
from example_loading import load_example  # noqa: E402
from profile_examples import EXAMPLES, GRADS, PhaseTimer, build_trainer, training_step  # noqa: E402

from LibMTL_rgb.registry import ARCHITECTURES  # noqa: E402

#: (case label, weighting, --grad_method); ``--batched`` adds BATCHED.
CONFIGS = (("EW", "EW", "loop"), ("RGB", "RGB", "loop"))
BATCHED = ("RGB batched", "RGB", "auto")


class Case:
    """One (architecture, configuration) trainer, its loader and its step timings."""

    def __init__(self, trainer, loader) -> None:
        self.trainer, self.loader = trainer, loader
        self.steps: list[float] = []
        self.grads: list[float] = []

    def step(self) -> None:
        timer = PhaseTimer()
        with timer.instrument(self.trainer):
            training_step(self.trainer, self.loader, timer)
        self.steps.append(timer.seconds["step"])
        self.grads.append(timer.seconds.get(GRADS, 0.0))


def build_case(example, sizes: argparse.Namespace, root: Path, run: Path, arch: str, weighting: str,
               grad_method: str, seed: int) -> Case:
    argv = [*sizes.example_flags, "--dataset_path", str(root), "--bs", str(sizes.bs), "--weighting", weighting, "--arch", arch,
            "--grad_method", grad_method, "--device", "cpu", "--num_workers", "0", "--seed", str(seed),
            "--save_path", str(run / f"{arch}_{weighting}_{grad_method}"), *example.flags(sizes)]
    trainer, train_loader = build_trainer(load_example(example.folder)[0].main, argv)
    trainer.model.train()
    trainer.model.epoch, trainer.model.epochs = 0, 1
    loader, _ = trainer._prepare_dataloaders(train_loader)
    return Case(trainer, loader)


def measure_example(name: str, args: argparse.Namespace) -> None:
    example = EXAMPLES[name]
    sizes = argparse.Namespace(**vars(args))
    sizes.img_size = args.img_size or list(example.img_size)
    sizes.bs = args.bs or example.bs
    sizes.backbone_width = args.backbone_width or example.width
    sizes.label_size, sizes.official_size = None, [64, 128]
    configs = [c for c in CONFIGS + ((BATCHED,) if args.batched else ()) if c[1] in args.weightings]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"arch_step_{name}_") as tmp:
        root = example.write(Path(tmp), sizes, sizes.bs * (args.steps + 2))  # no loader restart mid-run
        cases = {}
        for arch in args.archs:
            for label, weighting, method in configs:
                cases[arch, label] = build_case(example, sizes, root, Path(tmp) / "run", arch, weighting, method, args.seed)
                cases[arch, label].step()  # warm-up
        for _ in range(args.steps):
            for case in cases.values():
                case.step()
    tasks = cases[args.archs[0], configs[0][0]].trainer.model.task_num
    median = {key: statistics.median(case.steps[1:]) for key, case in cases.items()}
    grads = {key: statistics.median(case.grads[1:]) for key, case in cases.items()}
    rows = []
    for arch in args.archs:
        row = [arch]
        for label, _, _ in configs:
            row += [f"{median[arch, label] * 1e3:.1f}", f"{median[arch, label] / median['HPS', label]:.2f}"]
        if "RGB" in args.weightings:
            row.append(f"{grads[arch, 'RGB'] * 1e3:.1f}")
        if {"EW", "RGB"} <= set(args.weightings):
            row.append(f"{median[arch, 'RGB'] / median[arch, 'EW']:.2f}")
        if args.batched and "RGB" in args.weightings:
            row.append(f"{grads[arch, BATCHED[0]] / grads[arch, 'RGB']:.2f}")
        rows.append(row)
    header = ["arch"] + [h for label, _, _ in configs for h in (f"{label} ms", f"{label} /HPS")]
    header += ["RGB grads ms (T passes)"] if "RGB" in args.weightings else []
    header += ["RGB / EW"] if {"EW", "RGB"} <= set(args.weightings) else []
    header += ["batched grads / T passes"] if args.batched and "RGB" in args.weightings else []
    print(f"\n### {name}: T = {tasks} tasks, --img_size {' '.join(map(str, sizes.img_size))}, --bs {sizes.bs}, "
          f"width {sizes.backbone_width}{''.join(' ' + flag for flag in sizes.example_flags)}; "
          f"median of {args.steps} interleaved steps after a warm-up "
          f"({time.perf_counter() - start:.0f} s in all)\n")
    print(markdown_table(header, rows))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--examples", nargs="+", choices=list(EXAMPLES), default=list(EXAMPLES))
    parser.add_argument("--archs", nargs="+", choices=ARCHITECTURES.names(), default=ARCHITECTURES.names(),
                        help="architectures (HPS, the reference of the ratios, is always added)")
    parser.add_argument("--img_size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="input size (default per example, as profile_examples.py)")
    parser.add_argument("--bs", type=int, default=None, help="batch size (default per example)")
    parser.add_argument("--backbone_width", type=int, default=None, help="encoder width (default 16)")
    parser.add_argument("--backbone_depth", type=int, default=50, choices=[18, 34, 50, 101, 152],
                        help="dilated ResNet depth of the dense examples")
    parser.add_argument("--weightings", nargs="+", choices=["EW", "RGB"], default=["EW", "RGB"],
                        help="configurations to time (EW alone: each architecture's own size)")
    parser.add_argument("--example_flags", nargs="*", default=[], metavar="FLAG",
                        help="extra flags of the examples' main.py for every case, e.g. --example_flags=--branch_size=libmtl "
                             "(CelebA: LibMTL's sizes of CGC / MTAN / PLE)")
    parser.add_argument("--steps", type=int, default=3, help="timed rounds after the warm-up")
    parser.add_argument("--batched", action="store_true",
                        help="also time RGB with --grad_method auto (one batched backward; memory grows with T x branches)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.threads < 1:
        raise SystemExit("--steps and --threads must be >= 1")
    args.archs = ["HPS"] + [a for a in args.archs if a != "HPS"]
    torch.set_num_threads(args.threads)
    print(machine_line(torch.device("cpu")))
    for name in args.examples:
        measure_example(name, args)


if __name__ == "__main__":
    main()
