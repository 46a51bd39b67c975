"""Start-up time: ``import LibMTL_rgb`` and every example's ``--help``, as ratios to ``import torch``.

    python benchmarks/import_time.py               # 7 rounds, median of each case
    python benchmarks/import_time.py --repeats 15

Every case runs in a fresh Python subprocess (nothing cached in the interpreter; the OS file
cache is warm after the untimed warm-up round), and the rounds interleave the cases so that
load from other processes hits them alike. Targets: ``import LibMTL_rgb`` ≤ 1.5 × ``import
torch``; each ``--help`` ≤ 1.5 × ``import torch`` ("about the time of ``import torch``": the
library loads torchvision, torchjd, torch_geometric, matplotlib and tensorboard only where they
are used, so parsing the flags needs none of them).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Callable, Optional, Sequence

import torch

from _timing import Check, checks_table, describe, machine_line, markdown_table, time_interleaved

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = ("toy", "nyu", "cityscapes", "qm9", "celeba")
#: Each case: its name and the arguments of ``python``.
CASES: dict[str, list[str]] = {
    "import torch": ["-c", "import torch"],
    "import LibMTL_rgb": ["-c", "import LibMTL_rgb"],
    **{f"examples/{name}/main.py --help": [os.path.join(REPO, "examples", name, "main.py"), "--help"] for name in EXAMPLES},
    "python -m LibMTL_rgb.benchmark --help": ["-m", "LibMTL_rgb.benchmark", "--help"],
}
REFERENCE = "import torch"
#: Largest allowed ratio to ``import torch`` (the import and every ``--help``).
MAX_RATIO = 1.5


def python_call(args: Sequence[str]) -> Callable[[], None]:
    """A call that runs ``python *args`` in a fresh process importing this checkout; raises on failure."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))

    def call() -> None:
        subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL, cwd=REPO)

    return call


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (the median is reported)")
    parser.add_argument("--max_ratio", type=float, default=MAX_RATIO, help="target: largest ratio to `import torch`")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    device = torch.device("cpu")
    timings = time_interleaved({name: python_call(cmd) for name, cmd in CASES.items()}, device,
                               repeats=args.repeats, warmup=1, desc="start-up")
    print(machine_line(device))
    print(f"medians of {args.repeats} rounds, each case in a fresh `{os.path.basename(sys.executable)}` process\n")
    print(markdown_table(["case", "median ms", "spread", f"ratio to `{REFERENCE}`"],
                         [[f"`{name}`", *describe(timings, name, REFERENCE)] for name in CASES]))
    reference = timings[REFERENCE].median
    checks = [Check("start-up", f"`{name}` / `{REFERENCE}`", timings[name].median / reference, args.max_ratio)
              for name in CASES if name != REFERENCE]
    print()
    print(checks_table(checks))
    return 0 if all(check.passed for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
