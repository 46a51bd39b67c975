"""Time per training epoch of LibMTL_rgb's QM9 example against LibMTL main's own
``examples/qm9`` on the same molecules (EW, HPS, batch 120, the same training split), each in
its own process, alternating for ``--rounds`` rounds so a burst of load from other processes
hits both alike; prints each run's TRAIN time and the ratio of the medians.

    python benchmarks/qm9_libmtl_epoch_time.py --root ROOT --libmtl /tmp/LibMTL [--train_size 1000]

ROOT: a QM9 root, e.g. ``examples/qm9/from_qm9pack.py --out ROOT --sample 10000``. LIBMTL: a
checkout of https://github.com/median-research-group/LibMTL (its example runs with its imports
as they are, from a temporary folder holding a ``random_split.t`` whose training part is this
example's training split; its hard-coded 10,000 test and 10,000 validation molecules repeat
this example's test and validation molecules, and the run is stopped after its TRAIN line).
LibMTL's Trainer hard-codes ``torch.device('cuda:0')``: on a CPU-only machine the checkout
needs that line conditional on ``torch.cuda.is_available()``; the script says so and stops.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_TIME = re.compile(r"TRAIN:[^\n]*?\| Time: ([0-9.]+)s?[ |\n]")
LIBMTL_TEST, LIBMTL_VAL = 10_000, 10_000  # LibMTL's examples/qm9 slices of random_split.t


def _train_seconds(cmd: list[str], cwd: str, env: dict) -> float:
    """Run ``cmd`` until it prints its first TRAIN time; that time. The output is read as it
    comes, not by lines: LibMTL ends its epoch line only after the validation and test runs."""
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        seen = ""
        while True:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
            match = TRAIN_TIME.search(seen)
            if match:
                proc.terminate()
                return float(match.group(1))
        proc.wait()
    raise RuntimeError(f"{' '.join(cmd)} printed no TRAIN time (exit {proc.returncode}):\n{seen[-3000:]}")


def libmtl_split(root: str, seed: int, val_size: int, test_size: int, train_size: int) -> torch.Tensor:
    """LibMTL's ``random_split.t`` for this example's split of ``root``: its training slice is
    this example's training molecules, its test and validation slices repeat this example's."""
    perm = torch.load(os.path.join(root, f"split_seed{seed}.pt"), weights_only=True)["permutation"]
    test, val = perm[:test_size], perm[test_size:test_size + val_size]
    train = perm[test_size + val_size:][:train_size]

    def repeat(part: torch.Tensor, size: int) -> torch.Tensor:
        return part.repeat(size // len(part) + 1)[:size]

    return torch.cat([repeat(test, LIBMTL_TEST), repeat(val, LIBMTL_VAL), train])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="QM9 root (PyG layout)")
    parser.add_argument("--libmtl", required=True, help="a checkout of LibMTL main")
    parser.add_argument("--train_size", type=int, default=1000)
    parser.add_argument("--val_size", type=int, default=500)
    parser.add_argument("--test_size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    trainer_py = os.path.join(args.libmtl, "LibMTL", "trainer.py")
    with open(trainer_py, encoding="utf-8") as handle:
        if "torch.device('cuda:0')" in handle.read() and not torch.cuda.is_available():
            raise SystemExit(f"{trainer_py} hard-codes torch.device('cuda:0') and this machine has no GPU: make it "
                             "torch.device('cuda:0' if torch.cuda.is_available() else 'cpu') in that checkout")
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # each TRAIN line as printed, so the run stops there
    ours = [sys.executable, os.path.join(REPO, "examples", "qm9", "main.py"), "--dataset_path", args.root,
            "--weighting", "EW", "--arch", "HPS", "--bs", "120", "--epochs", "1", "--seed", str(args.seed),
            "--train_size", str(args.train_size), "--val_size", str(args.val_size), "--test_size", str(args.test_size),
            "--device", "cpu" if not torch.cuda.is_available() else "cuda"]
    theirs = [sys.executable, "main.py", "--weighting", "EW", "--arch", "HPS", "--bs", "120", "--epochs", "1",
              "--dataset_path", args.root]
    times: dict[str, list[float]] = {"LibMTL_rgb": [], "LibMTL main": []}
    with tempfile.TemporaryDirectory() as workdir:
        for name in ("main.py", "utils.py"):
            shutil.copy(os.path.join(args.libmtl, "examples", "qm9", name), workdir)
        libmtl_env = dict(env, PYTHONPATH=os.pathsep.join([args.libmtl, env.get("PYTHONPATH", "")]))
        for round_ in range(args.rounds):
            ours_run = ours + ["--save_path", os.path.join(workdir, f"ours{round_}")]
            times["LibMTL_rgb"].append(_train_seconds(ours_run, REPO, env))
            print(f"round {round_}: LibMTL_rgb {times['LibMTL_rgb'][-1]:.1f} s", flush=True)
            if round_ == 0:  # the example's split exists now
                torch.save(libmtl_split(args.root, args.seed, args.val_size, args.test_size, args.train_size),
                           os.path.join(workdir, "random_split.t"))
            times["LibMTL main"].append(_train_seconds(theirs, workdir, libmtl_env))
            print(f"round {round_}: LibMTL main {times['LibMTL main'][-1]:.1f} s", flush=True)
    ours_s, theirs_s = (statistics.median(times[k]) for k in ("LibMTL_rgb", "LibMTL main"))
    print(f"train epoch, {args.train_size} molecules, EW, batch 120, median of {args.rounds}: LibMTL_rgb {ours_s:.1f} s, "
          f"LibMTL main {theirs_s:.1f} s: LibMTL main / LibMTL_rgb = {theirs_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
